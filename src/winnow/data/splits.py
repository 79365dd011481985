"""Deterministic train / dev / test splits of a collection's judged queries, by query id.

A collection usually ships one judged split (``qrels/test.tsv``). A *split spec* names one part of
a seeded split of the queries judged there, without copying or changing any file::

    PART@TRAIN[/DEV][:seedN]            e.g. train@0.6, test@0.6:seed0, dev@0.6/0.2:seed1
    SOURCE/PART@TRAIN[/DEV][:seedN]     split the queries judged in qrels/SOURCE.tsv instead of
                                        qrels/test.tsv, e.g. dev/train@0.5

``PART`` is ``train``, ``dev`` (only with a DEV fraction) or ``test`` (the rest). A plain name
without ``@`` (``test``, ``dev``) keeps meaning the collection's own ``qrels/<name>.tsv``.

How queries are assigned (stable across machines, Python versions and file orders):

1. the judged queries are the query ids with at least one judgment (any grade, 0 included) in the
   source qrels; every one of them lands in exactly one part, unjudged queries in none;
2. they are ordered by ``sha256(f"{seed}:{query_id}")`` (hex digest, ties by id);
3. with ``n`` judged queries, the first ``round(n * TRAIN)`` are train, the next
   ``round(n * (TRAIN + DEV)) - round(n * TRAIN)`` dev, the rest test, where ``round`` rounds
   half up (``floor(x + 1/2)``) and the products are exact decimal arithmetic (``0.6`` is 3/5,
   not the float nearest it).

So the fractions are as exact as ``n`` allows, overlap is impossible by construction, and with
one seed a larger TRAIN fraction only moves queries from test into train (the parts are nested).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from winnow.errors import ConfigError, DatasetError
from winnow.types import Dataset

PARTS = ("train", "dev", "test")
DEFAULT_SOURCE = "test"

_SPEC = re.compile(
    r"^(?:(?P<source>[^/@:\s]+)/)?(?P<part>[^/@:\s]+)@(?P<train>[^/:\s]+)(?:/(?P<dev>[^/:\s]+))?"
    r"(?::(?P<seed>[^:\s]*))?$"
)
_SEED = re.compile(r"^seed(\d+)$")
_FORMAT = "PART@TRAIN[/DEV][:seedN] or SOURCE/PART@TRAIN[/DEV][:seedN], e.g. test@0.6:seed0"


def is_split_spec(split: str) -> bool:
    """True when ``split`` is a split spec (has an ``@``), False for a plain qrels name."""
    return isinstance(split, str) and "@" in split


def _fraction(value: object, what: str) -> Decimal:
    """A fraction as an exact Decimal: from its text, or from a float's shortest repr."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number between 0 and 1, got {value!r}")
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"{what} must be a number between 0 and 1, got {value!r}") from None
    if not number.is_finite() or not 0 < number < 1:
        raise ConfigError(f"{what} must be strictly between 0 and 1, got {value!r}")
    return number


def _fractions(train: object, dev: object | None) -> tuple[Decimal, Decimal | None]:
    t = _fraction(train, "the train fraction")
    d = None if dev is None else _fraction(dev, "the dev fraction")
    if d is not None and t + d >= 1:
        raise ConfigError(
            f"train + dev fractions must leave some test queries (be < 1), got {t} + {d}"
        )
    return t, d


def _text(number: Decimal) -> str:
    """``Decimal("0.60")`` -> ``"0.6"`` (no exponent)."""
    return format(number.normalize(), "f")


def _half_up(x: Decimal) -> int:
    return int((x + Decimal("0.5")).to_integral_value(rounding=ROUND_FLOOR))


def _order_key(seed: int, query_id: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"{seed}:{query_id}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest, query_id


def part_sizes(n: int, train: object, dev: object | None = None) -> dict[str, int]:
    """How many of ``n`` judged queries each part gets (see the module docstring)."""
    t, d = _fractions(train, dev)
    n_train = _half_up(n * t)
    n_dev = 0 if d is None else _half_up(n * (t + d)) - n_train
    sizes = {"train": n_train, "dev": n_dev, "test": n - n_train - n_dev}
    if d is None:
        del sizes["dev"]
    return sizes


def split_query_ids(
    query_ids: Iterable[str],
    fractions: Sequence[object] | Mapping[str, object],
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split query ids into ``{"train": [...], ("dev": [...],) "test": [...]}``.

    Args:
        query_ids: the ids to split (no repeats). Each part lists its ids in this input order.
        fractions: ``(train,)`` or ``(train, dev)``, or a mapping with keys ``train`` and
            optionally ``dev``; each strictly between 0 and 1, together below 1 (test is the rest).
            Floats are taken as the decimal they print as (``0.6`` is exactly 3/5).
        seed: a non-negative integer; the same ids, fractions and seed always give the same parts.

    Raises:
        ConfigError: a fraction out of range, a repeated id, or a negative seed.
    """
    if isinstance(fractions, Mapping):
        unknown = set(fractions) - {"train", "dev"}
        if unknown or "train" not in fractions:
            raise ConfigError(
                f"fractions need a 'train' key and optionally 'dev', got {sorted(fractions)}"
            )
        train, dev = fractions["train"], fractions.get("dev")
    else:
        values = list(fractions)
        if len(values) not in (1, 2):
            raise ConfigError(f"fractions are (train,) or (train, dev), got {values!r}")
        train, dev = values[0], values[1] if len(values) == 2 else None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"the split seed must be an integer >= 0, got {seed!r}")
    ids = [str(q) for q in query_ids]
    seen: set[str] = set()
    for qid in ids:
        if qid in seen:
            raise ConfigError(f"query id {qid!r} is listed twice")
        seen.add(qid)
    sizes = part_sizes(len(ids), train, dev)
    ranked = sorted(ids, key=lambda q: _order_key(seed, q))
    assigned: dict[str, str] = {}
    start = 0
    for part, size in sizes.items():
        for qid in ranked[start : start + size]:
            assigned[qid] = part
        start += size
    parts: dict[str, list[str]] = {part: [] for part in sizes}
    for qid in ids:
        parts[assigned[qid]].append(qid)
    return parts


@dataclass(frozen=True)
class QuerySplit:
    """One part of a seeded split of the queries judged in ``source`` (see the module docstring)."""

    part: str
    train: Decimal
    dev: Decimal | None = None
    seed: int = 0
    source: str = DEFAULT_SOURCE

    def __post_init__(self) -> None:
        t, d = _fractions(self.train, self.dev)
        object.__setattr__(self, "train", t)
        object.__setattr__(self, "dev", d)
        if self.part not in PARTS:
            raise ConfigError(f"split part {self.part!r} is not one of {', '.join(PARTS)}")
        if self.part == "dev" and d is None:
            raise ConfigError(
                f"split part 'dev' needs a dev fraction, e.g. dev@{_text(t)}/0.2 "
                f"(TRAIN/DEV after the @)"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"the split seed must be an integer >= 0, got {self.seed!r}")
        if not self.source or any(c in self.source for c in "/@: \t"):
            raise ConfigError(f"split source {self.source!r} is not a qrels split name")

    @classmethod
    def parse(cls, spec: str) -> QuerySplit:
        """``"test@0.6:seed0"`` -> ``QuerySplit("test", 0.6, seed=0)``.

        Raises:
            ConfigError: not a split spec, or a part, fraction or seed is invalid (named).
        """
        if not isinstance(spec, str):
            raise ConfigError(f"a split spec must be a string, got {type(spec).__name__}")
        m = _SPEC.match(spec.strip())
        if m is None:
            raise ConfigError(f"split {spec!r} is not a split spec; the form is {_FORMAT}")
        seed = 0
        if m["seed"] is not None:
            sm = _SEED.match(m["seed"])
            if sm is None:
                raise ConfigError(
                    f"split {spec!r}: the seed must be written seedN (e.g. :seed0), "
                    f"got {m['seed']!r}"
                )
            seed = int(sm[1])
        try:
            return cls(
                part=m["part"],
                train=_fraction(m["train"], "the train fraction"),
                dev=None if m["dev"] is None else _fraction(m["dev"], "the dev fraction"),
                seed=seed,
                source=m["source"] or DEFAULT_SOURCE,
            )
        except ConfigError as exc:
            raise ConfigError(f"split {spec!r}: {exc}") from None

    @property
    def spec(self) -> str:
        """The canonical spec string (``parse(s.spec) == s``)."""
        fractions = _text(self.train) + ("" if self.dev is None else f"/{_text(self.dev)}")
        source = "" if self.source == DEFAULT_SOURCE else f"{self.source}/"
        return f"{source}{self.part}@{fractions}:seed{self.seed}"

    def with_part(self, part: str) -> QuerySplit:
        """The same split, another part (``train@0.6`` -> ``test@0.6``)."""
        return QuerySplit(part, self.train, self.dev, self.seed, self.source)

    def parts(self) -> tuple[str, ...]:
        """The parts this split has: train and test, plus dev when it has a dev fraction."""
        return ("train", "test") if self.dev is None else PARTS

    def assign(self, query_ids: Iterable[str]) -> dict[str, list[str]]:
        """Every part of the split of ``query_ids`` (see :func:`split_query_ids`)."""
        fractions = (self.train,) if self.dev is None else (self.train, self.dev)
        return split_query_ids(query_ids, fractions, self.seed)

    def query_ids(self, dataset: Dataset) -> list[str]:
        """This part's query ids among ``dataset``'s judged queries, in qrels order."""
        judged = [qid for qid, docs in dataset.qrels.items() if docs]
        return self.assign(judged)[self.part]

    def select(self, dataset: Dataset) -> Dataset:
        """``dataset`` restricted to this part: the same corpus object, fewer queries and qrels.

        ``dataset`` must be the collection loaded with its ``source`` qrels (``load_dataset``
        does that when given a spec); its judged queries are the ones split.
        """
        ids = self.query_ids(dataset)
        missing = next((qid for qid in ids if qid not in dataset.queries), None)
        if missing is not None:
            raise DatasetError(
                f"query {missing!r} has judgments but is not a query of {dataset.name!r}",
                dataset.source,
            )
        return Dataset(
            name=dataset.name,
            corpus=dataset.corpus,
            queries={qid: dataset.queries[qid] for qid in ids},
            qrels={qid: dict(dataset.qrels[qid]) for qid in ids},
            source=dataset.source,
        )

    def __str__(self) -> str:
        return self.spec
