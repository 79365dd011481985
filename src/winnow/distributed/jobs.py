"""The heavy stages as Daft jobs: score (query, document) pairs, and encode a corpus.

Each job is a ``@daft.cls`` wrapper over the winnow object used in-process (no second scoring or
encoding code): the reranker or bi-encoder is shipped to the workers as its configuration
(``Reranker.__reduce__``), rebuilt in each worker's ``__init__`` through the process-wide cache
(one load per worker), and every batch goes through ``score_pairs_detailed`` /
``encode_documents``, whose token-budget engine sorts and packs the batch. So the scores are the
in-process scores of the same pairs, up to float rounding of a different batch composition.

Rows are checked in the worker: a null text or a non-string id raises :class:`InputError` naming
the row (its position in the input, from ``monotonically_increasing_id``) and its ids; any other
failure of a batch raises :class:`DistributedError` naming the batch's rows and ids. Daft stops
the job on the first error, so a failure never leaves rows silently unscored.

Daft's native runner calls an in-process worker from several threads at once, but one model is
not safe to call concurrently (a Hugging Face fast tokenizer sets its padding and truncation on
the shared object for each call: two calls at once mix them up, and a batch comes out unpadded).
So a worker holds :func:`model_lock` while it calls the model; checking rows and building the
Arrow output still overlap.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import numpy as np

from winnow.distributed.engine import (
    DistributedError,
    EngineOptions,
    check_worker,
    require_daft,
    set_torch_threads,
    use_runner,
)
from winnow.errors import ConfigError, InputError, WinnowError

logger = logging.getLogger(__name__)

ROW = "_winnow_row"
#: Columns a pair table must have (any others are carried through unchanged).
PAIR_COLUMNS = ("query_id", "doc_id", "query", "text")
#: Row ids from ``monotonically_increasing_id``: partition in the upper 28 bits, row in the lower 36.
_ROW_BITS = 36


def describe_row(row: int) -> str:
    """``row 17`` (0-based, in input order) or ``row 17 of input partition 3``."""
    part, index = int(row) >> _ROW_BITS, int(row) & ((1 << _ROW_BITS) - 1)
    return f"row {index}" if part == 0 else f"row {index} of input partition {part}"


def _check_text(value: Any, column: str, row: int, ids: str) -> str:
    if not isinstance(value, str):
        what = "null" if value is None else f"{type(value).__name__} {value!r}"
        raise InputError(f"{describe_row(row)} ({ids}): {column} is {what}, expected a string")
    return value


def _ids_text(names: tuple[str, ...], values: tuple[Any, ...]) -> str:
    return ", ".join(f"{n}={v!r}" for n, v in zip(names, values))


def model_lock(reranker):
    """The lock every worker of this process holds while it calls ``reranker``'s model: the
    reranker's own (:func:`winnow.rerankers.cache.model_lock`, re-entrant, also held inside
    ``score_pairs`` / ``encode``), so Daft's threads and any other caller share one."""
    from winnow.rerankers.cache import model_lock as lock_of

    return lock_of(reranker.config)


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and whole message, then each cause's (``; caused by ...``),
    so a worker's report keeps what the model or tokenizer really said."""
    parts, seen = [], set()
    chain: BaseException | None = exc
    while chain is not None and id(chain) not in seen and len(parts) < 5:
        seen.add(id(chain))
        text = " ".join(str(chain).split())
        parts.append(f"{type(chain).__name__}: {text}" if text else type(chain).__name__)
        chain = chain.__cause__ or (None if chain.__suppress_context__ else chain.__context__)
    return "; caused by ".join(parts)


def _batch_summary(rows: list[int], ids: list[str]) -> str:
    shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
    return f"a batch of {len(rows)} rows ({describe_row(min(rows))} to {describe_row(max(rows))}: {shown})"


class PairScorer:
    """A Daft worker that scores pairs with one reranker (loaded once, in ``__init__``)."""

    def __init__(self, reranker, driver_version: str, torch_threads: int | None, info: bool):
        check_worker(driver_version)
        set_torch_threads(torch_threads)
        self.reranker = reranker  # unpickled: this process's cached instance of the config
        self.reranker.load()
        self.lock = model_lock(self.reranker)
        self.info = info

    def __call__(self, row, query_id, doc_id, query, text):
        import pyarrow as pa

        import winnow

        rows = row.to_pylist()
        qids, dids = query_id.to_pylist(), doc_id.to_pylist()
        queries, texts = query.to_pylist(), text.to_pylist()
        pairs = []
        for r, q_id, d_id, q, t in zip(rows, qids, dids, queries, texts):
            ids = _ids_text(("query_id", "doc_id"), (q_id, d_id))
            _check_text(q_id, "query_id", r, ids)
            _check_text(d_id, "doc_id", r, ids)
            pairs.append((_check_text(q, "query", r, ids), _check_text(t, "text", r, ids)))
        try:
            with self.lock:
                scored = self.reranker.score_pairs_detailed(pairs)
        except Exception as exc:
            summary = _batch_summary(rows, [f"{q}/{d}" for q, d in zip(qids, dids)])
            raise DistributedError(f"scoring failed on {summary}: {describe_error(exc)}") from exc
        arrays = [
            pa.array(np.asarray(scored.scores, dtype=np.float32), pa.float32()),
            pa.array(np.asarray(scored.truncated, dtype=bool), pa.bool_()),
            pa.array(np.asarray(scored.num_tokens, dtype=np.int32), pa.int32()),
        ]
        names = ["score", "truncated", "num_tokens"]
        if self.info:
            n = len(rows)
            loads = winnow.model_loads(self.reranker.config.model)
            arrays += [
                pa.array([os.getpid()] * n, pa.int64()),
                pa.array([loads] * n, pa.int64()),
                pa.array([winnow.__file__] * n, pa.string()),
            ]
            names += ["worker_pid", "model_loads", "winnow_path"]
        return pa.StructArray.from_arrays(arrays, names=names)


class TextEncoder:
    """A Daft worker that embeds texts with one bi-encoder (loaded once, in ``__init__``)."""

    def __init__(self, encoder, driver_version: str, torch_threads: int | None):
        check_worker(driver_version)
        set_torch_threads(torch_threads)
        self.encoder = encoder
        self.encoder.load()
        self.lock = model_lock(self.encoder)

    def __call__(self, row, doc_id, title, text):
        from winnow.types import Document

        rows, dids = row.to_pylist(), doc_id.to_pylist()
        titles, texts = title.to_pylist(), text.to_pylist()
        full = []
        for r, d_id, ti, t in zip(rows, dids, titles, texts):
            ids = _ids_text(("doc_id",), (d_id,))
            _check_text(d_id, "doc_id", r, ids)
            if ti is not None:
                _check_text(ti, "title", r, ids)
            # the text Dense embeds for a corpus document (title + " " + text)
            full.append(Document(d_id, _check_text(t, "text", r, ids), ti or "").full_text)
        try:
            with self.lock:
                emb = self.encoder.encode_documents(full, show_progress=False)
        except Exception as exc:
            summary = _batch_summary(rows, [str(d) for d in dids])
            raise DistributedError(f"encoding failed on {summary}: {describe_error(exc)}") from exc
        return np.asarray(emb, dtype=np.float32)


def _missing(df, columns: tuple[str, ...], what: str) -> None:
    have = set(df.column_names)
    missing = [c for c in columns if c not in have]
    if missing:
        raise InputError(
            f"the {what} table lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(df.column_names) or 'none'}"
        )


def _with_rows(df):
    from daft.functions import monotonically_increasing_id

    return df.with_column(ROW, monotonically_increasing_id())


def score_pairs_job(df, reranker, options: EngineOptions | None = None, *, worker_info=False):
    """The lazy Daft DataFrame ``df`` plus ``score`` (float32), ``truncated``, ``num_tokens``.

    ``df`` has ``query_id``, ``doc_id``, ``query``, ``text`` (other columns pass through);
    ``reranker`` is any winnow reranker whose scores depend on the pair only (not listwise).
    With ``worker_info`` it also gets ``worker_pid``, ``model_loads`` (loads of the model in
    that worker's process so far: proof of one load per worker) and ``winnow_path`` (the
    ``winnow/__init__.py`` the worker imported).
    """
    daft = require_daft()
    from daft import DataType, col

    from winnow import __version__
    from winnow.rerankers.base import Reranker

    options = options or EngineOptions()
    if not isinstance(reranker, Reranker):
        raise ConfigError(f"expected a winnow Reranker, got {type(reranker).__name__}")
    if reranker.score_type != "relevance":
        raise ConfigError(
            f"{reranker.config.kind} scores a whole list at once; score-pairs needs a reranker "
            "whose score depends on the pair alone"
        )
    _missing(df, PAIR_COLUMNS, "pairs")
    use_runner(options)
    fields = {
        "score": DataType.float32(),
        "truncated": DataType.bool(),
        "num_tokens": DataType.int32(),
    }
    if worker_info:
        fields |= {
            "worker_pid": DataType.int64(),
            "model_loads": DataType.int64(),
            "winnow_path": DataType.string(),
        }
    method = daft.method.batch(
        PairScorer.__call__, return_dtype=DataType.struct(fields), batch_size=options.batch_size
    )
    worker_cls = type("PairScorer", (PairScorer,), {"__call__": method})
    worker_cls.__module__ = __name__
    udf = daft.cls(worker_cls, **options.cls_options(), name_override="winnow.score_pairs")
    scorer = udf(reranker, __version__, options.torch_threads(), worker_info)
    # whole batches for the token-budget engine (a reader's morsels can be a few rows each)
    out = _with_rows(df).into_batches(options.batch_size)
    result = "_winnow_scored"
    out = out.with_column(
        result, scorer(col(ROW), col("query_id"), col("doc_id"), col("query"), col("text"))
    )
    keep = [c for c in df.column_names if c not in fields]
    return out.select(*[col(c) for c in keep], col(result).unnest())


def encode_job(df, encoder, options: EngineOptions | None = None, *, dimension: int | None = None):
    """The lazy Daft DataFrame of ``doc_id`` and ``embedding`` (``embedding(float32, dim)``) of a
    corpus table (``doc_id`` or BEIR's ``_id``, ``text``, optional ``title``): each document's
    ``title + " " + text`` embedded by ``encoder`` (a bi-encoder) as dense retrieval embeds it."""
    daft = require_daft()
    from daft import DataType, col, lit

    from winnow import __version__
    from winnow.rerankers.bi_encoder import BiEncoderReranker

    options = options or EngineOptions()
    if not isinstance(encoder, BiEncoderReranker):
        raise ConfigError(
            f"encode needs a bi-encoder (kind='bi-encoder'), got {type(encoder).__name__}"
        )
    if "doc_id" not in df.column_names and "_id" in df.column_names:
        df = df.with_column_renamed("_id", "doc_id")
    _missing(df, ("doc_id", "text"), "corpus")
    use_runner(options)
    dim = int(dimension or encoder.dimension)
    method = daft.method.batch(
        TextEncoder.__call__,
        return_dtype=DataType.embedding(DataType.float32(), dim),
        batch_size=options.batch_size,
    )
    worker_cls = type("TextEncoder", (TextEncoder,), {"__call__": method})
    worker_cls.__module__ = __name__
    udf = daft.cls(worker_cls, **options.cls_options(), name_override="winnow.encode")
    worker = udf(encoder, __version__, options.torch_threads())
    title = col("title") if "title" in df.column_names else lit(None).cast(DataType.string())
    out = _with_rows(df).into_batches(options.batch_size)
    out = out.with_column("embedding", worker(col(ROW), col("doc_id"), title, col("text")))
    return out.select(col("doc_id"), col("embedding"))


def collect(df) -> dict[str, list]:
    """Run a job and return its columns; a worker's error comes back as winnow's own."""
    with job_errors():
        return df.to_pydict()


class job_errors:
    """Turn the exception a failed Daft job raises into the winnow error its worker raised."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (WinnowError, KeyboardInterrupt)):
            return False
        original = _worker_error(exc)
        if original is not None:
            raise type(original)(str(original)) from exc
        if isinstance(exc, Exception) and type(exc).__module__.startswith("daft"):
            raise DistributedError(f"the Daft job failed: {exc}") from exc
        return False


#: ``winnow.errors.InputError: row 1 (...): text is null`` in the traceback text Daft re-raises
_ERROR_LINE = re.compile(r"^winnow\.[\w.]+\.(\w+Error): (.*)$", re.MULTILINE)


def _worker_error(exc: BaseException) -> WinnowError | None:
    """The winnow error a worker raised: found in the chain Daft wraps it in (threads), or
    rebuilt from the traceback text Daft sends back from a worker process."""
    from winnow import errors
    from winnow.distributed import engine

    seen = set()
    chain: BaseException | None = exc
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, WinnowError):
            return chain
        chain = chain.__cause__ or chain.__context__
    found = _ERROR_LINE.findall(str(exc))
    if not found:
        return None
    name, message = found[-1]
    cls = getattr(errors, name, None) or getattr(engine, name, None)
    if not (isinstance(cls, type) and issubclass(cls, WinnowError)):
        cls = DistributedError
    return cls(message)
