"""Pointwise LLM reranker: score = logit("yes") - logit("no") for the next token after the prompt.

On transformers, the prompt is assembled from token ids: the template's fixed pieces are tokenised
once, each distinct query and document once per call; documents are cut so that the prompt fits
``max_length``. Pairs of all queries are length-sorted into token-budget batches with left padding
(the shared engine, with its out-of-memory splitting), and only the last position's hidden state is
multiplied by the two LM-head rows the score needs. On Ollama, each prompt is one ``/api/generate``
request (see :mod:`winnow.rerankers.llm.ollama`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from winnow.errors import ConfigError
from winnow.rerankers._tokens import encode_texts, pad_batch
from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.rerankers.llm.hf_backend import (
    head_rows,
    input_device,
    last_position_logits,
    pad_id_of,
    shared_causal_lm,
    single_token_id,
)
from winnow.rerankers.llm.ollama import OllamaOptions
from winnow.rerankers.llm.prompts import (
    CHAT,
    DEFAULT_PRESET,
    PointwiseTemplate,
    chat_template_for,
    pointwise_template,
    preset_for_model,
)
from winnow.rerankers.options import RerankerOptions, option

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 4096
BACKENDS = ("hf", "ollama")


def model_length_limit(model, tokenizer) -> int | None:
    limits = [getattr(model.config, "max_position_embeddings", None)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 1_000_000:
        limits.append(int(tok_max))
    limits = [int(x) for x in limits if x]
    return min(limits) if limits else None


@dataclass(frozen=True)
class LLMPointwiseOptions(RerankerOptions, OllamaOptions):
    """Options of the ``llm-pointwise`` kind (the Ollama ones are read with ``backend="ollama"``)."""

    backend: str = option("hf", "hf (transformers) or ollama", must="'hf' or 'ollama'")
    template: str | None = option(
        None,
        "qwen3, bge-gemma, chat (the tokenizer's chat template) or a string with {query} and "
        "{document}; unset: the known reranker's preset, else chat for a tokenizer with a chat "
        "template, else qwen3",
    )
    instruction: str | None = option(None, "the {instruction} of the template (preset's default)")
    true_token: str | None = option(None, "the single token whose logit scores 'relevant'")
    false_token: str | None = option(
        "", "the single token of 'not relevant' (none: score with the true token alone)"
    )
    max_query_length: int | None = option(None, "tokens a query may use (half of max_length)")
    add_special_tokens: bool = option(True, "prepend the tokenizer's BOS (not with chat templates)")
    device_map: str | None = option(
        None, "accelerate device map (auto, balanced...) for a model larger than one device"
    )


class LLMPointwiseReranker(Reranker):
    """Yes/no LLM reranker (Qwen3-Reranker, bge-reranker-v2-gemma, an instruct model, your prompt).

    Options (:class:`LLMPointwiseOptions`): ``backend`` (``hf`` or ``ollama``), ``template``
    (``qwen3``, ``bge-gemma``, ``chat`` or a string with ``{query}``, ``{document}`` and optionally
    ``{instruction}``; when unset, chosen from the model: the preset of a known reranker by its name,
    else ``chat`` when the tokenizer has a chat template, else ``qwen3``), ``instruction``,
    ``true_token`` / ``false_token`` (single tokens; ``false_token=None`` scores with the true
    token's logit alone), ``max_query_length``, ``max_tokens``, ``max_batch_size``,
    ``show_progress``, ``device_map`` (accelerate); for Ollama also ``ollama_url``, ``timeout``,
    ``max_retries``, ``concurrency``, ``keep_alive``.
    """

    kind = "llm-pointwise"
    options_class = LLMPointwiseOptions

    def __init__(self, config: RerankerConfig):
        super().__init__(config)
        o = self.options
        self.backend = o.backend
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "ollama" and o.template == CHAT:
            raise ConfigError(
                "template='chat' needs the tokenizer, which backend='ollama' does not have; "
                "give a preset or a template string"
            )
        if self.backend == "ollama" and o.device_map is not None:
            raise ConfigError("device_map is an option of backend='hf', not of 'ollama'")
        # An explicit template is checked now; an unset one (or "chat") is chosen at load time,
        # when the tokenizer is known.
        self.template = None
        name = o.template or preset_for_model(config.model)
        if name is not None and name != CHAT:
            self.template = self._build_template(name)
        elif self.backend == "ollama":
            self.template = self._build_template(DEFAULT_PRESET)
        self.model = None
        self.tokenizer = None
        self.client = None
        self.uses_chat_template = False

    def _build_template(self, name: str | None, tokenizer=None) -> PointwiseTemplate:
        o = self.options
        if name == CHAT:
            template = chat_template_for(tokenizer, o.instruction, o.true_token, o.false_token)
        else:
            template = pointwise_template(name, o.instruction, o.true_token, o.false_token)
        # A yes/no difference is a log-odds: sigmoid of it is the probability of "yes".
        self.num_labels = 2 if template.false_token is not None else 1
        return template

    def score_identity(self) -> list[Any]:
        """The prompt actually used (chosen at load time when no template was given)."""
        if self.template is None:
            self.load()
        t = self.template
        return [
            "prompt",
            [t.prefix, t.middle, t.suffix, t.query_lead, t.document_lead],
            [t.true_token, t.false_token],
            self.uses_chat_template,
        ]

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        if self.backend == "ollama":
            from winnow.rerankers.llm.ollama import client_from_options

            self.client = client_from_options(self.config.model, self.options)
            self.client.check_model()
            return
        c, o = self.config, self.options
        self.model, self.tokenizer = shared_causal_lm(c.model, c.device, c.dtype, o.device_map)
        self.input_device = input_device(self.model, c.device)
        tok = self.tokenizer
        if self.template is None:
            chat = o.template == CHAT or bool(getattr(tok, "chat_template", None))
            self.template = self._build_template(CHAT if chat else DEFAULT_PRESET, tok)
            self.uses_chat_template = chat
        limit = model_length_limit(self.model, tok)
        self._max_length = int(c.max_length or min(limit or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH))
        if limit and self._max_length > limit:
            raise ConfigError(f"max_length={self._max_length} exceeds the model's limit of {limit}")
        t = self.template
        self.token_ids = [single_token_id(tok, t.true_token, "true_token")]
        if t.false_token is not None:
            self.token_ids.append(single_token_id(tok, t.false_token, "false_token"))
        self.rows, self.bias = head_rows(self.model, self.token_ids)
        from tokenizers import Tokenizer

        # A private copy: the shared tokenizer's truncation/padding state must not leak in or out.
        self.text_tokenizer = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        self.text_tokenizer.no_truncation()
        self.text_tokenizer.no_padding()
        self.pad = pad_id_of(tok)
        # The tokenizer's own leading special tokens (BOS), as tokenizer(prompt) would add them.
        # A chat template writes its own (as apply_chat_template(tokenize=True) does).
        with_special = tok("x", add_special_tokens=True)["input_ids"]
        plain = tok("x", add_special_tokens=False)["input_ids"]
        lead = with_special[: len(with_special) - len(plain)] if plain else []
        if not o.add_special_tokens or self.uses_chat_template:
            lead = []
        enc = self._encode_pieces
        self.prefix_ids = list(lead) + enc(t.prefix)
        self.middle_ids = enc(t.middle)
        self.suffix_ids = enc(t.suffix)
        fixed = len(self.prefix_ids) + len(self.middle_ids) + len(self.suffix_ids)
        room = self._max_length - fixed
        if room < 2:
            raise ConfigError(
                f"max_length={self._max_length} leaves no room for a query and a document after "
                f"the template's {fixed} tokens"
            )
        self.room = room
        max_query = int(o.max_query_length or self._max_length // 2)
        self.max_query_length = max(1, min(max_query, room - 1))

    def _encode_pieces(self, text: str) -> list[int]:
        return self.text_tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def _release(self) -> None:
        if self.client is not None:
            self.client.close()
        self.model = self.tokenizer = self.client = None

    @property
    def max_length(self) -> int:
        self.load()
        if self.backend == "ollama":
            return int(self.config.max_length or 0)
        return self._max_length

    # -- tokenisation ------------------------------------------------------------------------
    def _encode_texts(self, texts: list[str], limit: int) -> list[list[int]]:
        return encode_texts(self.text_tokenizer, texts, limit)

    def encode_pairs(
        self, pairs: list[tuple[str, str]]
    ) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
        """Prompt token ids, lengths and truncation flags for each pair (each text tokenised once)."""
        t = self.template
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_index = {q: i for i, q in enumerate(queries)}
        d_index = {d: i for i, d in enumerate(docs)}
        q_ids = self._encode_texts([t.query_lead + q for q in queries], self.max_query_length)
        d_ids = self._encode_texts([t.document_lead + d for d in docs], self.room)
        seqs: list[list[int]] = []
        lengths = np.empty(len(pairs), dtype=np.int64)
        truncated = np.zeros(len(pairs), dtype=bool)
        fixed = len(self.prefix_ids) + len(self.middle_ids) + len(self.suffix_ids)
        for n, (q, d) in enumerate(pairs):
            qi, di = q_ids[q_index[q]], d_ids[d_index[d]]
            lq = min(len(qi), self.max_query_length)
            ld = min(len(di), self.room - lq)
            truncated[n] = lq < len(qi) or ld < len(di)
            seqs.append([*self.prefix_ids, *qi[:lq], *self.middle_ids, *di[:ld], *self.suffix_ids])
            lengths[n] = fixed + lq + ld
        return seqs, lengths, truncated

    # -- scoring -----------------------------------------------------------------------------
    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        if self.backend == "ollama":
            from winnow.rerankers.llm.ollama import score_pointwise

            return score_pointwise(self.client, self.template, pairs, self.config.max_length)
        seqs, lengths, truncated = self.encode_pairs(pairs)
        device, dtype = self.input_device, self.config.dtype
        two = len(self.token_ids) == 2

        def forward(idx: np.ndarray) -> np.ndarray:
            ids, mask = pad_batch([seqs[i] for i in idx], self.pad, left=True)
            logits = last_position_logits(
                self.model, ids, mask, self.rows, self.bias, device, dtype
            )
            return logits[:, 0] - logits[:, 1] if two else logits[:, 0]

        scores = self._run_engine(lengths, forward)
        return PairScores(scores.astype(np.float32), truncated, lengths.astype(np.int32))
