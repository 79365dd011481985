"""Reading text files line by line with 1-based line numbers, so every error can name its line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from winnow.errors import DatasetError


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` for each line of a UTF-8 file, trailing newline removed.

    Raises :class:`DatasetError` when the file is missing or a line is not valid UTF-8.
    """
    p = Path(path)
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed below; bytes so a bad line can be named
    except FileNotFoundError:
        raise DatasetError("file not found", p) from None
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror or exc}", p) from exc
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"not valid UTF-8 ({exc.reason})", p, number) from None
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]  # byte-order mark
            yield number, line.rstrip("\r\n")
