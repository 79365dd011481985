"""Which in-batch candidates a reranker guide judges, and how its verdicts mask false negatives.

Scoring every in-batch pair with a reranker is infeasible (3 x 2,048^2 = 12.6 M calls per batch for
anchor-positive, anchor-anchor and positive-positive blocks at batch 2,048), so the candidates of
each anchor are triaged with the student's own (detached) cosine similarities:

1. **By text** (no model): the labelled positive is never masked; the anchor itself, the row's own
   query text (the positive in the positive-positive block) and any known positive of the anchor
   (the positive of a row with the same anchor text, including copies of this row's positive) are
   always masked.
2. **Easy negatives**: a candidate whose student similarity is below ``similarity_threshold`` is
   kept as a negative without asking anyone.
3. **Hybrid rule**: a candidate whose student similarity is below ``hybrid_threshold`` x the
   student's anchor-positive similarity is judged by *the student's* similarities, with the GIST rule
   and the same margin: masked iff ``s(q, c) > s(a, p) - margin`` (``absolute``) or
   ``s(a, p) - |s(a, p)| * margin`` (``relative``). In this region that rule keeps the candidate
   whenever ``s(a, p) > 0`` and the margin is below ``(1 - hybrid_threshold) * s(a, p)``.
4. **Reranker**: of the candidates left, the ``k`` most similar per anchor (``k`` =
   ``top_k_ratio`` x batch size, clamped to ``[min_top_k, max_candidates]``, over all blocks
   together) go to the guide; the rest fall back to the student rule of step 3. The guide scores the
   anchor's positive as well, and a candidate is masked iff ``g(q, c) > g(a, p) - margin``
   (``absolute``) or ``g(a, p) - |g(a, p)| * margin`` (``relative``: right for negative scores too).

``q`` is the row's query side: the anchor, except in the positive-positive block where it is the
row's positive (compared against ``g(a, p)``, as ``GISTEmbedLoss`` does).
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from winnow.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

MARGIN_STRATEGIES = ("absolute", "relative")


@dataclass(frozen=True)
class Guidance:
    """The triage settings (see the module docstring). ``None`` turns a filter off."""

    similarity_threshold: float | None = 0.3
    top_k_ratio: float | None = 0.1
    min_top_k: int = 10
    max_candidates: int | None = 100
    hybrid_threshold: float | None = 0.5
    margin: float = 0.0
    margin_strategy: str = "absolute"

    def __post_init__(self) -> None:
        def number(name: str, low: float, high: float, optional: bool = True) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"{name} must be in [{low}, {high}], got {value!r}")

        number("similarity_threshold", -1.0, 1.0)
        number("top_k_ratio", 0.0, 1.0)
        number("hybrid_threshold", 0.0, 1.0)
        number("margin", 0.0, math.inf, optional=False)
        for name in ("min_top_k", "max_candidates"):
            value = getattr(self, name)
            if value is None and name == "max_candidates":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.max_candidates is not None and self.min_top_k > self.max_candidates:
            raise ConfigError(
                f"min_top_k ({self.min_top_k}) must not exceed max_candidates ({self.max_candidates})"
            )
        if self.margin_strategy not in MARGIN_STRATEGIES:
            raise ConfigError(
                f"margin_strategy must be one of {', '.join(MARGIN_STRATEGIES)}, "
                f"got {self.margin_strategy!r}"
            )

    @property
    def unfiltered(self) -> bool:
        return (
            self.similarity_threshold is None
            and self.hybrid_threshold is None
            and self.top_k_ratio is None
            and self.max_candidates is None
        )

    def top_k(self, batch_size: int) -> int | None:
        """Candidates per anchor sent to the guide at this batch size (None: no limit)."""
        if self.top_k_ratio is None:
            return self.max_candidates
        k = max(self.min_top_k, math.ceil(self.top_k_ratio * batch_size))
        return k if self.max_candidates is None else min(k, self.max_candidates)


#: name -> (similarity_threshold, top_k_ratio, min_top_k, max_candidates, hybrid_threshold)
PRESETS: dict[str, tuple[float | None, float | None, int, int | None, float | None]] = {
    "conservative": (0.2, 0.2, 20, 200, 0.4),
    "balanced": (0.3, 0.1, 10, 100, 0.5),
    "aggressive": (0.4, 0.05, 5, 50, 0.6),
    "unfiltered": (None, None, 0, None, None),  # every in-batch pair goes to the reranker
}
_PRESET_FIELDS = ("similarity_threshold", "top_k_ratio", "min_top_k", "max_candidates")


def preset(name: str, **overrides) -> Guidance:
    """The :class:`Guidance` of preset ``name`` with ``overrides`` applied on top."""
    values = PRESETS.get(name)
    if values is None:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    fields = dict(zip((*_PRESET_FIELDS, "hybrid_threshold"), values))
    return replace(Guidance(**fields), **overrides)


@dataclass
class GuideStats:
    """What one batch cost: guide pairs asked, answered from the cache, and scored by the model.

    ``unfiltered_pairs`` is what the unfiltered loss would have asked for the same batch (distinct
    pairs, positives included); ``all_pairs`` is the size of the candidate blocks (rows x columns).
    """

    batch_size: int = 0
    all_pairs: int = 0
    unfiltered_pairs: int = 0
    guide_pairs: int = 0
    cache_hits: int = 0
    reranker_calls: int = 0
    masked_by_text: int = 0
    masked_by_guide: int = 0
    masked_by_student: int = 0
    easy_negatives: int = 0
    batches: int = 1

    def __iadd__(self, other: GuideStats) -> GuideStats:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _pair_digest(query: str, document: str) -> bytes:
    """16-byte content hash of a (query, document) pair (length-prefixed, so no two pairs collide
    by concatenation)."""
    h = hashlib.blake2b(digest_size=16)
    for text in (query, document):
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


class GuideScoreCache:
    """Guide scores by (query text, document text) content, bounded in memory, optionally on disk.

    The in-memory part is an LRU of at most ``max_entries`` scores (16-byte key + a float each);
    ``path`` adds a SQLite file (written in one transaction per batch, so a killed run leaves it
    consistent) that survives across runs. ``namespace`` (the guide's identity: model, kind, max
    length) is part of every key, so two guides never share scores.
    """

    def __init__(
        self, max_entries: int = 2_000_000, path: str | Path | None = None, namespace: str = ""
    ):
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ConfigError(f"max_entries must be an integer >= 0, got {max_entries!r}")
        self.max_entries = max_entries
        self.namespace = namespace
        self._memory: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, score REAL)")
            self._db.commit()

    def _key(self, query: str, document: str) -> bytes:
        return _pair_digest(self.namespace + "\x00" + query, document)

    def __len__(self) -> int:
        return len(self._memory)

    def lookup(self, keys: list[bytes]) -> dict[int, float]:
        """Scores known for ``keys`` (position -> score)."""
        found: dict[int, float] = {}
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                score = self._memory.get(key)
                if score is None:
                    missing.append(i)
                else:
                    self._memory.move_to_end(key)
                    found[i] = score
        if self._db is not None and missing:
            for start in range(0, len(missing), 900):  # SQLite's bound-parameter limit
                chunk = missing[start : start + 900]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, score FROM scores WHERE key IN ({marks})",
                    [keys[i] for i in chunk],
                ).fetchall()
                by_key = dict(rows)
                for i in chunk:
                    if keys[i] in by_key:
                        found[i] = float(by_key[keys[i]])
            self._remember({keys[i]: found[i] for i in missing if i in found})
        return found

    def store(self, keys: list[bytes], scores: np.ndarray) -> None:
        entries = dict(zip(keys, (float(s) for s in scores)))
        self._remember(entries)
        if self._db is not None and entries:
            with self._db:  # one transaction: all or nothing
                self._db.executemany(
                    "INSERT OR REPLACE INTO scores VALUES (?, ?)", list(entries.items())
                )

    def _remember(self, entries: dict[bytes, float]) -> None:
        if not self.max_entries:
            return
        with self._lock:
            for key, score in entries.items():
                self._memory[key] = score
                self._memory.move_to_end(key)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass
class Plan:
    """The triage of one batch: which entries are masked already and which pairs the guide judges."""

    masked: torch.Tensor  # (B, C) bool: masked by text or by the student rule
    to_guide: torch.Tensor  # (B, C) bool: judged by the guide
    guide_rows: torch.Tensor  # (R,) rows whose positive the guide scores
    stats: GuideStats = field(default_factory=GuideStats)


def plan_batch(
    sims: torch.Tensor,
    query_ids: torch.Tensor,
    candidate_ids: torch.Tensor,
    anchor_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    guidance: Guidance,
) -> Plan:
    """Triage the candidates of one batch (see the module docstring).

    Args:
        sims: (B, C) student cosine similarities (detached) of each row's query side to every
            candidate; column ``i`` is row ``i``'s positive.
        query_ids: (B, C) text id of the query side of each entry (the anchor, or the positive in
            the positive-positive block).
        candidate_ids: (C,) text id of each candidate.
        anchor_ids, positive_ids: (B,) text ids of each row's anchor and positive.
    """
    import torch

    b, c = sims.shape
    device = sims.device
    rows = torch.arange(b, device=device)
    label = torch.zeros((b, c), dtype=torch.bool, device=device)
    label[rows, rows] = True
    # 1. by text: the anchor itself, the row's own query text, and known positives of the anchor
    n_texts = int(max(candidate_ids.max(), anchor_ids.max(), positive_ids.max())) + 1
    known = torch.unique(anchor_ids * n_texts + positive_ids)
    keys = anchor_ids[:, None] * n_texts + candidate_ids[None, :]
    by_text = torch.isin(keys, known)
    by_text |= candidate_ids[None, :] == anchor_ids[:, None]
    by_text |= candidate_ids[None, :] == query_ids
    by_text &= ~label
    undecided = ~label & ~by_text
    s_ap = sims[rows, rows]
    stats = GuideStats(batch_size=b, all_pairs=b * c, masked_by_text=int(by_text.sum()))
    stats.unfiltered_pairs = _distinct_pairs(query_ids, candidate_ids, undecided | label)
    if guidance.unfiltered:
        to_guide = undecided
        by_student = torch.zeros_like(undecided)
    else:
        eligible = undecided
        if guidance.similarity_threshold is not None:
            eligible = eligible & (sims >= guidance.similarity_threshold)
        stats.easy_negatives = int((undecided & ~eligible).sum())
        pool = eligible
        if guidance.hybrid_threshold is not None:
            pool = pool & (sims >= guidance.hybrid_threshold * s_ap[:, None])
        k = guidance.top_k(b)
        if k is not None and k < c:
            top = torch.topk(sims.masked_fill(~pool, -math.inf), k, dim=1).indices
            picked = torch.zeros_like(pool)
            picked.scatter_(1, top, True)
            pool = pool & picked
        to_guide = pool
        student = eligible & ~to_guide
        by_student = student & (sims > _threshold(s_ap, guidance)[:, None])
    guide_rows = torch.nonzero(to_guide.any(dim=1)).flatten()
    stats.masked_by_student = int(by_student.sum())
    guided = to_guide.clone()
    guided[guide_rows, guide_rows] = True  # the positives the guide scores
    stats.guide_pairs = _distinct_pairs(query_ids, candidate_ids, guided)
    return Plan(masked=by_text | by_student, to_guide=to_guide, guide_rows=guide_rows, stats=stats)


def _threshold(positive_scores: torch.Tensor, guidance: Guidance) -> torch.Tensor:
    """Scores above this are false negatives (GISTEmbed's rule, on whichever scale is given)."""
    if guidance.margin_strategy == "absolute":
        return positive_scores - guidance.margin
    return positive_scores - positive_scores.abs() * guidance.margin


def _distinct_pairs(
    query_ids: torch.Tensor, candidate_ids: torch.Tensor, where: torch.Tensor
) -> int:
    import torch

    n = int(max(query_ids.max(), candidate_ids.max())) + 1
    r, c = torch.nonzero(where, as_tuple=True)
    if r.numel() == 0:
        return 0
    return int(torch.unique(query_ids[r, c] * n + candidate_ids[c]).numel())


def guide_mask(
    plan: Plan,
    query_ids: torch.Tensor,
    candidate_ids: torch.Tensor,
    texts: list[str],
    score_pairs,
    cache: GuideScoreCache | None,
    guidance: Guidance,
) -> torch.Tensor:
    """Ask the guide about the planned pairs (each distinct pair once, the cache first) and return
    the full (B, C) mask: the plan's own masks plus the candidates the guide judges at least as
    relevant as the anchor's positive (``g(q, c) > threshold(g(a, p))``)."""
    import torch

    to_guide, rows = plan.to_guide, plan.guide_rows
    if rows.numel() == 0:
        return plan.masked
    r, c = torch.nonzero(to_guide, as_tuple=True)
    # the guided entries, then each guided row's positive (its own column)
    all_r = torch.cat([r, rows])
    all_c = torch.cat([c, rows])
    n = len(texts)
    keys = query_ids[all_r, all_c] * n + candidate_ids[all_c]
    unique, inverse = torch.unique(keys, return_inverse=True)
    pairs = [(texts[int(k) // n], texts[int(k) % n]) for k in unique.tolist()]
    scores = np.empty(len(pairs), dtype=np.float32)
    digests = [cache._key(q, d) for q, d in pairs] if cache is not None else []
    known = cache.lookup(digests) if cache is not None else {}
    for i, score in known.items():
        scores[i] = score
    todo = [i for i in range(len(pairs)) if i not in known]
    if todo:
        fresh = np.asarray(score_pairs([pairs[i] for i in todo]), dtype=np.float32)
        if fresh.shape != (len(todo),) or not np.all(np.isfinite(fresh)):
            raise ConfigError(
                f"the guide returned {fresh.shape} scores for {len(todo)} pairs"
                + ("" if fresh.shape != (len(todo),) else " with NaN or infinite values")
            )
        scores[todo] = fresh
        if cache is not None:
            cache.store([digests[i] for i in todo], fresh)
    plan.stats.cache_hits = len(known)
    plan.stats.reranker_calls = len(todo)
    values = torch.from_numpy(scores).to(to_guide.device)[inverse]
    entry_scores, positive_scores = values[: r.numel()], values[r.numel() :]
    row_threshold = torch.full((to_guide.shape[0],), math.inf, device=to_guide.device)
    row_threshold[rows] = _threshold(positive_scores, guidance)
    guided = torch.zeros_like(to_guide)
    guided[r, c] = entry_scores > row_threshold[r]
    plan.stats.masked_by_guide = int(guided.sum())
    return plan.masked | guided
