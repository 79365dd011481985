"""Retrieval metrics through ir_measures, per query and averaged, with one evaluator reused per qrels.

Names are ir_measures measures (``nDCG@10``, ``R@100``, ``AP``, ``RR@10``, ``P@10``, ...) plus the
usual aliases ``MAP`` (= ``AP``, over the whole run) and ``MRR@k`` (= ``RR@k``); ir_measures'
measure objects (``ir_measures.nDCG@10``) are accepted too and named by their ``str``. A misspelled
name (``ndcg@10``, ``NDGC@10``) is refused with the closest measure names. Averages are taken
over every query of the qrels: a query the run has no result for scores 0 (trec_eval ``-c``), so a
system cannot look better by dropping hard queries. When the run answers every query this equals
ir_measures' own aggregate.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from winnow.errors import ConfigError
from winnow.types import Run

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "R@100", "R@1000", "MAP", "MRR@10", "P@10")

_ALIASES = {"MAP": "AP", "MRR": "RR"}


def _suggest(name: str) -> str:
    """``; did you mean nDCG@10?`` for a misspelled measure name (same cut-off), or ``""``."""
    import ir_measures

    base, sep, cutoff = name.partition("@")
    known = sorted(set(ir_measures.measures.registry) | set(_ALIASES))
    by_lower = {k.lower(): k for k in known}
    close = [by_lower[base.lower()]] if base.lower() in by_lower else []
    close += [c for c in difflib.get_close_matches(base, known, n=3, cutoff=0.6) if c not in close]
    if not close:
        return ""
    return "; did you mean " + " or ".join(c + sep + cutoff for c in close[:3]) + "?"


def metric_name(metric: Any) -> str:
    """A metric's name: the text itself, or ``str()`` of an ir_measures measure object."""
    if isinstance(metric, str):
        return metric.strip()
    try:
        from ir_measures.measures.base import Measure
    except ImportError:  # pragma: no cover
        Measure = ()
    if isinstance(metric, Measure):
        return str(metric)
    raise ConfigError(
        f"a metric is a name ('nDCG@10') or an ir_measures measure (nDCG@10), "
        f"got {type(metric).__name__} {metric!r}"
    )


def to_ir_measure(name: Any):
    """The ir_measures measure for a metric name (``MAP`` -> ``AP``, ``MRR@10`` -> ``RR@10``) or
    measure object."""
    import ir_measures

    name = metric_name(name)
    base, sep, cutoff = name.partition("@")
    text = _ALIASES.get(base, base) + (sep + cutoff if sep else "")
    try:
        return ir_measures.parse_measure(text)
    except (ValueError, NameError, SyntaxError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"unknown metric {name!r}{_suggest(name)} (ir_measures: {exc}). Valid examples: "
            f"{', '.join(DEFAULT_METRICS)}, nDCG@20, R@10, P@5, AP@100, Judged@10"
        ) from None


def parse_metrics(names: str | Iterable[Any]) -> list[str]:
    """``"nDCG@10,MAP"``, a list of names or of ir_measures measures (``[nDCG@10, AP]``) ->
    validated names, in order, without duplicates."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (metric_name(i) for i in items):
        if not item:
            raise ConfigError(f"empty metric name in {names!r}")
        to_ir_measure(item)
        if item not in out:
            out.append(item)
    if not out:
        raise ConfigError("no metrics given")
    return out


class Evaluator:
    """Metrics of runs against one set of qrels; build once, call on many runs.

    ``per_query(run)`` -> ``{metric: {query_id: value}}`` over every query of the qrels;
    ``aggregate(run)`` -> ``{metric: mean}``.
    """

    def __init__(
        self, qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[str] = DEFAULT_METRICS
    ):
        import ir_measures

        self.metrics = parse_metrics(metrics)
        self.qrels = {
            str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()
        }
        if not self.qrels:
            raise ConfigError("cannot evaluate: the qrels are empty")
        self.query_ids = sorted(self.qrels)
        self._measures = {name: to_ir_measure(name) for name in self.metrics}
        self._names = {m: name for name, m in self._measures.items()}
        self._evaluator = ir_measures.evaluator(list(self._measures.values()), self.qrels)

    def per_query(self, run: Run) -> dict[str, dict[str, float]]:
        values = {name: dict.fromkeys(self.query_ids, 0.0) for name in self.metrics}
        judged = {q: docs for q, docs in run.items() if q in self.qrels and docs}
        if judged:
            for m in self._evaluator.iter_calc(judged):
                values[self._names[m.measure]][m.query_id] = float(m.value)
        return values

    def aggregate(
        self, run: Run, per_query: dict[str, dict[str, float]] | None = None
    ) -> dict[str, float]:
        per_query = per_query if per_query is not None else self.per_query(run)
        n = len(self.query_ids)
        return {name: sum(per_query[name].values()) / n for name in self.metrics}


def evaluate(
    run: Run, qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, float]:
    """Mean of each metric over the queries of ``qrels`` (one-off; reuse an :class:`Evaluator`)."""
    return Evaluator(qrels, metrics).aggregate(run)
