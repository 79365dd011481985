"""The reranking server (``winnow serve``): ``pip install 'winnow[server]'``.

``create_app(ServerConfig(models=(ModelSpec.parse("MODEL"),)))`` builds the FastAPI app; run it with
uvicorn. Importing this package is light (the CLI imports it to register ``serve``); using
``create_app`` without FastAPI, uvicorn, pydantic and prometheus-client installed raises
:class:`winnow.errors.MissingExtraError`.
"""

from __future__ import annotations

from typing import Any

from winnow.errors import require

SERVER_MODULES = ("fastapi", "uvicorn", "pydantic", "prometheus_client")

__all__ = ["ModelSpec", "ServerConfig", "create_app", "require_server_extra"]


def require_server_extra() -> None:
    """Raise MissingExtraError naming ``winnow[server]`` if a server dependency is missing."""
    for module in SERVER_MODULES:
        require(module, "server")


def __getattr__(name: str) -> Any:
    if name == "create_app":
        require_server_extra()
        from winnow.server.app import create_app

        return create_app
    if name in ("ModelSpec", "ServerConfig"):
        from winnow.server import config

        return getattr(config, name)
    raise AttributeError(f"module 'winnow.server' has no attribute {name!r}")
