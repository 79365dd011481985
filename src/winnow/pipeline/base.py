"""Stages and the operators that compose them: ``>>`` (then), ``%`` (rank cut-off), ``|`` (parallel).

A stage maps ``(queries, run)`` to a new run inside a :class:`Context` that holds the collection,
the cache folder and the timings. Runs are plain ``{query_id: {doc_id: score}}`` dicts (TREC /
ir_measures shape); a stage never mutates the queries or the run it is given, it returns new dicts.
Every stage sees all queries at once, so rerankers batch pairs across queries.

Operators follow Python's precedence, like PyTerrier: ``%`` binds tighter than ``>>``, which binds
tighter than ``|``. So ``(bm25 % 100 | dense % 100) >> RRF() >> rerank % 10`` needs its parentheses.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from winnow.errors import ConfigError
from winnow.types import Dataset, Run

#: Phases a stage's seconds are filed under in reports.
PHASES = ("index", "encode", "retrieve", "fuse", "rerank", "cutoff")


@dataclass
class StageTiming:
    """Seconds one stage spent in one phase, with the work it did (queries, scored pairs)."""

    stage: str
    phase: str
    seconds: float = 0.0
    queries: int = 0
    pairs: int = 0
    cached: bool = False  # the result came from the memo or the disk cache, no work was redone
    parts: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "phase": self.phase,
            "seconds": round(self.seconds, 6),
            "queries": self.queries,
            "pairs": self.pairs,
            "cached": self.cached,
            "parts": {k: round(v, 6) for k, v in self.parts.items()},
        }


class Context:
    """What stages share while a pipeline runs: the collection, caches and the timings record.

    ``memo`` holds objects built once per context (an index of the corpus, a corpus fingerprint);
    one context is shared by all systems of an experiment, so BM25 indexes the corpus once even
    when three systems use it. ``cache_dir`` (optional) is where retrievers and rerank stages keep
    results on disk, keyed by content hashes.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        cache_dir: str | Path | None = None,
        progress: bool = False,
    ):
        self.dataset = dataset
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.progress = progress
        self.timings: list[StageTiming] = []
        self.memo: dict[Any, Any] = {}

    @contextmanager
    def timed(self, stage: str, phase: str, queries: int = 0) -> Iterator[StageTiming]:
        """Time the block and append a :class:`StageTiming`; the block may fill in pairs/parts."""
        record = StageTiming(stage=stage, phase=phase, queries=queries)
        started = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - started
            self.timings.append(record)

    def corpus_fingerprint(self) -> str:
        """sha256 of every document's id, title and text (computed once per context)."""
        from winnow._hashing import corpus_hash

        key = ("corpus-fingerprint",)
        if key not in self.memo:
            self.memo[key] = corpus_hash(self.dataset.corpus)
        return self.memo[key]


def top_docs(ranking: Mapping[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """A query's (doc_id, score) pairs best first; ties broken by doc_id so results are stable."""
    items = sorted(ranking.items(), key=lambda item: (-item[1], item[0]))
    return items if k is None else items[:k]


class Stage(ABC):
    """One step of a retrieval pipeline. Subclasses implement :meth:`transform`."""

    #: A short label for reports and timings (``BM25``, ``RRF``, ``rerank(MiniLM)``...).
    label: str = "stage"

    @abstractmethod
    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        """Return a new run for ``queries`` given the incoming ``run`` (None for the first stage)."""

    def __call__(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        return self.transform(queries, run, ctx)

    def __rshift__(self, other: Stage) -> Pipeline:
        return Pipeline([self, _check_stage(other, ">>")])

    def __rrshift__(self, other: Any) -> Pipeline:
        return Pipeline([_check_stage(other, ">>"), self])

    def __mod__(self, k: int) -> Pipeline:
        cut = Cutoff(k)
        return Pipeline([self.cut_to(cut.k), cut])

    def cut_to(self, k: int) -> Stage:
        """The stage to run before a ``% k`` cut-off: ``self`` (the default), or a new stage
        that produces only the ``k`` best of each query because nothing after the cut reads
        more (the ColBERT first stage, whose search is cheaper for a smaller k). Never
        modifies ``self``."""
        return self

    def __or__(self, other: Stage) -> Parallel:
        return Parallel([self, _check_stage(other, "|")])

    def __repr__(self) -> str:
        return self.label

    def bind(self, collection: Any, **kwargs: Any) -> Any:
        """This stage bound to ``collection`` (a Dataset, a dataset name, ``{doc_id: text}`` or a
        list of texts): call it on queries, or ``.search(query)``; see
        :class:`winnow.pipeline.bound.BoundPipeline` (``cache_dir=``, ``progress=``, ``data_dir=``)."""
        from winnow.pipeline.bound import BoundPipeline

        return BoundPipeline(self, collection, **kwargs)


def _check_stage(value: Any, op: str) -> Stage:
    if not isinstance(value, Stage):
        raise ConfigError(
            f"the {op} operator combines pipeline stages; got {type(value).__name__} ({value!r})"
        )
    return value


class Cutoff(Stage):
    """Keep the ``k`` best documents of each query (``stage % k``)."""

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"a rank cut-off must be a positive integer, got {k!r}")
        self.k = k
        self.label = f"%{k}"

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        if run is None:
            raise ConfigError(f"rank cut-off {self.label} has no run to cut: put it after a stage")
        with ctx.timed(self.label, "cutoff", len(queries)):
            return {qid: dict(top_docs(ranking, self.k)) for qid, ranking in run.items()}


class FusionStage(Stage):
    """A stage that merges the runs of a preceding :class:`Parallel` into one."""

    @abstractmethod
    def fuse(self, runs: Sequence[Run], ctx: Context, queries: int) -> Run:
        """One run from several (the inputs are not modified)."""

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        raise ConfigError(
            f"{self.label} fuses the runs of a parallel stage: write (a | b) >> {self.label}"
        )


class Parallel(Stage):
    """Run stages side by side on the same input (``a | b``); a fusion stage must follow."""

    def __init__(self, stages: Sequence[Stage]):
        flat: list[Stage] = []
        for s in stages:
            flat.extend(s.stages if isinstance(s, Parallel) else [_check_stage(s, "|")])
        if len(flat) < 2:
            raise ConfigError("a parallel stage needs at least two branches")
        self.stages = tuple(flat)
        self.label = "(" + " | ".join(s.label for s in self.stages) + ")"

    def transform_all(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> list[Run]:
        return [s.transform(queries, run, ctx) for s in self.stages]

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        raise ConfigError(
            f"{self.label} produces several runs: follow it with a fusion stage, "
            f"e.g. {self.label} >> rrf"
        )


class Pipeline(Stage):
    """Stages applied in order (``a >> b >> c`` or ``Pipeline([a, b, c])``).

    A :class:`Parallel` must be followed by a :class:`FusionStage`, and a fusion stage must follow
    a parallel one; this is checked when the pipeline is built.
    """

    def __init__(self, stages: Sequence[Stage]):
        flat: list[Stage] = []
        for s in stages:
            flat.extend(s.stages if isinstance(s, Pipeline) else [_check_stage(s, ">>")])
        if not flat:
            raise ConfigError("a pipeline needs at least one stage")
        for i, s in enumerate(flat):
            nxt = flat[i + 1] if i + 1 < len(flat) else None
            prev = flat[i - 1] if i else None
            if isinstance(s, Parallel) and nxt is not None and not isinstance(nxt, FusionStage):
                raise ConfigError(
                    f"{s.label} must be followed by a fusion stage (rrf, combsum, combmnz), "
                    f"not {nxt.label}"
                )
            if isinstance(s, FusionStage) and not isinstance(prev, Parallel):
                raise ConfigError(
                    f"{s.label} fuses several runs: put a parallel stage before it, "
                    f"e.g. (bm25 | dense) >> {s.label}"
                )
        self.stages = tuple(flat)
        self.label = " >> ".join(s.label for s in self.stages).replace(" >> %", " % ")

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        stages = list(self.stages)
        i = 0
        while i < len(stages):
            stage = stages[i]
            if isinstance(stage, Parallel) and i + 1 < len(stages):
                fusion = stages[i + 1]
                runs = stage.transform_all(queries, run, ctx)
                run = fusion.fuse(runs, ctx, len(queries))  # type: ignore[union-attr]
                i += 2
            else:
                run = stage.transform(queries, run, ctx)
                i += 1
        return run if run is not None else {}


def run_stage(
    stage: Stage, queries: Mapping[str, str], ctx: Context
) -> tuple[Run, list[StageTiming]]:
    """Run ``stage`` from scratch on ``queries``; return the run and the timings it recorded."""
    mark = len(ctx.timings)
    run = stage.transform(queries, None, ctx)
    return run, ctx.timings[mark:]
