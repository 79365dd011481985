"""Hard-negative mining judged by a reranker: ``mine_hard_negatives``.

For every query of a dataset with at least one positive (qrels relevance > 0):

1. **retrieve**: a winnow system (``bm25``, ``dense``, ``hybrid``, ``dense:MODEL``, any system
   expression) ranks the corpus; every known positive of the query is removed from the ranking
   (all of them, and any document whose text equals a positive's), as are later copies of a text
   already listed, and ranks ``range_min .. range_max - 1`` of what remains are the candidates;
2. **judge**: a reranker (any winnow kind) scores every candidate and every positive. The pairs of
   all queries go through one ``score_pairs`` call, which the engine length-sorts and batches
   (sentence-transformers' ``mine_hard_negatives`` calls its cross-encoder once per query). With a
   cache folder each pair's score is kept under (judge identity, query text, document text), so a
   second run with other thresholds, windows or samplings sends no pair to the model;
3. **filter** on the judge's own scale, against the query's *weakest* positive ``pos`` (in this
   order, each candidate counted under the first filter that drops it): ``absolute_margin``
   keeps ``score < pos - margin``; ``relative_margin`` keeps ``score < pos - |pos| * margin``
   (TopK-PercPos, NV-Retriever's best setting is 0.05; the ``|pos|`` keeps the threshold below the
   positive when scores are negative logits, where ``pos * (1 - margin)`` would lift it above);
   ``max_score`` keeps ``score <= max_score``; ``min_score`` keeps ``score >= min_score``. The
   first-stage scores (BM25, cosines) are only used to rank candidates, never compared with the
   judge's;
4. **sample** ``num_negatives`` of the kept candidates: ``top`` (highest judge scores, ties by
   candidate rank) or ``random`` (seeded per query, then ordered by judge score), as
   sentence-transformers does; and write them in one of its formats (``winnow.training._formats``).

Differences from sentence-transformers, on purpose: the window ``range_min/range_max`` is over the
first-stage ranking with the positives removed (sentence-transformers takes ``range_max + max
positives`` embedding neighbours and applies ``range_min`` after re-sorting them by the
cross-encoder); the margin filters are strict (``<``) where sentence-transformers keeps equality;
documents are told apart by id, not by deduplicating texts (but a copy of a positive's text is
never a negative).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from winnow.errors import ConfigError, ModelLoadError
from winnow.training._formats import (
    FORMATS,
    Mined,
    build_columns,
    check_format,
    output_kind,
    row_count,
    write_columns,
)
from winnow.types import Dataset

logger = logging.getLogger(__name__)

SAMPLING = ("top", "random")
FILTERS = ("absolute_margin", "relative_margin", "max_score", "min_score")
PHASES = ("retrieve", "judge", "filter", "write")


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class MiningConfig:
    """What to mine; every field is checked when the config is made (errors name the field)."""

    num_negatives: int = 3
    range_min: int = 0
    range_max: int | None = None
    relative_margin: float | None = None
    absolute_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    sampling: str = "top"
    seed: int = 0
    output_format: str = "triplet"
    output_scores: bool = False

    def __post_init__(self) -> None:
        _count("num_negatives", self.num_negatives, 1)
        _count("range_min", self.range_min, 0)
        _count("seed", self.seed, 0)
        for name in FILTERS:
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise ConfigError(
                f"relative_margin must be in [0, 1) (0.05 keeps negatives 5% of |positive| "
                f"below it), got {self.relative_margin!r}"
            )
        if self.absolute_margin is not None and self.absolute_margin < 0:
            raise ConfigError(f"absolute_margin must be >= 0, got {self.absolute_margin!r}")
        if (
            self.max_score is not None
            and self.min_score is not None
            and self.min_score > self.max_score
        ):
            raise ConfigError(
                f"min_score ({self.min_score}) is above max_score ({self.max_score}): "
                "no candidate could be kept"
            )
        if self.sampling not in SAMPLING:
            raise ConfigError(f"sampling {self.sampling!r} is not one of {', '.join(SAMPLING)}")
        fmt, scores = check_format(self.output_format, self.output_scores)
        object.__setattr__(self, "output_format", fmt)
        object.__setattr__(self, "output_scores", scores)
        if self.range_max is None:
            # as sentence-transformers: room for 10x the negatives when filters may drop some
            extra = 10 if self.filtered else 1
            object.__setattr__(self, "range_max", self.range_min + extra * self.num_negatives)
        _count("range_max", self.range_max, 1)
        if self.range_max <= self.range_min:
            raise ConfigError(
                f"range_max ({self.range_max}) must be above range_min ({self.range_min})"
            )
        if self.num_negatives > self.range_max - self.range_min:
            raise ConfigError(
                f"num_negatives={self.num_negatives} does not fit in the candidate window "
                f"range_min={self.range_min} .. range_max={self.range_max} "
                f"({self.range_max - self.range_min} candidates)"
            )

    @property
    def filtered(self) -> bool:
        return any(getattr(self, name) is not None for name in FILTERS)


@dataclass
class MiningSummary:
    """What mining did: counts per step and seconds per phase."""

    dataset: str
    queries: int = 0  # queries with at least one positive (the ones mined)
    queries_without_positives: int = 0  # judged queries skipped: no judgment > 0
    positives: int = 0
    positives_excluded: int = 0  # positives (or copies of their text) removed from candidates
    duplicates_skipped: int = 0  # candidates whose text repeats an earlier candidate's
    # blank texts (queries, positives, candidates) left out: no trainer accepts an empty text
    # (Cranfield has two empty documents, one of them judged relevant)
    blank_skipped: int = 0
    candidates: int = 0  # candidates in the rank window, seen by the filters
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    dropped_not_finite: int = 0  # the judge gave a NaN / infinite score
    kept: int = 0  # candidates left after the filters
    negatives: int = 0  # negatives chosen
    short_queries: int = 0  # queries left with fewer than num_negatives negatives
    rows: int = 0
    judge_pairs: int = 0  # distinct (query, document) pairs the judge had to score
    judge_scored: int = 0  # of those, pairs sent to the model
    judge_cached: int = 0  # of those, pairs served from the cache
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    output: str | None = None
    output_format: str = "triplet"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The summary as the CLI prints it."""
        dropped = ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v) or "none"
        if self.dropped_not_finite:
            dropped += f", not finite {self.dropped_not_finite}"
        secs = ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        return [
            f"{self.dataset}: {self.queries} queries with {self.positives} positives "
            f"({self.queries_without_positives} judged queries without positives skipped)",
            f"candidates {self.candidates} (positives excluded {self.positives_excluded}, "
            f"duplicate texts skipped {self.duplicates_skipped}, "
            f"blank texts skipped {self.blank_skipped})",
            f"dropped: {dropped}; kept {self.kept}",
            f"negatives {self.negatives}; queries without enough negatives {self.short_queries}",
            f"judge: {self.judge_pairs} pairs, {self.judge_scored} scored by the model, "
            f"{self.judge_cached} from the cache",
            f"rows {self.rows} ({self.output_format})"
            + (f" written to {self.output}" if self.output else ""),
            f"seconds: {secs}",
        ]


@dataclass
class MiningResult:
    """The mined table (``columns``, sentence-transformers' layout), the summary, and per query the
    chosen negatives ``[(doc_id, judge score), ...]`` (best first), the positives' judge scores and
    the candidate window (doc ids in first-stage order, positives removed)."""

    columns: dict[str, list[Any]]
    summary: MiningSummary
    negatives: dict[str, list[tuple[str, float]]]
    positive_scores: dict[str, dict[str, float]]
    candidates: dict[str, list[str]] = field(default_factory=dict)

    def to_dataset(self):
        """The table as a ``datasets.Dataset`` (extra ``winnow[training]``)."""
        from winnow.errors import require

        return require("datasets", "training").Dataset.from_dict(self.columns)


def check_output_path(output: str | os.PathLike, option: str = "output") -> Path:
    """Refuse an output file that cannot be written, before any work (suffix, folder, access)."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {os.fspath(output)!r} is a folder; give the file to write")
    output_kind(path, option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{option} {os.fspath(output)!r}: cannot create {str(path.parent)!r}: "
            f"{exc.strerror or exc}"
        ) from exc
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {os.fspath(output)!r} is not writable")
    return path


def _judge(judge: Any, device: str | None, dtype: str | None, progress: bool):
    from winnow.pipeline.spec import SpecOptions
    from winnow.rerankers.base import Reranker

    if isinstance(judge, Reranker):
        reranker = judge.load()
    elif isinstance(judge, (str, os.PathLike)):
        spec = os.fspath(judge)
        try:
            reranker = SpecOptions(device=device, dtype=dtype, progress=progress).load(spec)
            reranker.load()  # now, so a judge that cannot load fails before any retrieval
        except (ModelLoadError, ConfigError, OSError) as exc:
            raise ModelLoadError(f"judge {spec!r} cannot be loaded: {exc}") from exc
    else:
        raise ConfigError(
            f"judge must be a winnow Reranker or a [KIND:]MODEL string, got {type(judge).__name__}"
        )
    if reranker.score_type != "relevance":
        raise ConfigError(
            f"judge {reranker.config.model!r} ({reranker.config.kind}) gives {reranker.score_type} "
            "scores that only encode an order; margins need a pointwise relevance judge "
            "(cross-encoder, bi-encoder, llm-pointwise)"
        )
    return reranker


def _candidate_stage(candidates: Any, **kw: Any):
    """A Stage from a system spec (parsed now, so a bad spec fails before any work), a Stage, or
    a run given as a mapping (returned as is)."""
    from winnow.pipeline.base import Stage
    from winnow.pipeline.spec import SpecOptions, parse_system

    if isinstance(candidates, Mapping):  # a run computed elsewhere
        return candidates
    if isinstance(candidates, str):
        options = SpecOptions(device=kw["device"], dtype=kw["dtype"], progress=kw["progress"])
        if kw.get("dense_model"):
            options.dense_model = kw["dense_model"]
        stage = parse_system(candidates, options)
    elif isinstance(candidates, Stage):
        stage = candidates
    else:
        raise ConfigError(
            "candidates must be a system spec (bm25, dense, hybrid, dense:MODEL, ...), a winnow "
            f"Stage or a run {{query_id: {{doc_id: score}}}}, got {type(candidates).__name__}"
        )
    return stage


def _candidate_run(stage: Any, queries: Mapping[str, str], dataset: Dataset, **kw: Any):
    from winnow.pipeline.base import Context

    if isinstance(stage, Mapping):
        return {qid: dict(stage.get(qid, {})) for qid in queries}
    ctx = Context(dataset, cache_dir=kw["cache_dir"], progress=kw["progress"])
    return stage.transform(queries, None, ctx)


def _judge_scores(
    reranker: Any,
    pairs: Sequence[tuple[str, str]],
    cache_dir: Path | None,
    summary: MiningSummary,
) -> dict[tuple[str, str], float]:
    """Scores of the distinct ``pairs``: from the cache, the rest in one ``score_pairs`` call."""
    from winnow import __version__
    from winnow.pipeline.rerank import reranker_identity
    from winnow.training._judge_cache import JudgeCache, pair_hash

    unique = list(dict.fromkeys(pairs))
    summary.judge_pairs = len(unique)
    cache = None
    found: dict[str, float] = {}
    keys: list[str] = []
    if cache_dir is not None:
        identity = {"judge": reranker_identity(reranker), "winnow": __version__}
        cache = JudgeCache(cache_dir, identity)
        keys = [pair_hash(q, d) for q, d in unique]
        found = cache.get_many(keys)
    todo = [i for i, _ in enumerate(unique) if not keys or keys[i] not in found]
    summary.judge_cached = len(unique) - len(todo)
    summary.judge_scored = len(todo)
    scores: dict[tuple[str, str], float] = {}
    if todo:
        fresh = reranker.score_pairs([unique[i] for i in todo])  # one stream over every query
        new = {}
        for i, value in zip(todo, fresh):
            scores[unique[i]] = float(value)
            if cache is not None:
                new[keys[i]] = float(value)
        if cache is not None:
            cache.put_many(new)
    for i, pair in enumerate(unique):
        if pair not in scores:
            scores[pair] = found[keys[i]]
    return scores


def _dropped_by(score: float, ref: float, config: MiningConfig) -> str | None:
    """None when the candidate passes every filter, else the name of the first that drops it."""
    if config.absolute_margin is not None and not score < ref - config.absolute_margin:
        return "absolute_margin"
    if config.relative_margin is not None and not score < ref - abs(ref) * config.relative_margin:
        return "relative_margin"
    if config.max_score is not None and score > config.max_score:
        return "max_score"
    if config.min_score is not None and score < config.min_score:
        return "min_score"
    return None


def _sample(kept: list[tuple[str, float, int]], config: MiningConfig, qid: str):
    """``num_negatives`` of the kept ``(doc_id, score, rank)``, best judge score first."""
    if config.sampling == "random" and len(kept) > config.num_negatives:
        # seeded per query (str seeds hash with sha512), so one query's draw never depends on
        # which other queries are mined or in what order
        kept = random.Random(f"{config.seed}:{qid}").sample(kept, config.num_negatives)
    ordered = sorted(kept, key=lambda c: (-c[1], c[2]))
    return ordered[: config.num_negatives]


def mine_hard_negatives(
    dataset: Dataset,
    judge: Any,
    candidates: Any = "bm25",
    *,
    num_negatives: int = 3,
    range_min: int = 0,
    range_max: int | None = None,
    relative_margin: float | None = None,
    absolute_margin: float | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    sampling: str = "top",
    seed: int = 0,
    output_format: str = "triplet",
    output_scores: bool = False,
    output: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dense_model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
) -> MiningResult:
    """Mine hard negatives for ``dataset``'s queries, judged by ``judge`` (see the module docstring).

    Args:
        dataset: the collection, e.g. ``load_dataset("cranfield", split="train@0.6")``.
        judge: a winnow :class:`~winnow.rerankers.base.Reranker`, or ``"[KIND:]MODEL"`` loaded
            with :func:`winnow.load_reranker` (``device``, ``dtype``).
        candidates: a system spec (``bm25``, ``dense``, ``hybrid``, ``dense:MODEL``, ...), a
            winnow Stage, or a run ``{query_id: {doc_id: score}}``.
        num_negatives: negatives per query (>= 1).
        range_min, range_max: the candidate window over the positive-free first-stage ranking
            (default ``range_max``: ``range_min + 10 * num_negatives`` with a filter, else
            ``range_min + num_negatives``, as sentence-transformers).
        relative_margin, absolute_margin, max_score, min_score: filters on the judge's scale.
        sampling: ``top`` or ``random`` (seeded by ``seed`` and the query id).
        output_format: ``triplet``, ``n-tuple``, ``n-tuple-scores``, ``labeled-pair``,
            ``labeled-list``; ``output_scores`` adds the judge's scores as sentence-transformers.
        output: a ``.jsonl`` / ``.json`` (JSON lines) or ``.parquet`` file, written atomically;
            checked before any work.
        cache_dir: where first-stage indexes, embeddings and judge scores are kept between runs.
        dense_model: the model of the ``dense`` word in ``candidates``.

    Raises:
        ConfigError: a setting out of range, an unknown system or format, an unwritable output.
        ModelLoadError: the judge cannot be loaded.
    """
    config = MiningConfig(
        num_negatives=num_negatives,
        range_min=range_min,
        range_max=range_max,
        relative_margin=relative_margin,
        absolute_margin=absolute_margin,
        max_score=max_score,
        min_score=min_score,
        sampling=sampling,
        seed=seed,
        output_format=output_format,
        output_scores=output_scores,
    )
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"dataset must be a winnow Dataset, got {type(dataset).__name__}")
    out_path = check_output_path(output) if output is not None else None
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    stage = _candidate_stage(
        candidates, device=device, dtype=dtype, progress=progress, dense_model=dense_model
    )
    reranker = _judge(judge, device, dtype, progress)
    summary = MiningSummary(dataset=dataset.name, output_format=config.output_format)

    positives: dict[str, list[str]] = {}
    for qid, judged in dataset.qrels.items():
        if qid not in dataset.queries:
            continue
        pos = [doc_id for doc_id, rel in judged.items() if rel > 0 and doc_id in dataset.corpus]
        if pos and not dataset.queries[qid].strip():
            summary.blank_skipped += 1
            continue
        blank = [doc_id for doc_id in pos if not dataset.corpus[doc_id].full_text.strip()]
        summary.blank_skipped += len(blank)
        pos = [doc_id for doc_id in pos if doc_id not in blank]
        if pos:
            positives[qid] = pos
        else:
            summary.queries_without_positives += 1
    summary.queries = len(positives)
    summary.positives = sum(len(p) for p in positives.values())
    if not positives:
        raise ConfigError(f"dataset {dataset.name!r} has no query with a positive judgment (> 0)")
    queries = {qid: dataset.queries[qid] for qid in positives}

    started = time.perf_counter()
    run = _candidate_run(stage, queries, dataset, cache_dir=cache, progress=progress)
    summary.seconds["retrieve"] = time.perf_counter() - started

    from winnow.pipeline.base import top_docs

    corpus = dataset.corpus
    windows: dict[str, list[str]] = {}
    for qid, pos in positives.items():
        pos_texts = {corpus[d].full_text for d in pos}
        pos_ids = set(pos)
        seen_texts: set[str] = set()
        free: list[str] = []
        for doc_id, _ in top_docs(run.get(qid, {})):
            if doc_id not in corpus:
                raise ConfigError(
                    f"candidates rank document {doc_id!r} for query {qid!r}, which is not in "
                    f"the corpus of {dataset.name!r}"
                )
            text = corpus[doc_id].full_text
            if not text.strip():
                summary.blank_skipped += 1
                continue
            if doc_id in pos_ids or text in pos_texts:
                summary.positives_excluded += 1
                continue
            if text in seen_texts:
                summary.duplicates_skipped += 1
                continue
            seen_texts.add(text)
            free.append(doc_id)
            if len(free) >= config.range_max:
                break
        windows[qid] = free[config.range_min : config.range_max]
    summary.candidates = sum(len(w) for w in windows.values())

    started = time.perf_counter()
    pairs = [
        (queries[qid], corpus[d].full_text)
        for qid in positives
        for d in (*positives[qid], *windows[qid])
    ]
    scores = _judge_scores(reranker, pairs, cache, summary)
    summary.seconds["judge"] = time.perf_counter() - started

    started = time.perf_counter()
    items: list[Mined] = []
    chosen: dict[str, list[tuple[str, float]]] = {}
    positive_scores: dict[str, dict[str, float]] = {}
    for qid, pos in positives.items():
        text = queries[qid]
        pos_scores = {d: scores[(text, corpus[d].full_text)] for d in pos}
        positive_scores[qid] = pos_scores
        ref = min(pos_scores.values())  # the weakest positive is the reference
        kept: list[tuple[str, float, int]] = []
        for rank, doc_id in enumerate(windows[qid]):
            score = scores[(text, corpus[doc_id].full_text)]
            if not math.isfinite(score):
                summary.dropped_not_finite += 1
                continue
            reason = _dropped_by(score, ref, config)
            if reason is None:
                kept.append((doc_id, score, rank))
            else:
                summary.dropped[reason] += 1
        summary.kept += len(kept)
        picked = _sample(kept, config, qid)
        chosen[qid] = [(d, s) for d, s, _ in picked]
        summary.negatives += len(picked)
        summary.short_queries += len(picked) < config.num_negatives
        items.append(
            Mined(
                query=text,
                positives=[(corpus[d].full_text, pos_scores[d]) for d in pos],
                negatives=[(corpus[d].full_text, s) for d, s, _ in picked],
            )
        )
    columns = build_columns(items, config.output_format, config.num_negatives, config.output_scores)
    summary.rows = row_count(columns)
    summary.seconds["filter"] = time.perf_counter() - started

    if out_path is not None:
        started = time.perf_counter()
        write_columns(columns, out_path)
        summary.output = str(out_path)
        summary.seconds["write"] = time.perf_counter() - started
    if not summary.rows:
        logger.warning(
            "no rows mined for %r (%s): widen range_max or loosen the filters",
            dataset.name,
            config.output_format,
        )
    elif summary.short_queries:
        logger.info(
            "%d of %d queries have fewer than %d negatives; widen range_max or loosen the filters",
            summary.short_queries,
            summary.queries,
            config.num_negatives,
        )
    return MiningResult(columns, summary, chosen, positive_scores, windows)


__all__ = [
    "FORMATS",
    "SAMPLING",
    "MiningConfig",
    "MiningResult",
    "MiningSummary",
    "mine_hard_negatives",
]
