"""Helpers to test against a real server: uvicorn on 127.0.0.1 in a thread, and a pausable model.

``running_server(config)`` starts the app on a free port (the socket is bound before uvicorn starts,
so there is no race for the port) and stops it gracefully on exit. ``GatedCrossEncoder`` is a real
cross-encoder whose loading and scoring wait on events, so tests can hold a request inside the model
(to fill the queue, or to shut down with a request in flight) without sleeping and hoping.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from winnow.rerankers.base import PairScores
from winnow.rerankers.cross_encoder import CrossEncoderReranker
from winnow.rerankers.registry import register_kind
from winnow.server.config import ServerConfig

GATED_KIND = "gated-cross-encoder"


class Gates:
    """Events shared by every GatedCrossEncoder. Open (set) by default."""

    load = threading.Event()
    score = threading.Event()
    #: set each time a scoring call reaches the gate
    entered = threading.Event()
    #: when set, scoring raises RuntimeError with this message (a model failing mid-request)
    fail_with: str | None = None
    #: the next N loads raise RuntimeError (a flaky start-up); counts down
    load_failures: int = 0
    #: when set, every load raises it (e.g. ``RuntimeError("CUDA out of memory")``)
    load_error: BaseException | None = None
    #: loads that were tried (tests reset it to 0)
    load_attempts: int = 0

    @classmethod
    def open_all(cls) -> None:
        cls.load.set()
        cls.score.set()
        cls.fail_with = None
        cls.load_failures = 0
        cls.load_error = None


Gates.open_all()


class GatedCrossEncoder(CrossEncoderReranker):
    """A cross-encoder whose ``_load`` waits on ``Gates.load`` and ``_score`` on ``Gates.score``
    (and raises when ``Gates.fail_with`` is set; its loads fail on ``Gates.load_failures`` /
    ``Gates.load_error``)."""

    kind = GATED_KIND

    def _load(self) -> None:
        if not Gates.load.wait(60):
            raise TimeoutError("Gates.load was not opened within 60 s")
        Gates.load_attempts += 1
        if Gates.load_error is not None:
            raise Gates.load_error
        if Gates.load_failures > 0:
            Gates.load_failures -= 1
            raise RuntimeError("flaky load (Gates.load_failures)")
        super()._load()

    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        Gates.entered.set()
        if not Gates.score.wait(60):
            raise TimeoutError("Gates.score was not opened within 60 s")
        if Gates.fail_with is not None:
            raise RuntimeError(Gates.fail_with)
        return super()._score(pairs)


register_kind(GATED_KIND, "winnow.server.testing:GatedCrossEncoder")


@dataclass
class RunningServer:
    url: str
    server: object  # uvicorn.Server
    thread: threading.Thread
    app: object

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit as SIGTERM would, and wait for the thread."""
        import signal

        self.server.handle_exit(signal.SIGTERM, None)
        self.thread.join(timeout)


@contextlib.contextmanager
def running_server(
    config: ServerConfig, *, wait_ready: bool = True, timeout: float = 60.0
) -> Iterator[RunningServer]:
    """Serve ``create_app(config)`` with uvicorn on 127.0.0.1 in a thread; stop it on exit."""
    import httpx

    from winnow.server.app import create_app
    from winnow.server.lifecycle import GracefulServer, uvicorn_config

    app = create_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv_config = uvicorn_config(app, config.graceful_timeout, log_level="warning", lifespan="on")
    server = GracefulServer(uv_config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    running = RunningServer(f"http://127.0.0.1:{port}", server, thread, app)
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        if wait_ready:
            while httpx.get(running.url + "/ready", headers=_auth(config)).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the test server's models did not become ready")
                time.sleep(0.05)
        yield running
    finally:
        Gates.open_all()
        running.stop()
        sock.close()


def _auth(config: ServerConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


def wait_for(predicate, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (every 10 ms) until it is true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


class Background:
    """Send one POST on a thread; ``result()`` waits for its response (or re-raises its error)."""

    def __init__(self, url: str, payload: dict, path: str = "/v1/rerank"):
        import httpx

        self.response = None
        self.error: BaseException | None = None

        def go():
            try:
                self.response = httpx.post(url + path, json=payload, timeout=60)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=go)
        self.thread.start()

    def result(self):
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        if self.response is None:
            raise TimeoutError("the request got no response in 60 s")
        return self.response
