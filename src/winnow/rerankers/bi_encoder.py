"""Bi-encoder reranker and text encoder: a sentence-transformers model, score = cosine similarity.

Each distinct query and document is embedded once, in token-budget batches sorted by length, by
winnow's own encoder (``text_encoder.TextEncoder``: the model folder's module stack read from its
files and run on the engine, embeddings equal to ``SentenceTransformer.encode`` within float
rounding). A stack it cannot reproduce (say a module other than Transformer, Pooling, Dense,
Normalize, Dropout) goes through ``SentenceTransformer.encode`` itself, batch by batch, with one log
line; ``encoder="sentence-transformers"`` asks for that path. A bounded memo keeps embeddings for
later calls (see ``EmbeddingMemo``). The same object is the encoder behind dense retrieval
(``encode_queries`` / ``encode_documents``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np

from winnow.errors import ConfigError
from winnow.rerankers._imports import heavy_imports
from winnow.rerankers._torch import from_pretrained_kwargs, quantize_int8
from winnow.rerankers.backends import BackendOptions, BackendRequest
from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.rerankers.cache import EMBEDDINGS, MODELS, EmbeddingMemo, model_lock
from winnow.rerankers.options import option
from winnow.rerankers.text_encoder import TextEncoder, UnsupportedStack

logger = logging.getLogger(__name__)

#: Default bound of the embedding memo shared by every bi-encoder instance of one model (MiB).
DEFAULT_MEMO_MB = 256
#: Ways to run the model: winnow's engine (falls back to the other where it cannot) or
#: ``SentenceTransformer.encode``.
ENCODERS = ("winnow", "sentence-transformers")


def load_encoder(path: str, device: str, dtype: str, choice: str = "winnow"):
    """winnow's ``TextEncoder`` for ``path``, or a ``SentenceTransformer`` when asked for or when the
    folder's module stack is not one the engine reproduces (said in one log line)."""
    if choice == "winnow":
        try:
            return TextEncoder.load(path, device, dtype)
        except UnsupportedStack as exc:
            logger.info("%s: %s; encoding through SentenceTransformer.encode", path, exc)
    return load_sentence_transformer(path, device, dtype)


def load_exported_encoder(path: str, request: BackendRequest, limits: tuple[int, int], name: str):
    """winnow's ``TextEncoder`` whose transformer runs on ONNX Runtime or OpenVINO: exported once
    (cached), for int8 quantised and guarded (see ``rerankers.backends``); pooling and the head
    stay in winnow."""
    from winnow.rerankers._tokens import pad_batch
    from winnow.rerankers.backends import load_exported
    from winnow.rerankers.engine import plan_batches, run_batches

    try:
        encoder = TextEncoder.load(path, "cpu", "float32")
    except UnsupportedStack as exc:
        raise ConfigError(
            f"{name}: backend={request.backend!r} runs winnow's own encoder, which cannot reproduce "
            f"this model's module stack ({exc}); use backend='torch'"
        ) from exc

    def feeds(texts: list[str]):
        ids = encoder.token_ids(texts, encoder.max_seq_length)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        for idx in plan_batches(lengths, *limits):
            padded, mask = pad_batch([ids[i] for i in idx], encoder.pad_id)
            yield {"input_ids": padded, "attention_mask": mask}

    def outputs(run, texts: list[str]) -> np.ndarray:
        encoder.runner = run
        try:
            return encoder.encode(
                texts,
                # serial (no look-ahead thread): the guard's own runs, on the CPU
                run=lambda lengths, forward, prepare: run_batches(
                    lengths,
                    lambda idx: forward(prepare(idx)),
                    max_tokens=limits[0],
                    max_batch_size=limits[1],
                )[0],
            )
        finally:
            encoder.runner = None

    runner = load_exported(
        request,
        family="text-encoder",
        model_dir=encoder.stack.transformer_path,
        module_factory=lambda: _token_embeddings_module(encoder.model),
        input_names=("input_ids", "attention_mask"),
        example=next(iter(feeds(["winnow", "a longer text to embed"]))),
        export_options={},
        feeds=feeds,
        outputs=outputs,
        metric="cosine",
        name=name,
    )
    encoder.runner = runner.run
    encoder.backend_info = runner.info
    return encoder


def _token_embeddings_module(model):
    import torch

    class TokenEmbeddings(torch.nn.Module):
        """The transformer as ``forward(input_ids, attention_mask) -> last hidden state``."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return TokenEmbeddings(model)


def load_sentence_transformer(path: str, device: str, dtype: str):
    with heavy_imports():
        from sentence_transformers import SentenceTransformer

    kwargs = {} if dtype in ("float32", "int8") else {"model_kwargs": from_pretrained_kwargs(dtype)}
    model = SentenceTransformer(path, device=device, **kwargs)
    model.eval()
    if dtype == "int8":
        model = quantize_int8(model)
    return model


@dataclass(frozen=True)
class BiEncoderOptions(BackendOptions):
    """Options of the ``bi-encoder`` kind."""

    query_prompt: str | None = option(None, "prefix of every query, e.g. 'query: ' for E5")
    document_prompt: str | None = option(None, "prefix of every document, e.g. 'passage: '")
    memo_mb: float = option(
        DEFAULT_MEMO_MB,
        "bound of the embedding memo in MiB (0: no memo)",
        must="a number of MiB >= 0 (0: no memo)",
    )
    encoder: str = option(
        "winnow",
        "winnow (the engine; SentenceTransformer.encode for a module stack it cannot reproduce) "
        "or sentence-transformers",
        must="winnow or sentence-transformers",
    )
    overlap: bool | None = option(
        None, "prepare the next batch on a background thread while one runs (default: on CUDA)"
    )


class BiEncoderReranker(Reranker):
    """Embeds queries and documents separately; the score of a pair is their cosine similarity.

    Options: ``query_prompt`` / ``document_prompt`` (prefixes such as ``"query: "`` for E5 models,
    given to the model as sentence-transformers' ``prompt``: with ``include_prompt=False`` pooling
    their tokens are left out), ``max_tokens``, ``max_batch_size``, ``show_progress``, ``memo_mb``
    (bound of the embedding memo, default 256 MiB; 0 turns it off), ``encoder`` (``"winnow"``, the
    default, or ``"sentence-transformers"``), ``overlap`` (winnow's engine: prepare the next batch
    on a background thread while one runs; default on CUDA only), ``backend`` (``torch``,
    ``onnx`` or ``openvino``, with ``calibration``, ``guard``, ``export_dir``, ``threads``: see
    :mod:`winnow.rerankers.backends`).

    Embeddings are remembered per (model, device, dtype, max length) across instances and calls, so a
    rerank stage after dense retrieval over the same corpus does not embed the documents again.
    """

    kind = "bi-encoder"
    options_class = BiEncoderOptions

    def __init__(self, config: RerankerConfig):
        super().__init__(config)
        self.model = None
        self.memo: EmbeddingMemo | None = None

    def _load(self) -> None:
        c = self.config
        choice = c.option("encoder", "winnow")
        if choice not in ENCODERS:
            raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, got {choice!r}")
        request = BackendRequest.from_config(c)
        key = ("bi-encoder", c.model, c.device, c.dtype, choice)
        if request.backend == "torch":
            self.model = MODELS.get_or_create(
                key, lambda: load_encoder(c.model, c.device, c.dtype, choice)
            )
        else:
            if choice != "winnow":
                raise ConfigError(
                    f"backend={request.backend!r} runs winnow's encoder; encoder='{choice}' "
                    "runs torch only"
                )
            from winnow.rerankers.engine import batch_limits

            limits = batch_limits(dict(c.options), c.device)
            key = (*key, *request.cache_part)
            self.model = MODELS.get_or_create(
                key, lambda: load_exported_encoder(c.model, request, limits, self.name)
            )
        model_max = int(self.model.max_seq_length or 512)
        self._max_length = min(int(c.max_length), model_max) if c.max_length else model_max
        memo_mb = c.option("memo_mb", DEFAULT_MEMO_MB)
        if isinstance(memo_mb, bool) or not isinstance(memo_mb, (int, float)) or memo_mb < 0:
            raise ConfigError(f"memo_mb must be a number of MiB >= 0 (0: no memo), got {memo_mb!r}")
        self.memo = EMBEDDINGS.get_or_create(
            (*key, self._max_length, memo_mb),
            lambda: EmbeddingMemo(int(memo_mb * 2**20)),
        )

    def _release(self) -> None:
        self.model = None
        self.memo = None

    @property
    def uses_engine(self) -> bool:
        """Whether embeddings come from winnow's engine (else from ``SentenceTransformer.encode``)."""
        self.load()
        return isinstance(self.model, TextEncoder)

    def embedding_identity(self) -> dict:
        """What the embeddings depend on besides the weights, dtype, max length and prompts: the
        encoding path and, on the engine, the module stack it reproduces (for cache keys).

        Read from the model folder's files, without loading the model (a cached search is read
        back without it); a hub model not downloaded yet is loaded (downloaded) first."""
        from pathlib import Path

        from winnow.rerankers._st_stack import read_stack

        c = self.config
        if c.option("encoder", "winnow") == "winnow":
            if not Path(c.model).is_dir():
                self.load()
                if isinstance(self.model, TextEncoder):
                    return {**self.model.identity(), **self._backend_identity()}
            else:
                try:
                    stack = read_stack(c.model)
                except UnsupportedStack:
                    pass
                else:
                    return {
                        "engine": TextEncoder.engine,
                        **stack.identity(),
                        **self._backend_identity(),
                    }
        import sentence_transformers

        return {"engine": "sentence-transformers", "version": sentence_transformers.__version__}

    def _backend_identity(self) -> dict:
        """The backend's part of the identity: empty for torch (keys made before backends stay)."""
        backend = self.config.option("backend", "torch")
        if backend == "torch":
            return {}
        sample = self.config.option("calibration")
        digest = None if sample is None or self.config.dtype != "int8" else sample.digest
        return {"backend": backend, "calibration": digest}

    @property
    def backend_info(self) -> dict:
        """Backend, dtype asked and used, export folder and int8 guard figures."""
        self.load()
        info = getattr(self.model, "backend_info", None)
        if info is None:
            return {"backend": "torch", "dtype": self.config.dtype, "dtype_used": self.config.dtype}
        return dict(info)

    def score_identity(self) -> list:
        """Scores depend on the encoding path too (see ``embedding_identity``)."""
        return [self.embedding_identity()]

    @property
    def max_length(self) -> int:
        self.load()
        return self._max_length

    def document_window(self) -> int:
        """Tokens of document text the model reads: ``max_length`` less its special tokens and
        the document prompt's tokens. A window this long is embedded whole, whatever the query."""
        self.load()
        tokenizer = self.model.tokenizer
        specials = len(tokenizer("", add_special_tokens=True, verbose=False)["input_ids"])
        prompt = self.config.option("document_prompt")
        used = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
        return max(1, self._max_length - specials - used)

    @property
    def dimension(self) -> int:
        self.load()
        get = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get())

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        """Tokens each text has (special tokens included), before truncation."""
        if isinstance(self.model, TextEncoder):
            return self.model.token_lengths(texts)
        tokenizer = self.model.tokenizer
        enc = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)[
            "input_ids"
        ]
        return np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(texts))

    def encode(
        self, texts: list[str], *, prompt: str | None = None, show_progress: bool | None = None
    ) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (duplicates embedded once)."""
        self.load()
        if prompt:
            texts = [prompt + t for t in texts]  # the memo's keys: what the model reads
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        unique = list(dict.fromkeys(texts))
        known = self.memo.lookup(unique)
        todo = [t for i, t in enumerate(unique) if i not in known]
        skip = len(prompt) if prompt else 0
        fresh = None
        if todo:
            with model_lock(self.config):  # one model call at a time (see cache.model_lock)
                fresh = self._embed([t[skip:] for t in todo], prompt, show_progress)
        if fresh is not None:
            self.memo.store(todo, fresh)
        if not known:
            emb = fresh
        else:
            emb = np.empty((len(unique), next(iter(known.values())).shape[0]), dtype=np.float32)
            for i, row in known.items():
                emb[i] = row
            if fresh is not None:
                emb[[i for i in range(len(unique)) if i not in known]] = fresh
        position = {t: i for i, t in enumerate(unique)}
        return emb[[position[t] for t in texts]]

    def _embed(
        self, unique: list[str], prompt: str | None, show_progress: bool | None
    ) -> np.ndarray:
        """Run the model on distinct texts (``prompt`` before each), in token-budget batches
        sorted by length."""
        run = partial(self._run_engine, desc="encoding", progress=show_progress)
        if isinstance(self.model, TextEncoder):
            return self.model.encode(unique, prompt=prompt, max_length=self._max_length, run=run)
        model = self.model
        lengths = np.minimum(
            self.token_lengths([prompt + t for t in unique] if prompt else unique), self._max_length
        )
        old_max = model.max_seq_length
        model.max_seq_length = min(self._max_length, old_max or self._max_length)

        def forward(idx: np.ndarray) -> np.ndarray:
            emb = model.encode(
                [unique[i] for i in idx],
                prompt=prompt,
                batch_size=len(idx),
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            return emb.float().cpu().numpy()

        try:
            return run(lengths, forward)
        finally:
            model.max_seq_length = old_max

    def remember_documents(self, documents: list[str], embeddings: np.ndarray) -> None:
        """Seed the memo with document embeddings this model made earlier (e.g. read from a cache).

        Skipped when they would not fit in the memo: they would only push each other out.
        """
        self.load()
        if self.memo.max_bytes < np.asarray(embeddings).nbytes:
            return
        prompt = self.config.option("document_prompt")
        texts = [prompt + t for t in documents] if prompt else list(documents)
        self.memo.store(texts, np.asarray(embeddings, dtype=np.float32))

    def encode_queries(self, queries: list[str], **kwargs) -> np.ndarray:
        return self.encode(queries, prompt=self.config.option("query_prompt"), **kwargs)

    def encode_documents(self, documents: list[str], **kwargs) -> np.ndarray:
        return self.encode(documents, prompt=self.config.option("document_prompt"), **kwargs)

    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_pos = {q: i for i, q in enumerate(queries)}
        d_pos = {d: i for i, d in enumerate(docs)}
        qe = self.encode_queries(queries)
        de = self.encode_documents(docs)
        qi = np.fromiter((q_pos[q] for q, _ in pairs), dtype=np.int64, count=len(pairs))
        di = np.fromiter((d_pos[d] for _, d in pairs), dtype=np.int64, count=len(pairs))
        scores = np.einsum("ij,ij->i", qe[qi], de[di]).astype(np.float32)
        d_len = self.token_lengths(docs)[di]
        q_len = self.token_lengths(queries)[qi]
        truncated = (d_len > self._max_length) | (q_len > self._max_length)
        return PairScores(scores, truncated, np.minimum(d_len, self._max_length).astype(np.int32))
