"""Sentence embeddings on winnow's engine: the bi-encoder's model, run without ``SentenceTransformer.encode``.

A :class:`TextEncoder` holds one sentence-transformers model folder's parts, loaded from its files
(see ``_st_stack``): the fast tokenizer, the Hugging Face transformer and the stack after it (pooling,
Dense layers, normalisation). ``encode`` tokenises every text once (one batch call in Rust, only a
prefix of a long text), cuts the texts into length-sorted token-budget batches (``engine``), runs the
transformer (:meth:`TextEncoder._token_embeddings`, the one method a backend replaces), pools in float32
and writes each embedding at its caller's position. Prompts are handled as sentence-transformers does:
prepended to the text, and with ``include_prompt=False`` their tokens are left out of the pooling.

The numbers equal ``SentenceTransformer.encode(..., normalize_embeddings=True)`` in float32 (cosine
>= 0.99999 per text, tests/test_text_encoder.py); the time saved is sentence-transformers' own
tokenising, padding and per-batch overhead (benchmarks/bi_encoder_engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from winnow.rerankers._cuda import device_copier, load_pretrained
from winnow.rerankers._imports import heavy_imports
from winnow.rerankers._st_stack import Stack, UnsupportedStack, load_dense, pool, read_stack
from winnow.rerankers._tokens import encode_texts, pad_batch
from winnow.rerankers._torch import prepare_model

#: Name of the encoding path in cache keys; bump when the numbers it gives change.
ENGINE_NAME = "winnow-text-encoder-v1"

RunBatches = Callable[..., np.ndarray]


@dataclass(frozen=True)
class SingleTemplate:
    """Special tokens a tokenizer puts around one sequence."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.suffix)


def _single_template(backend) -> SingleTemplate:
    probe = backend.encode("winnow", add_special_tokens=True)
    own = [i for i, s in enumerate(probe.sequence_ids) if s == 0]
    if not own:
        raise UnsupportedStack("cannot read the tokenizer's single-sequence template")
    if any(t != 0 for t in probe.type_ids):
        raise UnsupportedStack("the tokenizer gives a single sequence non-zero token types")
    return SingleTemplate(tuple(probe.ids[: own[0]]), tuple(probe.ids[own[-1] + 1 :]))


def _lowercase_first(hf_tokenizer) -> None:
    """``do_lower_case``: put a Lowercase normaliser first, as sentence-transformers' Transformer does."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    backend = hf_tokenizer.backend_tokenizer
    normalizer = backend.normalizer
    if isinstance(normalizer, Lowercase) or (
        isinstance(normalizer, NormalizerSequence)
        and any(isinstance(n, Lowercase) for n in normalizer)
    ):
        return
    steps = [Lowercase()]
    if isinstance(normalizer, NormalizerSequence):
        steps += list(normalizer)
    elif normalizer is not None:
        steps.append(normalizer)
    backend.normalizer = NormalizerSequence(steps)


class TextEncoder:
    """One sentence-transformers model's tokenizer, transformer and head, run by winnow's engine.

    ``TextEncoder.load(folder, device, dtype)`` raises :class:`UnsupportedStack` when the folder's
    module stack is not one it reproduces (the bi-encoder then falls back to sentence-transformers).
    """

    engine = ENGINE_NAME

    def __init__(self, stack: Stack, tokenizer, model, device: str, dtype: str):
        from tokenizers import Tokenizer

        self.stack = stack
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.dtype = dtype
        # A private copy: the shared tokenizer's truncation/padding state must not leak in or out.
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.template = _single_template(self.backend)
        self.special_ids = set(tokenizer.all_special_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        limit = stack.max_seq_length
        if limit is None:
            limit = int(tokenizer.model_max_length)
            positions = getattr(model.config, "max_position_embeddings", None)
            if positions not in (None, -1):
                limit = min(limit, int(positions))
        self.max_seq_length = int(limit)
        self._dense = {
            i: load_dense(spec, device)
            for i, (step, spec) in enumerate(stack.head)
            if spec is not None
        }
        self._prompt_lengths: dict[str, int] = {}
        #: ``run(feeds) -> token embeddings`` of an ONNX Runtime / OpenVINO backend (numpy in and
        #: out, see ``rerankers.backends``); None: the torch model
        self.runner = None
        #: what the backend is (``BiEncoderReranker.backend_info``); None: torch
        self.backend_info = None
        hidden = int(model.config.hidden_size)
        dim = hidden * len(stack.pooling)
        for _step, spec in stack.head:
            if spec is not None:
                if spec.in_features != dim:
                    raise UnsupportedStack(
                        f"{spec.path}: Dense expects {spec.in_features} inputs, the pooling gives {dim}"
                    )
                dim = spec.out_features
        self.dimension = dim

    @classmethod
    def load(cls, path: str, device: str, dtype: str) -> TextEncoder:
        stack = read_stack(path)
        with heavy_imports():
            from transformers import AutoModel, AutoTokenizer

        kwargs = {} if stack.max_seq_length is None else {"model_max_length": stack.max_seq_length}
        tokenizer = AutoTokenizer.from_pretrained(stack.transformer_path, **kwargs)
        if getattr(tokenizer, "backend_tokenizer", None) is None:
            raise UnsupportedStack(f"{type(tokenizer).__name__} is not a fast tokenizer")
        if stack.do_lower_case:
            _lowercase_first(tokenizer)
        # on CUDA: FlashAttention-2 or SDPA (see _cuda); elsewhere the same call as ever
        model = load_pretrained(AutoModel, stack.transformer_path, device, dtype)
        if getattr(model.config, "is_decoder", False) or getattr(
            model.config, "is_encoder_decoder", False
        ):
            raise UnsupportedStack(f"{type(model).__name__} is not an encoder")
        return cls(stack, tokenizer, prepare_model(model, device, dtype), device, dtype)

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def parameters(self):
        """The weights: the transformer's, then the Dense layers' (as ``torch.nn.Module.parameters``)."""
        yield from self.model.parameters()
        for dense in self._dense.values():
            yield from dense.module.parameters()

    def identity(self) -> dict:
        """What the embeddings depend on besides the weights, dtype and max length."""
        return {"engine": self.engine, **self.stack.identity()}

    # -- tokens ------------------------------------------------------------------------------
    def resolve_prompt(self, prompt: str | None) -> str | None:
        """The prompt sentence-transformers would use: the one given, else the model's default."""
        return self.stack.default_prompt if prompt is None else prompt

    def prompt_length(self, prompt: str | None) -> int:
        """Tokens of the prompt left out of pooling (0 unless ``include_prompt`` is False)."""
        if not prompt or self.stack.include_prompt:
            return 0
        if prompt not in self._prompt_lengths:
            # as sentence-transformers counts it: the prompt tokenised alone, less a closing
            # special token
            t = self.template
            ids = [*t.prefix, *self.backend.encode(prompt, add_special_tokens=False).ids, *t.suffix]
            n = len(ids) - (1 if ids and ids[-1] in self.special_ids else 0)
            self._prompt_lengths[prompt] = n
        return self._prompt_lengths[prompt]

    def token_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Input ids of each text, special tokens included, truncated to ``max_length``."""
        room = max(0, max_length - self.template.num_special)
        t = self.template
        return [
            [*t.prefix, *ids[:room], *t.suffix] for ids in encode_texts(self.backend, texts, room)
        ]

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        """Tokens each text has (special tokens included), before truncation."""
        enc = self.backend.encode_batch(texts, add_special_tokens=True)
        return np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(texts))

    # -- the model ---------------------------------------------------------------------------
    def _token_embeddings(self, input_ids, attention_mask):
        """The transformer's last hidden state (batch, tokens, hidden); a backend replaces this."""
        if self.runner is not None:
            import torch

            feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
            return torch.from_numpy(self.runner(feeds))
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _batch_inputs(self, ids: list[list[int]], to_device):
        """Padded (input_ids, attention_mask) of one batch on the device (host work only);
        ``to_device`` is a ``_cuda.device_copier``."""
        padded, mask = pad_batch(ids, self.pad_id)
        return to_device(padded), to_device(mask)

    def _embed_batch(self, ids: list[list[int]], prompt_length: int) -> np.ndarray:
        inputs = self._batch_inputs(ids, device_copier(self.device))
        return self._embed_inputs(inputs, prompt_length)

    def _embed_inputs(self, inputs, prompt_length: int) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        input_ids, attention_mask = inputs
        with torch.inference_mode():
            tokens = self._token_embeddings(input_ids, attention_mask).float()
            emb = pool(tokens, attention_mask, self.stack.pooling, prompt_length)
            for i, (step, _) in enumerate(self.stack.head):
                emb = self._dense[i](emb) if step == "dense" else F.normalize(emb, p=2, dim=-1)
            emb = F.normalize(emb, p=2, dim=-1)  # the bi-encoder always normalises
        return emb.cpu().numpy()

    def encode(
        self,
        texts: list[str],
        *,
        prompt: str | None = None,
        max_length: int | None = None,
        run: RunBatches,
    ) -> np.ndarray:
        """L2-normalised float32 embeddings of ``texts`` (each given once), in their order.

        ``run(lengths, forward, prepare=...)`` is the batching engine (``Reranker._run_engine``)
        with the caller's token budget and look-ahead setting.
        """
        prompt = self.resolve_prompt(prompt)
        inputs = [prompt + t for t in texts] if prompt else texts
        limit = min(max_length or self.max_seq_length, self.max_seq_length)
        ids = self.token_ids(inputs, limit)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        skip = min(self.prompt_length(prompt), limit)

        to_device = device_copier(self.device)  # here, in the thread that runs the model

        def prepare(idx: np.ndarray):
            return self._batch_inputs([ids[i] for i in idx], to_device)

        def forward(inputs) -> np.ndarray:
            return self._embed_inputs(inputs, skip)

        return run(lengths, forward, prepare=prepare)
