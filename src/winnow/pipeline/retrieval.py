"""First-stage retrieval stages: BM25, dense and ColBERT retrieval over the context's corpus.

The retrievers themselves live in :mod:`winnow.retrieval`; these stages index the corpus once per
context (shared by every system of an experiment) and, with a cache folder, reuse the index and
the document embeddings the retrievers keep on disk.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from winnow._fs import read_json_entry, write_json_atomic
from winnow.defaults import DEFAULT_MODEL as DEFAULT_DENSE_MODEL
from winnow.errors import ConfigError
from winnow.pipeline.base import Context, Stage, StageTiming
from winnow.types import Run

logger = logging.getLogger(__name__)


class Retriever(Stage):
    """Base of first-stage retrieval stages: builds the retriever, indexes once, searches.

    The incoming run (if any) is ignored: a retriever ranks the whole corpus for every query.
    """

    #: The name the stage's cache entries are filed under (None: its class's name). A stage run
    #: on another engine (``winnow.distributed``) keeps its local twin's, so both share entries.
    cache_name: str | None = None

    def __init__(self, top_k: int = 1000):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = top_k

    def _key(self) -> tuple:
        """What identifies the index (not top_k: one index serves every depth)."""
        raise NotImplementedError

    def _build(self, ctx: Context) -> Any:
        """A fresh, un-indexed retriever."""
        raise NotImplementedError

    def _identity(self, built: Any) -> list[Any]:
        """Everything besides corpus, queries and top_k that the results depend on."""
        raise NotImplementedError

    def _built(self, ctx: Context) -> Any:
        key = ("built", *self._key(), str(ctx.cache_dir))
        if key not in ctx.memo:
            ctx.memo[key] = self._build(ctx)
        return ctx.memo[key]

    def retriever(self, ctx: Context) -> Any:
        """The retriever with the context's corpus indexed (built and indexed once per context)."""
        key = ("retriever", *self._key(), str(ctx.cache_dir))
        if key not in ctx.memo:
            retriever = self._built(ctx)
            with ctx.timed(self.label, "index") as record:
                retriever.index(ctx.dataset.corpus)
            parts = dict(getattr(retriever, "timings", {}) or {})
            record.cached = bool(parts.pop("cache_hit", 0.0))  # a flag (1.0 / 0.0), not seconds
            record.parts = parts
            ctx.memo[key] = retriever
        return ctx.memo[key]

    def _cache_path(self, queries: Mapping[str, str], ctx: Context) -> Path | None:
        if ctx.cache_dir is None:
            return None
        from winnow import __version__

        h = hashlib.sha256()
        name = self.cache_name or type(self).__name__
        identity = [name, __version__, self._identity(self._built(ctx)), self.top_k]
        h.update(json.dumps(identity, default=str).encode())
        h.update(ctx.corpus_fingerprint().encode())
        h.update(json.dumps(list(queries.items())).encode())
        return ctx.cache_dir / "search" / f"{h.hexdigest()}.json"

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        """The top ``top_k`` of every query.

        Within one context the same search is done once (``bm25`` and ``hybrid`` share it); with
        a cache folder the result is also kept on disk under a sha256 of the retriever's settings
        (model files for dense), the corpus, the queries and ``top_k``, and a later run reads it
        back without loading the index or the model.
        """
        key = ("search", *self._key(), str(ctx.cache_dir), self.top_k, tuple(queries.items()))
        if key in ctx.memo:
            ctx.timings.append(StageTiming(self.label, "retrieve", 0.0, len(queries), cached=True))
        else:
            path = self._cache_path(queries, ctx)
            started = time.perf_counter()
            result = read_json_entry(path)
            if result is not None:
                seconds = time.perf_counter() - started
                ctx.timings.append(
                    StageTiming(self.label, "retrieve", seconds, len(queries), cached=True)
                )
            else:
                retriever = self.retriever(ctx)  # indexing is timed on its own
                with ctx.timed(self.label, "retrieve", len(queries)) as record:
                    result = retriever.search(dict(queries), top_k=self.top_k)
                    if path is not None:
                        write_json_atomic(path, result)
                record.parts = dict(getattr(retriever, "timings", {}) or {})
            ctx.memo[key] = result
        return {qid: dict(ranking) for qid, ranking in ctx.memo[key].items()}


class BM25(Retriever):
    """BM25 over title + text (bm25s; Lucene variant, English stemming and stopwords by default)."""

    def __init__(
        self,
        top_k: int = 1000,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
    ):
        super().__init__(top_k)
        self.params = {
            "k1": k1,
            "b": b,
            "method": method,
            "stemmer": stemmer,
            "stopwords": stopwords,
        }
        self.label = "bm25"

    def _key(self) -> tuple:
        return ("bm25", tuple(sorted(self.params.items())))

    def _identity(self, built: Any) -> list[Any]:
        return ["bm25", built.params()]

    def _build(self, ctx: Context) -> Any:
        from winnow.retrieval import BM25Index

        return BM25Index(**self.params, cache_dir=ctx.cache_dir)


#: The bi-encoder options a ``Dense`` stage passes on: its inference backend's and the encoder.
DENSE_BACKEND_OPTIONS = ("backend", "calibration", "guard", "export_dir", "threads", "encoder")


def check_backend_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``Dense``'s backend options, checked (unknown names refused, the valid ones listed)."""
    from winnow.rerankers.bi_encoder import BiEncoderOptions
    from winnow.rerankers.options import check_options

    for key in options:
        if key not in DENSE_BACKEND_OPTIONS:
            raise ConfigError(
                f"unknown option {key!r} for a dense stage; valid: {', '.join(DENSE_BACKEND_OPTIONS)}"
            )
    return check_options("bi-encoder", BiEncoderOptions, options)


class Dense(Retriever):
    """Exact dense retrieval with a sentence-transformers model (cosine similarity).

    With ``passages`` (MaxP) documents longer than the model's input are embedded as overlapping
    windows of ``window`` tokens every ``stride`` tokens and scored by their best window
    (:mod:`winnow.retrieval.passages`; defaults: the model's whole input, 25% overlap).
    ``options`` are the bi-encoder's inference-backend options (``backend``, ``calibration``,
    ``guard``, ``export_dir``, ``threads``: :mod:`winnow.rerankers.backends`), as a spec writes
    them: ``dense:MODEL?backend=onnx&dtype=int8&calibration=texts.jsonl``.
    """

    def __init__(
        self,
        model: str = DEFAULT_DENSE_MODEL,
        top_k: int = 1000,
        *,
        device: str | None = None,
        dtype: str | None = None,
        passages: bool = False,
        window: int | None = None,
        stride: int | None = None,
        **options: Any,
    ):
        from winnow.retrieval.passages import PassageSettings

        super().__init__(top_k)
        self.options = check_backend_options(options)
        if not isinstance(passages, bool):
            raise ConfigError(f"passages must be True or False, got {passages!r}")
        if not passages and (window is not None or stride is not None):
            raise ConfigError("window and stride apply with passages=True only")
        self.model = model
        self.device = device
        self.dtype = dtype
        self.passages = PassageSettings(window, stride) if passages else None
        if self.passages is None:
            self.label = "dense" if model == DEFAULT_DENSE_MODEL else f"dense:{model}"
        else:
            self.label = "maxp" if model == DEFAULT_DENSE_MODEL else f"maxp:{model}"
            given = [f"{k}={v}" for k, v in (("window", window), ("stride", stride)) if v]
            if given:
                self.label += "?" + "&".join(given)
        if self.options:  # the backend in the label: a run made on onnx is told from torch's
            shown = [f"{k}={v}" for k, v in self.options.items() if k != "calibration"]
            if dtype is not None:
                shown.append(f"dtype={dtype}")
            self.label += ("&" if "?" in self.label else "?") + "&".join(shown)

    def _key(self) -> tuple:
        backend = tuple(sorted((k, repr(v)) for k, v in self.options.items()))
        if self.passages is None:
            return ("dense", self.model, self.device, self.dtype, *backend)
        p = self.passages
        return (
            "dense",
            self.model,
            self.device,
            self.dtype,
            "passages",
            p.window,
            p.stride,
            *backend,
        )

    def _identity(self, built: Any) -> list[Any]:
        from winnow.pipeline.rerank import reranker_identity

        identity = ["dense", reranker_identity(built.encoder)]
        if self.passages is not None:
            from winnow.retrieval.dense import PASSAGE_SPLITTER

            # the settings as given: the defaults follow from the model files, already in the
            # identity, so a cached search is read back without loading the model
            p = self.passages
            identity.append(["passages", p.window, p.stride, PASSAGE_SPLITTER])
        return identity

    def _index_kwargs(self, ctx: Context) -> dict[str, Any]:
        """The :class:`~winnow.retrieval.DenseIndex` keywords of this stage in ``ctx`` (its
        engine twin, ``winnow.distributed.DaftDense``, builds its index from the same)."""
        from winnow.rerankers.backends.calibration import needs_calibration, sample_from_collection

        p = self.passages
        options = dict(self.options)
        if needs_calibration(options.get("backend"), self.dtype, options.get("calibration")):
            # static int8 with no sample given: calibrate on the collection's own texts (seeded)
            options["calibration"] = sample_from_collection(
                ctx.dataset.corpus,
                list(ctx.dataset.queries.values()),
                f"the documents and queries of {ctx.dataset.name!r}",
            )
            logger.info("%s: int8 calibrated on %s", self.label, options["calibration"])
        return dict(
            cache_dir=ctx.cache_dir,
            device=self.device,
            dtype=self.dtype,
            show_progress=ctx.progress,
            passages=p is not None,
            window=None if p is None else p.window,
            stride=None if p is None else p.stride,
            **options,
        )

    def _build(self, ctx: Context) -> Any:
        from winnow.retrieval import DenseIndex

        return DenseIndex(self.model, **self._index_kwargs(ctx))


class ColBERT(Retriever):
    """Late-interaction retrieval: a ColBERT model's token vectors in a ``plaid`` or ``exact``
    multi-vector index (``auto``, the default: exact below 4,096 documents, else plaid), MaxSim
    search (:class:`winnow.retrieval.colbert.ColBERTIndex`).

    ``options`` are the ``late-interaction`` kind's options (``backbone``, ``length_normalize``,
    ``max_tokens``...) and the loader's (``max_length``); ``index_options`` the index's knobs.
    """

    def __init__(
        self,
        model: str = DEFAULT_DENSE_MODEL,
        top_k: int = 1000,
        *,
        device: str | None = None,
        dtype: str | None = None,
        index: str = "auto",
        index_options: Mapping[str, Any] | None = None,
        label: str | None = None,
        **options: Any,
    ):
        from winnow.retrieval.colbert import index_option_types

        super().__init__(top_k)
        index_option_types(index)  # refuses an unknown index kind now, not when the stage runs
        from winnow.rerankers.hub import resolve_model_path
        from winnow.rerankers.late_interaction import check_checkpoint

        path = resolve_model_path(model)
        if Path(path).is_dir():  # and a model that is no ColBERT (without backbone=true)
            check_checkpoint(path, options.get("backbone"))
        self.model = model
        self.device = device
        self.dtype = dtype
        self.index = index
        self.index_options = dict(index_options or {})
        self.options = dict(options)
        self.label = label or ("colbert" if model == DEFAULT_DENSE_MODEL else f"colbert:{model}")

    @classmethod
    def from_spec(
        cls, spec: str, *, device: str | None = None, dtype: str | None = None
    ) -> ColBERT:
        """The stage ``colbert:SPEC`` names: ``MODEL[?KEY=VALUE&...]`` where a KEY is ``index``
        (``auto``, ``plaid`` or ``exact``), a knob of that index (``nprobe``, ``ndocs``, ``nbits``...) or an
        option of the ``late-interaction`` kind (``backbone``, ``length_normalize``...)."""
        from winnow.rerankers.late_interaction import LateInteractionReranker
        from winnow.rerankers.options import parse_text_options
        from winnow.rerankers.registry import parse_model_ref
        from winnow.retrieval.colbert import index_option_types, parse_index_options

        ref = parse_model_ref(spec)
        if ref.kind is not None:
            raise ConfigError(
                f"colbert:{spec}: the colbert stage takes a model, not a kind ({ref.kind}:)"
            )
        text = dict(ref.options)
        index = text.pop("index", "auto")
        knob_names = set(index_option_types(index))
        knobs = parse_index_options(index, {k: v for k, v in text.items() if k in knob_names})
        rest = {k: v for k, v in text.items() if k not in knob_names}
        try:
            options = parse_text_options(
                LateInteractionReranker.kind, LateInteractionReranker.options_class, rest
            )
        except ConfigError as exc:
            raise ConfigError(
                f"colbert:{spec}: {exc}; or index, or a knob of the "
                f"{'plaid' if index == 'auto' else index} index: "
                f"{', '.join(sorted(knob_names))}"
            ) from None
        options.setdefault("device", device)
        options.setdefault("dtype", dtype)
        short = ref.model == DEFAULT_DENSE_MODEL and not text
        return cls(
            ref.model,
            index=index,
            index_options=knobs,
            label="colbert" if short else f"colbert:{spec}",
            **options,
        )

    def cut_to(self, k: int) -> ColBERT:
        """``colbert % k``: a copy that searches the index for the top ``k`` only (PLAID then
        scores fewer candidates); the index itself is shared with the deeper stage."""
        if k >= self.top_k:
            return self
        out = copy.copy(self)
        out.top_k = k
        return out

    def _key(self) -> tuple:
        return (
            "colbert",
            self.model,
            self.device,
            self.dtype,
            self.index,
            tuple(sorted(self.index_options.items())),
            tuple(sorted((k, repr(v)) for k, v in self.options.items())),
        )

    def _identity(self, built: Any) -> list[Any]:
        from winnow.pipeline.rerank import reranker_identity

        return [
            "colbert",
            reranker_identity(built.encoder),
            built.index_kind,
            sorted(built.index_options.items()),
        ]

    def _build(self, ctx: Context) -> Any:
        from winnow.retrieval.colbert import ColBERTIndex

        options = dict(self.options)
        device = options.pop("device", self.device)
        dtype = options.pop("dtype", self.dtype)
        return ColBERTIndex(
            self.model,
            cache_dir=ctx.cache_dir,
            device=device,
            dtype=dtype,
            show_progress=ctx.progress,
            index=self.index,
            index_options=self.index_options,
            **options,
        )
