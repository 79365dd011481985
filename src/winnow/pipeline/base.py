"""Stages and the operators that compose them: ``>>`` (then), ``%`` (rank cut-off), ``|`` (parallel).

A stage maps ``(queries, run)`` to a new run inside a :class:`Context` that holds the collection,
the cache folder and the timings. Runs are plain ``{query_id: {doc_id: score}}`` dicts (TREC /
ir_measures shape); a stage never mutates the queries or the run it is given, it returns new dicts.
Every stage sees all queries at once, so rerankers batch pairs across queries.

Operators follow Python's precedence, like PyTerrier: ``%`` binds tighter than ``>>``, which binds
tighter than ``|``. So ``(bm25 % 100 | dense % 100) >> RRF() >> rerank % 10`` needs its parentheses.

``a | b`` is not PyTerrier's set union of two result sets: it runs ``a`` and ``b`` side by side on
the same input, and the fusion stage written after it (``(a | b) >> RRF()``) merges their runs
into one. The pair is built into one :class:`Fused` stage when the expression is composed, so
``((a | b) >> RRF()).transform(...)`` runs alone like any other stage; a :class:`Parallel` with no
fusion after it, or a fusion stage with no parallel one before it, produces no single run.
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
        calibrate_on_pairs: bool = True,
    ):
        self.dataset = dataset
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.progress = progress
        #: a ``rerank`` stage asked for static int8 with no sample draws one from the pairs it
        #: scores (an experiment); a bound pipeline, which answers one query at a time, does not
        self.calibrate_on_pairs = calibrate_on_pairs
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

    def __rshift__(self, other: Stage) -> Stage:
        return then([self, _check_stage(other, ">>")])

    def __rrshift__(self, other: Any) -> Stage:
        return then([_check_stage(other, ">>"), self])

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
    """A method that merges the runs of a preceding :class:`Parallel` into one.

    Writing ``parallel >> fusion`` builds a :class:`Fused` stage from the two; the fusion stage
    alone has no runs to merge.
    """

    @abstractmethod
    def fuse(self, runs: Sequence[Run], ctx: Context, queries: int) -> Run:
        """One run from several (the inputs are not modified)."""

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        raise ConfigError(
            f"{self.label} fuses the runs of a parallel stage: write (a | b) >> {self.label}"
        )


class Parallel(Stage):
    """Stages side by side on the same input (``a | b``); ``>> fusion`` makes a :class:`Fused`."""

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


class Fused(Stage):
    """A parallel stage and the fusion of its runs, as one stage (``(a | b) >> RRF()``).

    Built when the expression is composed (by ``>>`` or :class:`Pipeline`), so it runs alone:
    ``Fused(a | b, RRF()).transform(queries, run, ctx)`` runs every branch on ``run`` and returns
    the fused run. ``stages`` is ``(parallel, fusion)``; the label is the one the two had side by
    side (``(a | b) >> rrf``).
    """

    def __init__(self, parallel: Parallel, fusion: FusionStage):
        if not isinstance(parallel, Parallel):
            raise ConfigError(
                f"{fusion.label} fuses several runs: put a parallel stage before it, "
                f"e.g. (bm25 | dense) >> {fusion.label}"
            )
        if not isinstance(fusion, FusionStage):
            raise ConfigError(
                f"{parallel.label} must be followed by a fusion stage (rrf, combsum, combmnz), "
                f"not {fusion.label}"
            )
        self.parallel = parallel
        self.fusion = fusion
        self.stages = (parallel, fusion)
        self.label = f"{parallel.label} >> {fusion.label}"

    @property
    def branches(self) -> tuple[Stage, ...]:
        return self.parallel.stages

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        runs = self.parallel.transform_all(queries, run, ctx)
        return self.fusion.fuse(runs, ctx, len(queries))


class Pipeline(Stage):
    """Stages applied in order (``a >> b >> c`` or ``Pipeline([a, b, c])``).

    A :class:`Parallel` followed by a :class:`FusionStage` becomes one :class:`Fused` stage here,
    when the pipeline is built; anything else after a parallel stage, or a fusion stage after
    anything but a parallel one, is refused. While an expression is being written a parallel
    stage may end a pipeline (``x >> (a | b)``, then ``>> rrf``) and a fusion stage may start one
    (``rrf % 10`` in ``(a | b) >> rrf % 10``); such an unfinished pipeline does not run.
    """

    def __init__(self, stages: Sequence[Stage]):
        flat: list[Stage] = []
        for s in stages:
            for step in s.stages if isinstance(s, Pipeline) else (_check_stage(s, ">>"),):
                prev = flat[-1] if flat else None
                if isinstance(prev, Parallel) or (
                    prev is not None and isinstance(step, FusionStage)
                ):
                    flat[-1:] = [Fused(prev, step)]  # type: ignore[arg-type]
                else:
                    flat.append(step)
        if not flat:
            raise ConfigError("a pipeline needs at least one stage")
        self.stages = tuple(flat)
        self.label = " >> ".join(s.label for s in self.stages).replace(" >> %", " % ")

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        for stage in self.stages:
            run = stage.transform(queries, run, ctx)
        return run if run is not None else {}


def then(stages: Sequence[Stage]) -> Stage:
    """``stages[0] >> stages[1] >> ...``: one stage when they make one (``(a | b) >> rrf`` is a
    :class:`Fused`), else a :class:`Pipeline`."""
    pipeline = Pipeline(stages)
    return pipeline.stages[0] if len(pipeline.stages) == 1 else pipeline


def run_stage(
    stage: Stage, queries: Mapping[str, str], ctx: Context
) -> tuple[Run, list[StageTiming]]:
    """Run ``stage`` from scratch on ``queries``; return the run and the timings it recorded."""
    mark = len(ctx.timings)
    run = stage.transform(queries, None, ctx)
    return run, ctx.timings[mark:]
