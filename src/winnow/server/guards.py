"""Request guards, as pure ASGI middleware: the optional API key and the request body size limit.

The API key (``Authorization: Bearer KEY``) is required on every path except ``/health``; being
middleware rather than a FastAPI dependency, it also guards the OpenAPI documents and ``/metrics``.
The key is compared in constant time (``hmac.compare_digest``). The body limit answers 413 from the
``Content-Length`` header when there is one, and otherwise stops reading once the limit is passed.
(Starlette's own body limit answers in plain text; ours keeps the JSON error shape.)
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from winnow.server.errors import ApiError, error_response

OPEN_PATHS = frozenset({"/health"})


def bearer_matches(authorization: str | None, api_key: str) -> bool:
    """Whether an ``Authorization`` header carries ``api_key`` as a bearer token."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), api_key.encode("utf-8"))


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if bearer_matches(Headers(scope=scope).get("authorization"), self.api_key):
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        metrics = getattr(getattr(app, "state", None), "metrics", None)
        if metrics is not None:
            metrics.errors.labels(type="unauthorized").inc()
        error = ApiError(
            401,
            "unauthorized",
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await error_response(error)(scope, receive, send)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than this server's limit of {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await error_response(self.too_large())(scope, receive, send)
            return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(
                        self.max_body_bytes
                    )  # FastAPI re-raises HTTPExceptions from body reading
            return message

        await self.app(scope, limited_receive, send)

    def too_large(self) -> ApiError:
        return ApiError(
            413,
            "limit_exceeded",
            f"request body is larger than this server's limit of {self.max_body_bytes} bytes",
            field="body",
            limit=self.max_body_bytes,
        )
