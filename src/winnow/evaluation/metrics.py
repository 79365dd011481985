"""Retrieval metrics through ir_measures, per query and averaged, with one evaluator reused per qrels.

Names are ir_measures measures (``nDCG@10``, ``R@100``, ``AP``, ``RR@10``, ``P@10``, ...) plus the
usual aliases ``MAP`` (= ``AP``, over the whole run) and ``MRR@k`` (= ``RR@k``). Averages are taken
over every query of the qrels: a query the run has no result for scores 0 (trec_eval ``-c``), so a
system cannot look better by dropping hard queries. When the run answers every query this equals
ir_measures' own aggregate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from winnow.errors import ConfigError
from winnow.types import Run

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "R@100", "R@1000", "MAP", "MRR@10", "P@10")

_ALIASES = {"MAP": "AP", "MRR": "RR"}


def to_ir_measure(name: str):
    """The ir_measures measure for a metric name (``MAP`` -> ``AP``, ``MRR@10`` -> ``RR@10``)."""
    import ir_measures

    base, sep, cutoff = name.partition("@")
    text = _ALIASES.get(base, base) + (sep + cutoff if sep else "")
    try:
        return ir_measures.parse_measure(text)
    except (ValueError, NameError, SyntaxError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"unknown metric {name!r} (ir_measures: {exc}); valid examples: "
            f"{', '.join(DEFAULT_METRICS)}, nDCG@20, R@10, P@5, AP@100, Judged@10"
        ) from None


def parse_metrics(names: str | Iterable[str]) -> list[str]:
    """``"nDCG@10,MAP"`` or a list -> validated names, in order, without duplicates."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (i.strip() for i in items):
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
