"""A spy that counts how many calls of a method run at once (shared by the concurrency tests)."""

from __future__ import annotations

import threading


class Overlap:
    """Wraps a bound method and records how many of its calls run at once (the real method runs).

    The first call waits (at most 2 s) for a second one to start, so that a caller which does call
    the model from two threads at once is caught every time, not only when the threads happen to
    interleave."""

    def __init__(self, real):
        self.real, self.calls, self.active, self.most = real, 0, 0, 0
        self.lock, self.second = threading.Lock(), threading.Event()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.most = max(self.most, self.active)
            first = self.calls == 1
            if self.active > 1:
                self.second.set()
        try:
            if first:
                self.second.wait(timeout=2)
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1
