"""The rows of ``benchmarks/cpu_backends.py``: one registry of (name -> loader) per model family, and
the worker that times one row in its own process.

A row's loader takes a :class:`Context` (model folder, calibration sample, scratch folder) and
returns ``run(inputs) -> float32 array``: scores of ``(query, document)`` pairs for cross-encoders,
embeddings (normalised, as dense retrieval uses them) of texts for bi-encoders. Loading (and any
export or quantisation it needs) is timed apart from scoring.

The worker (``cpu_backends.py --worker ROW ...``) loads the row, runs a warm-up on the first inputs,
then ``repeats`` timed passes over all of them (the best is kept), and writes the last pass's
outputs (``ROW.npy``) and a JSON record (``ROW.json``): seconds, load seconds, the process's peak
resident memory (``VmHWM``, the process's own high-water mark: after imports, after loading,
after scoring) and the winnow log lines emitted while loading (an int8 guard that
falls back to float32 says so there). A row that cannot run records why instead:

* ``not available in this checkout``: winnow refused ``backend=`` / ``calibration=`` as unknown
  options (the ONNX Runtime / OpenVINO backends are not in this code yet);
* ``not installed``: an ImportError (the peer, or a package it needs, is missing);
* ``error``: anything else, with the exception's type and message.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CROSS, BI = "cross-encoder", "bi-encoder"

#: Why a peer's row cannot run in this project's environment, from ``pip install --dry-run -c
#: requirements/constraints.txt PACKAGE`` (run on 2026-12-01 with transformers 5.24.0); shown
#: beside the ImportError so the reader knows it is not a missing ``pip install``.
INSTALL_NOTES = {
    "sentence-transformers[onnx]": "does not install: optimum-onnx (every release up to 0.1.0) "
    "needs transformers<4.58, this project pins transformers 5.24.0 (sentence-transformers 6.2 "
    "needs >=5.0)",
    "sentence-transformers[openvino]": "does not install: optimum-intel 2.2.0 needs "
    "transformers<5.6, 2.0-2.1 need safetensors<0.8 (pinned: transformers 5.24.0, safetensors 0.8.0)",
    "infinity-emb": "does not install: every infinity-emb[torch] release (0.0.1-0.0.78) needs "
    "numpy<2, this project pins numpy 2.4.6",
}


@dataclass(frozen=True)
class Context:
    model: str  # the model folder every row loads
    calibration: list  # (query, document) pairs or texts: winnow's static int8 sample
    work: Path  # scratch folder (exports, quantised copies)
    family: str


@dataclass(frozen=True)
class Row:
    name: str
    family: str
    peer: str
    load: Callable[[Context], Callable[[Sequence], np.ndarray]]
    description: str
    install: str | None = None  # key of INSTALL_NOTES when the peer needs an extra
    winnow: tuple[str, str | None, bool] | None = None  # winnow rows: (dtype, backend, calibrate)


# --- sentence-transformers -------------------------------------------------------------------


def _st_model(ctx: Context, backend: str, file_name: str | None = None, path: str | None = None):
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    kwargs: dict[str, Any] = {"device": "cpu", "backend": backend}
    if file_name:
        kwargs["model_kwargs"] = {"file_name": file_name}
    if ctx.family == CROSS:
        return CrossEncoder(path or ctx.model, activation_fn=torch.nn.Identity(), **kwargs)
    return SentenceTransformer(path or ctx.model, **kwargs)


def _st_runner(model, family: str):
    if family == CROSS:
        return lambda pairs: np.asarray(
            model.predict(list(pairs), batch_size=32, show_progress_bar=False), dtype=np.float32
        )
    return lambda texts: np.asarray(
        model.encode(
            list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False
        ),
        dtype=np.float32,
    )


def _st(backend: str):
    def load(ctx: Context):
        return _st_runner(_st_model(ctx, backend), ctx.family)

    return load


def _st_onnx_int8(ctx: Context):
    """sentence-transformers' own int8 ONNX export (``export_dynamic_quantized_onnx_model``, avx2)."""
    from sentence_transformers import export_dynamic_quantized_onnx_model

    folder = ctx.work / "st-onnx-int8"
    model = _st_model(ctx, "onnx")
    model.save_pretrained(str(folder))
    export_dynamic_quantized_onnx_model(model, "avx2", str(folder))
    return _st_runner(_st_model(ctx, "onnx", "onnx/model_qint8_avx2.onnx", str(folder)), ctx.family)


def _st_openvino_int8(ctx: Context):
    """sentence-transformers' static int8 OpenVINO export (``export_static_quantized_openvino_model``).

    It calibrates on a Hugging Face dataset (``nyu-mll/glue`` / ``sst2`` by default), so offline it
    needs that dataset in the local ``datasets`` cache; a failure to load it is this row's error.
    """
    from sentence_transformers import export_static_quantized_openvino_model

    folder = ctx.work / "st-openvino-int8"
    model = _st_model(ctx, "openvino")
    model.save_pretrained(str(folder))
    export_static_quantized_openvino_model(model, None, str(folder))
    return _st_runner(
        _st_model(ctx, "openvino", "openvino/openvino_model_qint8_quantized.xml", str(folder)),
        ctx.family,
    )


# --- AnswerDotAI rerankers -------------------------------------------------------------------


def _rerankers(dtype: str):
    """rerankers' ``Reranker(model, model_type="cross-encoder")`` (its TransformerRanker: fixed
    batches of 16 in input order, one ``rank`` call per query); scores put back in pair order."""

    def load(ctx: Context):
        from rerankers import Reranker

        ranker = Reranker(
            ctx.model, model_type="cross-encoder", device="cpu", dtype=dtype, verbose=0
        )

        def run(pairs):
            scores = np.empty(len(pairs), dtype=np.float32)
            start = 0
            while start < len(pairs):  # pairs come grouped by query
                end = start
                while end < len(pairs) and pairs[end][0] == pairs[start][0]:
                    end += 1
                docs = [d for _, d in pairs[start:end]]
                ranked = ranker.rank(pairs[start][0], docs, doc_ids=list(range(start, end)))
                for result in ranked.results:
                    scores[result.document.doc_id] = result.score
                start = end
            return scores

        return run

    return load


# --- infinity-emb ----------------------------------------------------------------------------


def _infinity(ctx: Context):
    """infinity-emb's ``AsyncEmbeddingEngine`` (torch engine, CPU), driven from one event loop."""
    import asyncio

    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    engine = AsyncEmbeddingEngine.from_args(
        EngineArgs(model_name_or_path=ctx.model, engine="torch", device="cpu")
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(engine.astart())

    async def score(pairs):
        out = np.empty(len(pairs), dtype=np.float32)
        for i, (q, d) in enumerate(pairs):  # one pair per call: rerank() takes one query
            scores, _ = await engine.rerank(query=q, docs=[d], raw_scores=True)
            out[i] = scores[0]
        return out

    async def embed(texts):
        vectors, _ = await engine.embed(sentences=list(texts))
        out = np.asarray(vectors, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    fn = score if ctx.family == CROSS else embed
    return lambda inputs: loop.run_until_complete(fn(inputs))


# --- winnow ----------------------------------------------------------------------------------


def _winnow(dtype: str, backend: str | None = None, calibrate: bool = False):
    def load(ctx: Context):
        import winnow

        kwargs: dict[str, Any] = {}
        if backend is not None:  # the torch rows pass nothing: they run on any checkout
            kwargs["backend"] = backend
        if calibrate:
            kwargs["calibration"] = ctx.calibration
        if ctx.family == BI:
            kwargs["memo_mb"] = 0  # nothing remembered between repeats
        rr = winnow.load_reranker(ctx.model, ctx.family, device="cpu", dtype=dtype, **kwargs)
        rr.load()
        return rr.score_pairs if ctx.family == CROSS else rr.encode

    return load


#: winnow's modes: (row, dtype, backend (None: the default, torch), what it is). int8 on the
#: onnx / openvino backends is static, calibrated on ``Context.calibration`` and guarded.
WINNOW_MODES = [
    ("winnow-torch-float32", "float32", None, "exact"),
    ("winnow-torch-bfloat16", "bfloat16", None, "bf16 weights (emulated without AVX512-BF16)"),
    ("winnow-torch-int8", "int8", None, "dynamic int8 (torch.ao)"),
    ("winnow-onnx-float32", "float32", "onnx", "exact"),
    ("winnow-onnx-int8", "int8", "onnx", "static int8, calibrated"),
    ("winnow-openvino-float32", "float32", "openvino", "exact"),
    ("winnow-openvino-int8", "int8", "openvino", "static int8, calibrated"),
]


def _rows() -> dict[str, Row]:
    rows: list[Row] = []
    for family in (CROSS, BI):
        st = "sentence-transformers"
        rows += [
            Row("st-torch-float32", family, st, _st("torch"), "backend='torch', batch 32 (1.00x)"),
            Row("st-onnx-float32", family, st, _st("onnx"), "backend='onnx'", f"{st}[onnx]"),
            Row("st-onnx-int8", family, st, _st_onnx_int8, "int8 ONNX export", f"{st}[onnx]"),
            Row(
                "st-openvino-float32",
                family,
                st,
                _st("openvino"),
                "backend='openvino'",
                f"{st}[openvino]",
            ),
            Row(
                "st-openvino-int8",
                family,
                st,
                _st_openvino_int8,
                "static int8 OpenVINO export",
                f"{st}[openvino]",
            ),
        ]
        if family == CROSS:
            rows += [
                Row("rerankers-float32", family, "rerankers", _rerankers("float32"), "exact"),
                Row(
                    "rerankers-bfloat16",
                    family,
                    "rerankers",
                    _rerankers("bfloat16"),
                    "its fastest setting on the same model folder (dtype)",
                ),
            ]
        rows.append(
            Row("infinity-emb", family, "infinity-emb", _infinity, "torch engine", "infinity-emb")
        )
        for name, dtype, backend, what in WINNOW_MODES:
            spec = (dtype, backend, dtype == "int8" and backend is not None)
            rows.append(Row(name, family, "winnow", _winnow(*spec), what, winnow=spec))
    return {f"{r.family}/{r.name}": r for r in rows}


ROWS = _rows()
REFERENCE = "st-torch-float32"


def row_names(family: str) -> list[str]:
    return [r.name for r in ROWS.values() if r.family == family]


def get_row(family: str, name: str) -> Row:
    try:
        return ROWS[f"{family}/{name}"]
    except KeyError:
        raise SystemExit(
            f"unknown {family} row {name!r}; choose from {', '.join(row_names(family))}"
        ) from None


# --- the worker ------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB.

    ``VmHWM`` of ``/proc/self/status`` (Linux): the high-water mark of this process's own memory
    since its ``exec``. Not ``ru_maxrss``: Linux carries that over fork and exec, so a row's
    process would report its parent's resident size (the benchmark's inputs and index) as its own
    peak. Elsewhere ``ru_maxrss`` is the fallback (KiB on Linux and BSD, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def classify(exc: BaseException, row: Row) -> dict[str, str]:
    """Why ``row`` could not run: the status and a one-line reason."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    from winnow.errors import ConfigError

    if (
        row.peer == "winnow"
        and isinstance(exc, ConfigError | TypeError)
        and ("'backend'" in text or "'calibration'" in text)
    ):
        return {"status": "not available in this checkout", "reason": text}
    # sentence-transformers raises a bare Exception naming the pip command when optimum is missing
    if isinstance(exc, ImportError) or "pip install" in text:
        note = INSTALL_NOTES.get(row.install or "")
        return {"status": "not installed", "reason": f"{note}; {text}" if note else text}
    return {"status": "error", "reason": text}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def run_worker(row: Row, ctx: Context, inputs: list, repeats: int, warmup: int, out: Path) -> None:
    """Load ``row``, time it on ``inputs`` and write ``out``.json (+ ``out``.npy when it ran)."""
    import torch  # every row needs it; imported first so the "import" peak covers it

    record: dict[str, Any] = {
        "row": row.name,
        "peer": row.peer,
        "description": row.description,
        "inputs": len(inputs),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(_loadavg()),
        "peak_rss_mib": {"import": peak_rss_mib()},
    }
    lines = _Lines()
    winnow_log = logging.getLogger("winnow")
    winnow_log.addHandler(lines)
    winnow_log.setLevel(logging.INFO)
    try:
        start = time.perf_counter()
        run = row.load(ctx)
        record["load_seconds"] = time.perf_counter() - start
        record["peak_rss_mib"]["load"] = peak_rss_mib()
        run(inputs[:warmup])  # first calls allocate and pick kernels
        best, outputs = float("inf"), None
        for _ in range(repeats):
            start = time.perf_counter()
            outputs = run(inputs)
            best = min(best, time.perf_counter() - start)
        record["peak_rss_mib"]["score"] = peak_rss_mib()
        outputs = np.asarray(outputs, dtype=np.float32)
        if outputs.shape[0] != len(inputs):
            raise RuntimeError(f"{row.name} returned {outputs.shape[0]} rows for {len(inputs)}")
        np.save(out.with_suffix(".npy"), outputs)
        record.update(status="ok", seconds=best, repeats=repeats)
    except Exception as exc:  # a row that cannot run is reported, never fatal to the benchmark
        record.update(classify(exc, row))
        record["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
    finally:
        winnow_log.removeHandler(lines)
    record["log"] = lines.lines[-20:]
    record["load_average_end"] = list(_loadavg())
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out.with_suffix(".json"))


def _loadavg() -> tuple[float, float, float]:
    import os

    return os.getloadavg()


def run_ndcg_worker(
    row: Row, model: str, data_dir: str, dataset: str, calibration: int, out: Path
) -> None:
    """Dense retrieval with ``row``'s winnow mode on ``dataset``: nDCG@10 over its judged queries
    (``DenseIndex``, exact search, top 1000, as ``winnow eval``'s ``dense`` system), into ``out``."""
    from winnow.data import load_dataset
    from winnow.evaluation.metrics import Evaluator
    from winnow.retrieval import DenseIndex

    record: dict[str, Any] = {"row": row.name, "dataset": dataset}
    try:
        if row.winnow is None:
            raise SystemExit(f"{row.name} is not a winnow row")
        dtype, backend, calibrate = row.winnow
        ds = load_dataset(dataset, data_dir=data_dir)
        options: dict[str, Any] = {}
        if backend is not None:
            options["backend"] = backend
        if calibrate:  # the user's own documents: an even sample of the collection
            options["calibration"] = spread([d.full_text for d in ds.corpus.values()], calibration)
        start = time.perf_counter()
        index = DenseIndex(model, device="cpu", dtype=dtype, **options).index(ds.corpus)
        queries = {q: ds.queries[q] for q in ds.qrels if q in ds.queries}
        run = index.search(queries, top_k=1000)
        record["seconds"] = time.perf_counter() - start
        record["ndcg@10"] = Evaluator(ds.qrels, ["nDCG@10"]).aggregate(run)["nDCG@10"]
        record["documents"], record["queries"] = len(ds.corpus), len(queries)
        record["status"] = "ok"
    except Exception as exc:  # reported, never fatal
        record.update(classify(exc, row))
    record["peak_rss_mib"] = peak_rss_mib()
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out)


def spread(items: list, n: int) -> list:
    """``n`` items taken evenly across ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
