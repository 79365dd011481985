"""Fast pair tokenisation shared by the transformer backends.

Each distinct text is tokenised once (in Rust, in parallel, through the `tokenizers` backend) without
special tokens; pairs are then assembled from the cached ids with the model's own special-token
template, with the query capped and the document truncated (``only_second`` semantics). This gives the
same ids as ``tokenizer(query, document, truncation=...)`` but tokenises each query once per call
instead of once per pair, and never tokenises more of a huge document than can be scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from winnow.errors import ModelLoadError

# A document needs at most max_length tokens; we tokenise a prefix of this many characters per token
# and fall back to the whole text only when the prefix turns out to hold too few tokens.
_CHARS_PER_TOKEN_BOUND = 10
_MARGIN = 16


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around and between the two sequences, and their token-type ids."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    type_a: int
    type_b: int

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def encode_texts(backend, texts: list[str], limit: int) -> list[list[int]]:
    """Token ids of each text (no special tokens), at least the first ``limit`` of them exactly.

    ``backend`` is a ``tokenizers.Tokenizer`` with truncation and padding off. Only a prefix of a long
    text is tokenised (tokens past the limit could not be scored anyway); a prefix that comes out
    short of the limit (unusually long tokens) is redone on the whole text.
    """
    if not texts:
        return []
    cut = (limit + _MARGIN) * _CHARS_PER_TOKEN_BOUND
    heads = [t if len(t) <= cut else t[:cut] for t in texts]
    ids = [e.ids for e in backend.encode_batch(heads, add_special_tokens=False)]
    redo = [i for i, t in enumerate(texts) if len(t) > cut and len(ids[i]) < limit + _MARGIN]
    if redo:
        full = backend.encode_batch([texts[i] for i in redo], add_special_tokens=False)
        for i, e in zip(redo, full):
            ids[i] = e.ids
    return ids


class PairTokenizer:
    """Tokenises (query, document) pairs for a Hugging Face fast tokenizer."""

    def __init__(self, hf_tokenizer, max_length: int, max_query_length: int):
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelLoadError(
                f"{type(hf_tokenizer).__name__} is not a fast tokenizer; winnow needs the "
                "tokenizers-backed (tokenizer.json) version of the model's tokenizer"
            )
        from tokenizers import Tokenizer

        # A private copy: the shared tokenizer's truncation/padding state must not leak in or out.
        self.backend = Tokenizer.from_str(backend.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
        self.template = self._probe_template()
        self.max_length = max_length
        room = max_length - self.template.num_special
        if room < 2:
            raise ModelLoadError(f"max_length={max_length} leaves no room for a query and document")
        self.max_query_length = max(1, min(max_query_length, room - 1))

    def _probe_template(self) -> PairTemplate:
        merged = self.backend.encode("query", "document", add_special_tokens=True)
        seq = merged.sequence_ids
        ids, types = merged.ids, merged.type_ids
        pos_a = [i for i, s in enumerate(seq) if s == 0]
        pos_b = [i for i, s in enumerate(seq) if s == 1]
        if not pos_a or not pos_b or pos_a[-1] > pos_b[0]:
            raise ModelLoadError("cannot read the tokenizer's pair template (query, then document)")
        first_a, last_a, first_b, last_b = pos_a[0], pos_a[-1], pos_b[0], pos_b[-1]
        return PairTemplate(
            prefix=tuple(ids[:first_a]),
            middle=tuple(ids[last_a + 1 : first_b]),
            suffix=tuple(ids[last_b + 1 :]),
            prefix_types=tuple(types[:first_a]),
            middle_types=tuple(types[last_a + 1 : first_b]),
            suffix_types=tuple(types[last_b + 1 :]),
            type_a=types[first_a],
            type_b=types[first_b],
        )

    def encode_texts(self, texts: list[str], limit: int) -> list[list[int]]:
        return encode_texts(self.backend, texts, limit)

    def encode_pairs(
        self, pairs: list[tuple[str, str]]
    ) -> tuple[list[list[int]], list[list[int]], np.ndarray, np.ndarray]:
        """Input ids, token-type ids, lengths and truncation flags for each pair."""
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_index = {q: i for i, q in enumerate(queries)}
        d_index = {d: i for i, d in enumerate(docs)}
        room = self.max_length - self.template.num_special
        q_ids = self.encode_texts(queries, self.max_query_length)
        d_ids = self.encode_texts(docs, room)
        t = self.template
        input_ids, type_ids = [], []
        lengths = np.empty(len(pairs), dtype=np.int64)
        truncated = np.zeros(len(pairs), dtype=bool)
        for n, (q, d) in enumerate(pairs):
            qi, di = q_ids[q_index[q]], d_ids[d_index[d]]
            lq = min(len(qi), self.max_query_length)
            ld = min(len(di), room - lq)
            truncated[n] = lq < len(qi) or ld < len(di)
            input_ids.append([*t.prefix, *qi[:lq], *t.middle, *di[:ld], *t.suffix])
            type_ids.append(
                [
                    *t.prefix_types,
                    *([t.type_a] * lq),
                    *t.middle_types,
                    *([t.type_b] * ld),
                    *t.suffix_types,
                ]
            )
            lengths[n] = lq + ld + t.num_special
        return input_ids, type_ids, lengths, truncated


def pad_batch(
    sequences: list[list[int]], pad_value: int, left: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence; returns (ids, attention_mask) as int64 arrays."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_value, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if left:
            ids[row, width - len(seq) :] = seq
            mask[row, width - len(seq) :] = 1
        else:
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
    return ids, mask
