"""The calibration sample of static int8: the user's own pairs (cross-encoder) or texts (bi-encoder).

Given as ``calibration=`` to ``load_reranker`` (a list of ``(query, document)`` pairs or of texts)
or as the path of a JSONL file (also in model specs: ``cross-encoder:MODEL?backend=onnx&dtype=int8&
calibration=pairs.jsonl``), one object a line: ``{"query": ..., "document": ...}`` for pairs,
``{"text": ...}`` (or a bare JSON string) for texts. The sample is read once, when the reranker is
made, and kept as a :class:`CalibrationSample` whose sha256 keys the int8 export and every cache of
its scores (its repr shows the hash, not the texts).

Every fifth item (positions 4, 9, 14...) is held out for the quality guard; the others calibrate.
At most :data:`MAX_CALIBRATION` and :data:`MAX_HELD_OUT` of each are used, so a big sample costs
no more than a small one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from winnow.data._lines import numbered_lines
from winnow.errors import ConfigError, DatasetError

MIN_ITEMS = 10
MAX_CALIBRATION = 128
MAX_HELD_OUT = 256
HOLD_OUT_EVERY = 5


@dataclass(frozen=True, eq=False)
class CalibrationSample:
    """Pairs or texts to calibrate int8 with; equal and hashed by content."""

    items: tuple = field(repr=False)
    pairs: bool
    digest: str
    source: str = "list"

    def __repr__(self) -> str:
        what = "pairs" if self.pairs else "texts"
        return f"CalibrationSample({len(self.items)} {what}, sha256={self.digest[:16]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CalibrationSample) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def split(self) -> tuple[list, list]:
        """(calibration items, held-out items): every fifth item is held out."""
        held = [x for i, x in enumerate(self.items) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1]
        calib = [x for i, x in enumerate(self.items) if i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
        return calib[:MAX_CALIBRATION], held[:MAX_HELD_OUT]


def _digest(items: tuple, pairs: bool) -> str:
    h = hashlib.sha256(b"pairs" if pairs else b"texts")
    for item in items:
        for text in item if pairs else (item,):
            data = text.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _read_jsonl(path: Path, pairs: bool) -> list:
    out = []
    # numbered_lines: the line-numbered reader of every winnow file (bad UTF-8 named by line)
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"not JSON: {exc}", path, number) from None
        if pairs:
            if not (
                isinstance(row, dict)
                and isinstance(row.get("query"), str)
                and isinstance(row.get("document"), str)
            ):
                raise DatasetError(
                    'a calibration pair is {"query": "...", "document": "..."}', path, number
                )
            out.append((row["query"], row["document"]))
        else:
            text = row.get("text") if isinstance(row, dict) else row
            if not isinstance(text, str):
                raise DatasetError(
                    'a calibration text is {"text": "..."} or a string', path, number
                )
            out.append(text)
    return out


def calibration_sample(value: Any, pairs: bool) -> CalibrationSample | None:
    """``value`` (None, a sample, a list, or a JSONL path) as a checked :class:`CalibrationSample`."""
    if value is None or isinstance(value, CalibrationSample):
        return value
    what = "(query, document) pairs" if pairs else "texts"
    source = "list"
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"calibration file {str(path)!r} does not exist")
        items, source = _read_jsonl(path, pairs), str(path)
    elif isinstance(value, (list, tuple)):
        items = []
        for i, item in enumerate(value):
            if pairs:
                ok = (
                    isinstance(item, (list, tuple))
                    and len(item) == 2
                    and all(isinstance(t, str) for t in item)
                )
                if not ok:
                    raise ConfigError(
                        f"calibration[{i}] must be a (query, document) pair of strings"
                    )
                items.append((item[0], item[1]))
            else:
                if not isinstance(item, str):
                    raise ConfigError(f"calibration[{i}] must be a string (a text to embed)")
                items.append(item)
    else:
        raise ConfigError(
            f"calibration must be a list of {what} or the path of a JSONL file, "
            f"got {type(value).__name__}"
        )
    if len(items) < MIN_ITEMS:
        raise ConfigError(
            f"calibration ({source}) has {len(items)} {what}; int8 needs at least {MIN_ITEMS} "
            f"(every {HOLD_OUT_EVERY}th is held out for the quality guard)"
        )
    items_t = tuple(items)
    return CalibrationSample(items_t, pairs, _digest(items_t, pairs), source)


# -- a sample made from the collection (``winnow eval``) ------------------------------------------
#: Items of an automatic sample: 512 to calibrate from (the first MAX_CALIBRATION used) and 128
#: held out for the guard; a seeded draw, so the same collection always gives the same sample.
AUTO_ITEMS = 640
AUTO_SEED = 0


def needs_calibration(backend: Any, dtype: Any, calibration: Any) -> bool:
    """Whether a model asked for static int8 (onnx / openvino) was given no sample."""
    return dtype == "int8" and backend in ("onnx", "openvino") and calibration is None


def _draw(items: list, n: int, seed: int) -> list:
    import numpy as np

    if len(items) <= n:
        order = np.random.default_rng(seed).permutation(len(items))
    else:
        order = np.random.default_rng(seed).choice(len(items), size=n, replace=False)
    return [items[i] for i in order]


def sample_from_texts(
    documents: list[str], queries: list[str], source: str, *, n: int = AUTO_ITEMS
) -> CalibrationSample:
    """A seeded sample of a collection's own texts for a bi-encoder: three quarters documents,
    a quarter queries (both are embedded), mixed so that the guard's held-out fifth has both."""
    docs = sorted({t for t in documents if t.strip()})
    qs = sorted({t for t in queries if t.strip()})
    n_queries = min(len(qs), n // 4)
    picked = _draw(docs, n - n_queries, AUTO_SEED) + _draw(qs, n_queries, AUTO_SEED + 1)
    return calibration_sample_of(_draw(picked, len(picked), AUTO_SEED + 2), False, source)


def sample_from_collection(corpus: Any, queries: list[str], source: str) -> CalibrationSample:
    """:func:`sample_from_texts` of a corpus (``{doc_id: Document}``) without reading all of it:
    a seeded draw of twice the documents needed (spares for blank or repeated texts), by sorted
    id, then their ``full_text``."""
    ids = sorted(corpus)
    picked = _draw(ids, 2 * AUTO_ITEMS, AUTO_SEED + 3)
    return sample_from_texts([corpus[i].full_text for i in picked], queries, source)


def sample_from_pairs(
    pairs: list[tuple[str, str]], source: str, *, n: int = AUTO_ITEMS
) -> CalibrationSample:
    """A seeded sample of the (query, document) pairs a stage is about to score."""
    unique = sorted({p for p in pairs if p[0].strip() and p[1].strip()})
    return calibration_sample_of(_draw(unique, n, AUTO_SEED), True, source)


def calibration_sample_of(items: list, pairs: bool, source: str) -> CalibrationSample:
    """``items`` (checked as :func:`calibration_sample` checks a list) labelled with ``source``."""
    if len(items) < MIN_ITEMS:
        what = "distinct (query, document) pairs" if pairs else "distinct texts"
        raise ConfigError(
            f"static int8 calibrates on {source}, which has {len(items)} {what}; it needs at "
            f"least {MIN_ITEMS}: give calibration=PATH, or use dtype='float32'"
        )
    checked = calibration_sample(items, pairs)  # the list's checks and digest, once
    return dataclasses.replace(checked, source=source)
