"""Old names kept working after a rename, with a ``DeprecationWarning`` naming the new one.

A module lists its renamed attributes and forwards its ``__getattr__`` here (PEP 562), so the old
name still imports but says what to write instead. The warning points at the caller's line.
"""

from __future__ import annotations

import warnings
from typing import Any


def renamed(module: str, name: str, renames: dict[str, Any]) -> Any:
    """``renames[name]`` with a warning, for a module's ``__getattr__``; AttributeError otherwise."""
    if name not in renames:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = renames[name]
    warnings.warn(
        f"{module}.{name} is now {module}.{new.__name__} (the pipeline stage is "
        f"winnow.pipeline.{name}); the old name will be removed",
        DeprecationWarning,
        stacklevel=3,
    )
    return new
