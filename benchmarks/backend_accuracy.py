"""Inference backends on the real MiniLM models: exactness, int8 quality and speed against torch.

Side by side in one run, each model exported once into a fresh temporary folder:

* cross-encoder: all-MiniLM-L6-v2's encoder with a fresh one-logit head, on Cranfield queries x
  their BM25 top ``--depth`` documents (``--queries`` queries, 2,000 pairs by default); int8 is
  calibrated on pairs of *other* Cranfield queries (``--calibration`` pairs, every fifth held out
  for the guard);
* bi-encoder: all-MiniLM-L6-v2 encoding the 1,400 Cranfield documents; int8 calibrated on
  ``--calibration`` of those documents (the collection's own sample).

For each backend (torch float32 the reference; onnx and openvino in float32 and int8) it prints
items/s and the ratio to torch float32, max |score difference| (cross-encoder) or min cosine per
text (bi-encoder) against torch float32, Spearman against torch float32 (cross-encoder), the
int8 guard's figure and whether int8 was used. Where the guard refused int8, the int8 file is
also timed and compared directly (``int8 (forced)``), so the figures say what int8 would give.

    python benchmarks/backend_accuracy.py [--queries 100] [--depth 20] [--docs 1400] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODES = [("torch", "float32"), ("onnx", "float32"), ("openvino", "float32")]
MODES += [("onnx", "int8"), ("openvino", "int8")]


def split_pairs(data_dir: str, n_queries: int, depth: int):
    """Cranfield's BM25 pairs (``rerank_throughput.real_pairs``) of the first ``n_queries`` queries,
    and those of the other queries (the int8 calibration pool)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rerank_throughput import real_pairs
    from winnow.data import load_dataset

    ds = load_dataset("cranfield", data_dir=data_dir)
    first = {ds.queries[q] for q in sorted(ds.queries, key=int)[:n_queries]}
    pairs = real_pairs(Path(data_dir), len(ds.queries), depth)
    return [p for p in pairs if p[0] in first], [p for p in pairs if p[0] not in first]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def forced_int8(reranker):
    """The int8 runner of a reranker whose guard refused int8 (the file is kept beside)."""
    from winnow.rerankers.backends import make_runner

    info = reranker.backend_info
    files = sorted(Path(info["export"]).glob("int8-*/model-int8.onnx"))
    return make_runner(info["backend"], files[0], None) if files else None


def bench_cross(path, pairs, calibration, export_dir, modes) -> dict:
    from scipy.stats import spearmanr

    import winnow

    out = {"pairs": len(pairs), "calibration_pairs": len(calibration), "modes": {}}
    ref = None
    for backend, dtype in modes:
        kw = {} if backend == "torch" else {"backend": backend, "export_dir": export_dir}
        if dtype == "int8":
            kw["calibration"] = calibration
        load_s, rr = timed(
            lambda kw=kw, dtype=dtype: winnow.load_reranker(
                path, kind="cross-encoder", dtype=dtype, **kw
            ).load()
        )
        rr.score_pairs(pairs[:32])  # warm-up
        seconds, scores = timed(lambda rr=rr: rr.score_pairs(pairs))
        name = f"{backend} {dtype}"
        entry = {"load_s": load_s, "pairs_per_s": len(pairs) / seconds}
        if ref is None:
            ref, ref_rate = scores, entry["pairs_per_s"]
        entry["ratio_vs_torch"] = entry["pairs_per_s"] / ref_rate
        entry["max_abs_diff_vs_torch"] = float(np.abs(scores - ref).max())
        entry["spearman_vs_torch"] = float(spearmanr(ref, scores).statistic)
        info = rr.backend_info
        entry["dtype_used"] = info.get("dtype_used")
        entry["guard"] = info.get("guard")
        out["modes"][name] = entry
        if dtype == "int8" and info.get("dtype_used") != "int8":
            run = forced_int8(rr)
            if run is not None:
                rr.runner.run, keep = run, rr.runner.run
                try:
                    rr.score_pairs(pairs[:32])
                    seconds, forced = timed(lambda rr=rr: rr.score_pairs(pairs))
                finally:
                    rr.runner.run = keep
                out["modes"][f"{name} (forced)"] = {
                    "pairs_per_s": len(pairs) / seconds,
                    "ratio_vs_torch": len(pairs) / seconds / ref_rate,
                    "max_abs_diff_vs_torch": float(np.abs(forced - ref).max()),
                    "spearman_vs_torch": float(spearmanr(ref, forced).statistic),
                }
        winnow.clear_cache()
    return out


def bench_bi(path, texts, calibration, export_dir, modes) -> dict:
    import winnow

    out = {"texts": len(texts), "calibration_texts": len(calibration), "modes": {}}
    ref = None

    def cos(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    for backend, dtype in modes:
        kw = {"memo_mb": 0}
        if backend != "torch":
            kw.update(backend=backend, export_dir=export_dir)
        if dtype == "int8":
            kw["calibration"] = calibration
        load_s, enc = timed(
            lambda kw=kw, dtype=dtype: winnow.load_reranker(
                path, kind="bi-encoder", dtype=dtype, **kw
            ).load()
        )
        enc.encode(texts[:32])  # warm-up
        seconds, emb = timed(lambda enc=enc: enc.encode(texts))
        name = f"{backend} {dtype}"
        entry = {"load_s": load_s, "texts_per_s": len(texts) / seconds}
        if ref is None:
            ref, ref_rate = emb, entry["texts_per_s"]
        c = cos(ref, emb)
        entry.update(
            ratio_vs_torch=entry["texts_per_s"] / ref_rate,
            min_cosine_vs_torch=float(c.min()),
            mean_cosine_vs_torch=float(c.mean()),
            max_abs_diff_vs_torch=float(np.abs(emb - ref).max()),
        )
        info = enc.backend_info
        entry["dtype_used"] = info.get("dtype_used")
        entry["guard"] = info.get("guard")
        out["modes"][name] = entry
        if dtype == "int8" and info.get("dtype_used") != "int8":
            run = forced_int8(enc)
            if run is not None:
                model = enc.model
                model.runner, keep = run, model.runner
                try:
                    seconds, forced = timed(lambda enc=enc: enc.encode(texts))
                finally:
                    model.runner = keep
                c = cos(ref, forced)
                out["modes"][f"{name} (forced)"] = {
                    "texts_per_s": len(texts) / seconds,
                    "ratio_vs_torch": len(texts) / seconds / ref_rate,
                    "min_cosine_vs_torch": float(c.min()),
                    "mean_cosine_vs_torch": float(c.mean()),
                }
        winnow.clear_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA", "../shared/datasets"))
    parser.add_argument("--queries", type=int, default=100, help="Cranfield queries scored")
    parser.add_argument("--depth", type=int, default=20, help="BM25 documents per query")
    parser.add_argument("--docs", type=int, default=1400, help="Cranfield documents encoded")
    parser.add_argument("--calibration", type=int, default=320, help="calibration sample size")
    parser.add_argument("--models", default="cross-encoder,bi-encoder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import torch

    from winnow.data import load_dataset
    from winnow.rerankers.hub import resolve_model_path
    from winnow.testing import build_minilm_cross_encoder

    ds = load_dataset("cranfield", data_dir=str(Path(args.data_dir)))
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = str(Path(tmp) / "exports")
        if "cross-encoder" in args.models:
            pairs, other = split_pairs(args.data_dir, args.queries, args.depth)
            step = max(1, len(other) // args.calibration)
            calibration = other[::step][: args.calibration]
            path = str(build_minilm_cross_encoder(Path(tmp) / "minilm-ce"))
            out["models"]["cross-encoder"] = bench_cross(
                path, pairs, calibration, export_dir, MODES
            )
        if "bi-encoder" in args.models:
            texts = [d.full_text for d in list(ds.corpus.values())[: args.docs]]
            step = max(1, len(texts) // args.calibration)
            calibration = texts[::step][: args.calibration]
            path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
            out["models"]["bi-encoder"] = bench_bi(path, texts, calibration, export_dir, MODES)

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"torch {out['torch']}, {out['threads']} threads")
    for model, res in out["models"].items():
        unit = "pairs" if model == "cross-encoder" else "texts"
        print(f"\n{model}: {res[unit]} {unit}")
        for name, e in res["modes"].items():
            rate = e[f"{unit}_per_s"]
            quality = (
                f"max|diff| {e['max_abs_diff_vs_torch']:.2e} spearman {e['spearman_vs_torch']:.6f}"
                if model == "cross-encoder"
                else f"min cos {e['min_cosine_vs_torch']:.6f} mean cos {e['mean_cosine_vs_torch']:.6f}"
            )
            guard = e.get("guard")
            g = f" guard {guard['metric']} {guard['value']:.6f}" if guard else ""
            used = f" used {e['dtype_used']}" if e.get("dtype_used") else ""
            print(
                f"  {name:<24} {rate:>8.1f} {unit}/s {e['ratio_vs_torch']:>5.2f}x  {quality}{g}{used}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
