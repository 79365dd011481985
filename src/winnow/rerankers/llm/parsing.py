"""Reading a listwise model's answer (``[2] > [1] > [3]``) as a permutation, forgivingly.

Models drift from the format: they repeat identifiers, skip some, add prose, invent ids past the
window. The rules: identifiers are read in order (bracketed ones when there are any, else bare
ones); out-of-range and repeated ones are dropped; the ones never mentioned keep their previous
relative order after the mentioned ones. An answer with no usable identifier leaves the window as
it was and is reported as a failure.
"""

from __future__ import annotations

import re

from winnow.rerankers.llm.prompts import LETTERS

_BRACKETED_NUMBER = re.compile(r"\[\s*(\d+)\s*\]")
_BARE_NUMBER = re.compile(r"(?<![\w.])(\d+)(?![\w.])")
_BRACKETED_LETTER = re.compile(r"\[\s*([A-Za-z])\s*\]")
_BARE_LETTER = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


def parse_permutation(text: str, count: int, style: str = "numbers") -> tuple[list[int], bool]:
    """Zero-based permutation of ``range(count)`` read from ``text``, and whether any id was found.

    >>> parse_permutation("[2] > [1] > [2] > [9] junk", 3)
    ([1, 0, 2], True)
    >>> parse_permutation("no idea", 3)
    ([0, 1, 2], False)
    """
    if style == "letters":
        found = _BRACKETED_LETTER.findall(text) or _BARE_LETTER.findall(text)
        ids = [LETTERS.index(x.upper()) for x in found]
    else:
        found = _BRACKETED_NUMBER.findall(text) or _BARE_NUMBER.findall(text)
        ids = [int(x) - 1 for x in found]
    seen: dict[int, None] = {}
    for i in ids:
        if 0 <= i < count and i not in seen:
            seen[i] = None
    order = list(seen)
    if not order:
        return list(range(count)), False
    order.extend(i for i in range(count) if i not in seen)
    return order, True
