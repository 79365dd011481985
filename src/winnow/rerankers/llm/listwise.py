"""Listwise LLM reranker: sliding windows over the candidate list, in the RankGPT / RankZephyr style.

The first ``top_k`` candidates (in the order they come in: the first stage's ranking) are reordered
by asking the model to rank windows of ``window`` passages, from the bottom of the list to the top,
each window ``stride`` positions above the last, so that good passages bubble up; ``passes`` repeats
the sweep. Two ways to read a window's order:

* ``mode="generate"`` — the model writes a permutation ``[2] > [1] > ...`` (greedy decoding), parsed
  forgivingly (:mod:`winnow.rerankers.llm.parsing`).
* ``mode="first"`` — FIRST (Reddy et al., 2024): one forward pass per window; passages are ordered by
  the logits of their identifiers (single-token letters ``A``..) as the first answer token.

Windows of different queries that are due at the same step go to the model as one batch. Scores are
ranks: the document at final position ``p`` (0-based) of ``n`` scores ``n - p``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from winnow.errors import ConfigError
from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.rerankers.llm.ollama import OllamaOptions
from winnow.rerankers.llm.parsing import parse_permutation
from winnow.rerankers.llm.prompts import identifiers, listwise_messages
from winnow.rerankers.options import RerankerOptions, option

logger = logging.getLogger(__name__)

MODES = ("generate", "first")


class ListwiseBackend(Protocol):
    """What the listwise reranker needs from a model; HF, Ollama and test backends implement it."""

    def generate_batch(self, messages: list[list[dict]], max_new_tokens: int) -> list[str]:
        """Greedy answer of each chat prompt."""
        ...

    def first_token_logits(
        self, messages: list[list[dict]], answer_prefix: str, labels: list[list[str]]
    ) -> list[np.ndarray]:
        """For each prompt, the logits of its ``labels`` as the first token after the prefix."""
        ...


def window_spans(count: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of the windows of one pass, bottom to top; the last one starts at 0.

    >>> window_spans(25, 20, 10)
    [(5, 25), (0, 15)]
    """
    if count < 2:
        return []
    spans, end = [], count
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= stride


def truncate_words(text: str, max_words: int) -> tuple[str, bool]:
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words), False
    return " ".join(words[:max_words]), True


@dataclass(frozen=True)
class LLMListwiseOptions(RerankerOptions, OllamaOptions):
    """Options of the ``llm-listwise`` kind (the Ollama ones are read with ``backend="ollama"``)."""

    backend: Any = option(  # noqa: RUF009 - option() returns a dataclasses.field
        "hf", "hf (transformers), ollama, or an object implementing ListwiseBackend"
    )
    mode: str = option("generate", "generate (a permutation) or first (first-token logits)")
    window: int = option(20, "passages per window")
    stride: int | None = option(None, "positions between windows (half the window)")
    passes: int = option(1, "sweeps over the list")
    top_k: int = option(100, "candidates reranked; the rest keep their order below")
    max_passage_words: int = option(100, "words of each passage shown to the model")
    max_new_tokens: int | None = option(None, "tokens generated per window (6 * window + 8)")
    chat_template: bool = option(True, "render prompts with the tokenizer's chat template (hf)")
    device_map: str | None = option(
        None, "accelerate device map (auto, balanced...) for a model larger than one device"
    )


class LLMListwiseReranker(Reranker):
    """Sliding-window listwise reranker on a causal LM (transformers or Ollama).

    Options: ``backend`` (``hf`` or ``ollama``), ``mode`` (``generate`` or ``first``),
    ``window`` (20), ``stride`` (half the window: 10), ``passes`` (1), ``top_k`` (100 candidates
    reranked; the rest keep their order below them), ``max_passage_words`` (100),
    ``max_new_tokens``,
    ``chat_template`` (HF: use the tokenizer's, default True), ``max_tokens``, ``max_batch_size``,
    ``device_map`` (accelerate, for a model larger than one device);
    Ollama options as for ``llm-pointwise``. ``backend`` may also be an object implementing
    :class:`ListwiseBackend`. ``stats`` counts windows, batches and parse failures. In the
    returned ``PairScores`` / ``RankedDocument``, ``truncated`` says a passage was cut to
    ``max_passage_words`` and ``num_tokens`` is the number of *words* of it the model was shown.
    """

    kind = "llm-listwise"
    score_type = "rank"
    options_class = LLMListwiseOptions

    def __init__(self, config: RerankerConfig, backend: ListwiseBackend | None = None):
        super().__init__(config)
        o = self.options
        self.mode = o.mode
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} is not one of {', '.join(MODES)}")
        self.window = o.window
        self.stride = o.stride if o.stride is not None else max(1, self.window // 2)
        self.passes = o.passes
        self.top_k = o.top_k
        self.max_passage_words = o.max_passage_words
        if self.window < 2 or not 1 <= self.stride <= self.window:
            raise ConfigError(
                f"window must be >= 2 and stride between 1 and window; got window={self.window}, "
                f"stride={self.stride}"
            )
        if self.passes < 1 or self.top_k < 1 or self.max_passage_words < 1:
            raise ConfigError("passes, top_k and max_passage_words must be >= 1")
        self.style = "letters" if self.mode == "first" else "numbers"
        identifiers(self.window, self.style)  # validates the window size for letters
        self.max_new_tokens = o.max_new_tokens or 6 * self.window + 8
        self.backend_name = o.backend
        if backend is None and not isinstance(self.backend_name, str):
            backend, self.backend_name = self.backend_name, "custom"  # an object given as option
        if backend is None and self.backend_name not in ("hf", "ollama"):
            raise ConfigError(f"backend={self.backend_name!r} is not one of hf, ollama")
        self.backend = backend
        self._given_backend = backend is not None
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._given_backend:
            return  # a backend given by the caller (tests, custom servers)
        c = self.config
        if self.backend_name == "ollama":
            from winnow.rerankers.llm.ollama import OllamaListwiseBackend, client_from_options

            client = client_from_options(c.model, self.options)
            client.check_model()
            self.backend = OllamaListwiseBackend(client)
            return
        from winnow.rerankers.llm.hf_backend import HFGenerationBackend, shared_causal_lm
        from winnow.rerankers.llm.pointwise import DEFAULT_MAX_LENGTH, model_length_limit

        model, tokenizer = shared_causal_lm(c.model, c.device, c.dtype, self.options.device_map)
        limit = model_length_limit(model, tokenizer) or DEFAULT_MAX_LENGTH
        self.backend = HFGenerationBackend(
            model, tokenizer, c.device, c.dtype, int(c.max_length or limit), dict(c.options)
        )
        if self.mode == "first":
            self.backend.identifier_token_ids(identifiers(self.window, "letters"))

    def _release(self) -> None:
        if not self._given_backend:
            self.backend = None

    @property
    def max_length(self) -> int:
        self.load()
        return int(getattr(self.backend, "max_length", self.config.max_length or 0))

    # -- scoring -----------------------------------------------------------------------------
    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        """Group pairs by query (first-seen order), rank each group as a list, scatter back."""
        groups: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(pairs):
            groups.setdefault(q, []).append(i)
        queries = list(groups)
        ranked = self._score_lists(queries, [[pairs[i][1] for i in groups[q]] for q in queries])
        scores = np.zeros(len(pairs), dtype=np.float32)
        truncated = np.zeros(len(pairs), dtype=bool)
        tokens = np.zeros(len(pairs), dtype=np.int32)
        for q, result in zip(queries, ranked):
            idx = np.array(groups[q])
            scores[idx], truncated[idx], tokens[idx] = (
                result.scores,
                result.truncated,
                result.num_tokens,
            )
        return PairScores(scores, truncated, tokens)

    def _score_lists(self, queries: list[str], documents: list[list[str]]) -> list[PairScores]:
        shown = [[truncate_words(d, self.max_passage_words) for d in docs] for docs in documents]
        orders = self.rerank_orders(queries, [[text for text, _ in s] for s in shown])
        out = []
        for order, s in zip(orders, shown):
            n = len(order)
            scores = np.empty(n, dtype=np.float32)
            scores[np.array(order, dtype=np.int64)] = n - np.arange(n, dtype=np.float32)
            truncated = np.array([cut for _, cut in s], dtype=bool)
            words = np.array([len(text.split()) for text, _ in s], dtype=np.int32)
            out.append(PairScores(scores, truncated, words))
        return out

    def rerank_orders(self, queries: list[str], passages: list[list[str]]) -> list[list[int]]:
        """The final order (indices into each query's passages) after all passes of all windows.

        Step ``i`` of every query that has one runs as a single batch, so queries share batches.
        """
        orders = [list(range(len(p))) for p in passages]
        plans = []
        for p in passages:
            spans = window_spans(min(len(p), self.top_k), self.window, self.stride)
            plans.append(spans * self.passes)
        steps = max((len(s) for s in plans), default=0)
        for step in range(steps):
            due = [q for q, plan in enumerate(plans) if step < len(plan)]
            windows = []
            for q in due:
                start, end = plans[q][step]
                windows.append(orders[q][start:end])
            new = self._rank_windows([queries[q] for q in due], due, passages, windows)
            for q, window, perm in zip(due, windows, new):
                start, end = plans[q][step]
                orders[q][start:end] = [window[i] for i in perm]
        return orders

    def _rank_windows(
        self,
        queries: list[str],
        query_index: list[int],
        passages: list[list[str]],
        windows: list[list[int]],
    ) -> list[list[int]]:
        """One batch of windows (one per query) -> a permutation of each window's positions."""
        messages = [
            listwise_messages(q, [passages[qi][i] for i in w], self.style)
            for q, qi, w in zip(queries, query_index, windows)
        ]
        perms: list[list[int]] = []
        failures = 0
        if self.mode == "first":
            labels = [identifiers(len(w), "letters") for w in windows]
            logits = self.backend.first_token_logits(messages, "[", labels)
            for row in logits:
                # Highest logit first; ties keep the current order (stable sort).
                perms.append([int(i) for i in np.argsort(-np.asarray(row), kind="stable")])
        else:
            answers = self.backend.generate_batch(messages, self.max_new_tokens)
            for answer, w in zip(answers, windows):
                perm, ok = parse_permutation(answer, len(w), "numbers")
                if not ok:
                    failures += 1
                    logger.debug("unparseable listwise answer %r; window left as it was", answer)
                perms.append(perm)
        with self._stats_lock:
            self.stats["windows"] += len(windows)
            self.stats["batches"] += 1
            self.stats["parse_failures"] += failures
        return perms
