"""The server's shutdown clock and the uvicorn server that starts it.

On SIGTERM uvicorn stops accepting, waits up to its graceful timeout for in-flight requests, then
cancels them (a plain-text 500 from uvicorn) and runs the app's lifespan shutdown, where the batchers
drain. Two waits of the full timeout, one after the other, and an answer that is not the API's.
:class:`GracefulServer` tells the app when shutdown begins; from then one deadline
(``graceful_timeout`` seconds later) bounds both: a request still waiting for the model at the
deadline is answered a JSON 503 ``shutting_down`` and its queued pairs are dropped, and the batchers
get only what is left of the same deadline. uvicorn's own timeout is set a margin later
(:data:`SHUTDOWN_MARGIN`), so it finds nothing left to cancel.
"""

from __future__ import annotations

import asyncio
import time

import uvicorn

#: Seconds uvicorn's graceful wait runs past the app's deadline (the 503s go out in between).
SHUTDOWN_MARGIN = 1.0


class ShutdownClock:
    """When shutdown began and when its grace runs out; ``expired`` is set at the deadline."""

    def __init__(self, graceful_timeout: float):
        self.graceful_timeout = graceful_timeout
        self.deadline: float | None = None
        self.expired = asyncio.Event()

    def begin(self) -> None:
        """Start the clock (on the event loop; only the first call counts)."""
        if self.deadline is not None:
            return
        self.deadline = time.monotonic() + self.graceful_timeout
        asyncio.get_running_loop().call_later(self.graceful_timeout, self.expired.set)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None before shutdown began)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


def uvicorn_config(app, graceful_timeout: float, **kwargs) -> uvicorn.Config:
    """uvicorn's settings for ``app``, its graceful wait a margin past the app's deadline."""
    return uvicorn.Config(
        app, timeout_graceful_shutdown=graceful_timeout + SHUTDOWN_MARGIN, **kwargs
    )


class GracefulServer(uvicorn.Server):
    """A uvicorn server that starts the app's :class:`ShutdownClock` when shutdown begins."""

    async def shutdown(self, sockets=None) -> None:
        clock = getattr(getattr(self.config.app, "state", None), "shutdown_clock", None)
        if clock is not None:
            clock.begin()
        await super().shutdown(sockets)
