"""Every error the server answers goes through :func:`handle_error`, the one exception handler.

Bad input is 422 with a message naming the field (and the limit, for the configured limits; a body
that is not JSON names ``body`` and the line and column), a body that is not UTF-8 400 naming
``body`` and the byte, a body over the size limit 413, an unknown model 404, a full queue 429 with ``Retry-After``, a model that is loading,
failed or shutting down 503 (``Retry-After`` while loading or shutting down). Anything else is a 500
whose body says only "internal server error": exception text and stack traces go to the log.
The body has the shape of TEI's errors, ``{"error": ..., "error_type": ...}``, plus ``field`` and
``limit`` where they apply.

The handler is registered for each error class the server raises on purpose (``ApiError``,
``WinnowError`` and its subclasses such as ``QueueFull`` and ``NotAccepting``, validation and HTTP
errors), not only as the catch-all: Starlette re-raises what reaches its catch-all after answering,
so uvicorn would log "Exception in ASGI application" with a traceback and close the keep-alive
connection. Only a true bug (an exception of no known class) takes that path.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from winnow.errors import ConfigError, InputError, WinnowError
from winnow.server.batcher import FAILED, LOADING, STOPPED, ModelCallFailed, NotAccepting, QueueFull
from winnow.server.schemas import ErrorResponse

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer: status, machine-readable type, message, and optionally field and limit."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        field: str | None = None,
        limit: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.field = field
        self.limit = limit
        self.headers = headers


def limit_exceeded(field: str, limit: int, actual: int, unit: str) -> ApiError:
    """422: the limits are published in the OpenAPI schema, so passing one is invalid input.

    (413 is kept for what the schema cannot say: the body size, and TEI's over-long inputs.)
    """
    return ApiError(
        422,
        "limit_exceeded",
        f"{field} has {actual} {unit}; this server accepts at most {limit}",
        field=field,
        limit=limit,
    )


def error_response(error: ApiError) -> JSONResponse:
    body: dict[str, Any] = {"error": error.message, "error_type": error.error_type}
    if error.field is not None:
        body["field"] = error.field
    if error.limit is not None:
        body["limit"] = error.limit
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _json_error(exc: RequestValidationError, err: dict) -> ApiError:
    """FastAPI reports a JSON syntax error at a character offset (``loc`` ``("body", 32)``)."""
    doc = exc.body if isinstance(exc.body, str) else ""
    pos = err["loc"][1] if len(err.get("loc", ())) > 1 and isinstance(err["loc"][1], int) else 0
    line = doc.count("\n", 0, pos) + 1
    column = pos - (doc.rfind("\n", 0, pos) + 1) + 1
    reason = str(err.get("ctx", {}).get("error", "invalid JSON"))
    where = f"line {line}, column {column} (character {pos})"
    if pos >= len(doc.rstrip()):
        message = f"the JSON body is truncated: it ends at {where} ({reason})"
    else:
        message = f"the body is not valid JSON at {where}: {reason}"
    return ApiError(422, "validation", message, field="body")


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        return _json_error(exc, errors[0])
    problems = []
    first_field = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        first_field = first_field or where
        msg = str(err.get("msg", "invalid value"))
        problems.append(f"{where}: {msg}")
    message = "; ".join(problems[:5]) + (
        f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    )
    return ApiError(422, "validation", message or "invalid request", field=first_field)


def as_api_error(exc: BaseException) -> ApiError:
    """Map any exception to the error answer it deserves."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, QueueFull):
        return ApiError(429, "overloaded", str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, NotAccepting):
        retry = {"Retry-After": "2"} if exc.state in (LOADING, STOPPED) else None
        kind = {FAILED: "model_failed", STOPPED: "shutting_down"}.get(exc.state, "unavailable")
        return ApiError(503, kind, str(exc), headers=retry)
    if isinstance(exc, StarletteHTTPException):
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
            return ApiError(
                400,
                "validation",
                f"the body is not valid UTF-8 (at byte {cause.start}): {cause.reason}",
                field="body",
            )
        if exc.status_code == 413:
            return ApiError(
                413,
                "limit_exceeded",
                str(exc.detail),
                field="body",
                limit=getattr(exc, "limit", None),
            )
        return ApiError(
            exc.status_code, "http", str(exc.detail), headers=getattr(exc, "headers", None)
        )
    if isinstance(exc, (InputError, ConfigError)):
        return ApiError(422, "validation", str(exc))
    return ApiError(500, "internal", "internal server error")


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    error = as_api_error(exc)
    # (a failed model call was logged, with its traceback, by the batcher)
    if error.error_type == "internal" and not isinstance(exc, ModelCallFailed):
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(type=error.error_type).inc()
    return error_response(error)


def install(app: FastAPI) -> None:
    """Route every exception through :func:`handle_error` (named classes first, see above)."""
    for exc_type in (
        ApiError,
        WinnowError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_type, handle_error)


#: OpenAPI description of the error answers every endpoint may give.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "model": ErrorResponse}
    for status, text in {
        400: "malformed request (a body that is not UTF-8)",
        401: "missing or wrong API key",
        404: "unknown model",
        413: "a limit was exceeded",
        422: "invalid field",
        429: "queue full; retry after Retry-After seconds",
        503: "model loading, failed, or shutting down",
    }.items()
}
