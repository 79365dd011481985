"""The one rule for whether a progress bar shows, when the caller did not say."""

from __future__ import annotations

import sys


def progress_enabled(flag: bool | None) -> bool:
    """``flag`` when given, else whether stderr is a terminal (no bars in logs and pipes)."""
    return sys.stderr.isatty() if flag is None else bool(flag)
