"""Daft engine against in-process winnow, side by side on the same machine, back to back.

Scoring: 20,000 real pairs (the first 200 Cranfield queries x their BM25 top 100, title + text),
scored by all-MiniLM-L6-v2's encoder with a fresh one-logit head (``build_minilm_cross_encoder``,
the compute of ms-marco-MiniLM-L-6-v2) in float32 on the CPU:

* ``in-process``: ``reranker.score_pairs`` on the whole list (model loaded and warmed first);
* ``daft native, 1 worker``: ``score_pairs_job`` with the UDF in this process (Daft's threads);
* ``daft native, 2 workers``: two worker processes, ``cpus`` split between them (each loads the
  model: the load is part of its time);
* ``daft ray, 2 workers``: the same job on a local 2-CPU Ray instance, in a child process (Daft
  fixes its runner once per process).

Each prints pairs/s, the ratio to in-process and the largest |score difference| from the
in-process scores. Every job reads the same Parquet file of pairs and returns all scores.

Encoding: a corpus of passages (sliding 32-word windows, stride 4, over the text of the shared
Cranfield, CISI and ADI collections) written as JSON lines, embedded with all-MiniLM-L6-v2 (or
``--encode-model tiny``: the 2-layer test bi-encoder) and written as Parquet, at two sizes, each
run in its own child process so that its peak resident memory (``ru_maxrss``, the process and its
largest worker) is its own: in-process (read the corpus into lists, ``encode_documents``, write
with pyarrow) against ``winnow encode``'s Daft job (one in-process worker); the Daft runs at every
size come first.

The machine's load (``os.getloadavg``) is printed beside each timing: on a shared machine the
ratios measured side by side mean more than the absolute rates.

``--max-length N`` truncates every pair to N tokens in every engine alike (default: the model's
256): on a shared, loaded machine the 20,000 pairs at 256 tokens can take hours per engine.

    python benchmarks/distributed.py [--pairs 20000] [--max-length 64] [--sizes 50000,100000]
        [--encode-model tiny] [--skip-ray] [--skip-score] [--skip-encode] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load() -> str:
    return "load {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def real_pairs(data_dir: Path, n_pairs: int, depth: int = 100) -> dict[str, list]:
    from winnow.data import load_dataset
    from winnow.retrieval import BM25Index

    ds = load_dataset("cranfield", data_dir=str(data_dir))
    qids = sorted(ds.queries, key=int)[: -(-n_pairs // depth)]
    queries = {q: ds.queries[q] for q in qids}
    run = BM25Index().index(ds.corpus).search(queries, top_k=depth)
    rows: dict[str, list] = {"query_id": [], "doc_id": [], "query": [], "text": []}
    for q in qids:
        for d, _ in sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0])):
            rows["query_id"].append(q)
            rows["doc_id"].append(d)
            rows["query"].append(queries[q])
            rows["text"].append(ds.corpus[d].full_text)
    return {k: v[:n_pairs] for k, v in rows.items()}


def passages(data_dir: Path, n: int, width: int = 32, stride: int = 4) -> list[str]:
    from winnow.data import load_dataset

    words: list[str] = []
    for name in ("cranfield", "cisi", "adi"):
        ds = load_dataset(name, data_dir=str(data_dir))
        for doc in ds.corpus.values():
            words.extend(doc.full_text.split())
    out, start = [], 0
    while len(out) < n:
        out.append(" ".join(words[start % len(words) : start % len(words) + width]))
        start += stride
    return out


def scorer(args):
    import winnow

    extra = {"max_length": args.max_length} if args.max_length else {}
    return winnow.load_reranker(args.model, "cross-encoder", device="cpu", dtype="float32", **extra)


def peak_mib() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (MiB)."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_mib": self_kb / 1024, "peak_worker_mib": child_kb / 1024}


# -- children ------------------------------------------------------------------------------------
def child_score(args) -> dict:
    """In-process and Daft-native scoring in one process (the native runner)."""
    import pyarrow.parquet as pq

    from winnow.distributed import EngineOptions, collect, read_table, score_pairs_job

    table = pq.read_table(args.pairs).to_pydict()
    pairs = list(zip(table["query"], table["text"]))
    rr = scorer(args)
    # warm torch's kernels for the shapes of these pairs (the first call over new sequence
    # lengths is several times slower); the Daft jobs that follow find them warm too
    rr.score_pairs(pairs[:: max(1, len(pairs) // 500)])
    results = []
    started = time.perf_counter()
    ref = rr.score_pairs(pairs)
    seconds = time.perf_counter() - started
    results.append(
        measured({"engine": "in-process", "seconds": seconds, "load": load(), "diff": 0.0})
    )
    position = {(q, d): i for i, (q, d) in enumerate(zip(table["query_id"], table["doc_id"]))}
    for workers in (1, 2):
        options = EngineOptions(workers=workers, batch_size=args.batch_size)
        started = time.perf_counter()
        out = collect(score_pairs_job(read_table(args.pairs), rr, options))
        seconds = time.perf_counter() - started
        idx = [position[(q, d)] for q, d in zip(out["query_id"], out["doc_id"])]
        diff = float(np.abs(np.asarray(out["score"], np.float64) - ref[idx]).max())
        results.append(
            measured(
                {
                    "engine": f"daft native, {workers} worker{'s' if workers > 1 else ''}",
                    "seconds": seconds,
                    "load": load(),
                    "diff": diff,
                    "rows": len(idx),
                }
            )
        )
    np.save(args.ref, ref)
    return {"results": results}


def child_ray(args) -> dict:
    import pyarrow.parquet as pq
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from winnow.distributed import EngineOptions, collect, read_table, score_pairs_job

        table = pq.read_table(args.pairs).to_pydict()
        position = {(q, d): i for i, (q, d) in enumerate(zip(table["query_id"], table["doc_id"]))}
        ref = np.load(args.ref)
        rr = scorer(args)
        options = EngineOptions(workers=2, ray_address="auto", batch_size=args.batch_size)
        started = time.perf_counter()
        out = collect(score_pairs_job(read_table(args.pairs), rr, options))
        seconds = time.perf_counter() - started
        idx = [position[(q, d)] for q, d in zip(out["query_id"], out["doc_id"])]
        diff = float(np.abs(np.asarray(out["score"], np.float64) - ref[idx]).max())
        return {
            "results": [
                measured(
                    {
                        "engine": "daft ray (local, 2 CPUs), 2 workers",
                        "seconds": seconds,
                        "load": load(),
                        "diff": diff,
                        "rows": len(idx),
                    }
                )
            ]
        }
    finally:
        ray.shutdown()


def child_encode(args) -> dict:
    import winnow

    encoder = winnow.load_reranker(args.model, "bi-encoder", device="cpu", memo_mb=0)
    encoder.load()
    with open(args.corpus, encoding="utf-8") as f:  # warm torch's kernels (see child_score)
        warm = [json.loads(line)["text"] for _, line in zip(range(2000), f)]
    encoder.encode_documents(warm, show_progress=False)
    out = Path(args.out)
    started = time.perf_counter()
    if args.engine == "in-process":
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids, texts = [], []
        with open(args.corpus, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                ids.append(rec["_id"])
                texts.append(rec["text"])
        emb = encoder.encode_documents(texts, show_progress=False)
        dim = emb.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim)
        pq.write_table(pa.table({"doc_id": ids, "embedding": column}), out)
    else:
        from winnow.distributed import EngineOptions, encode_job, read_table, write_table

        job = encode_job(read_table(args.corpus), encoder, EngineOptions(batch_size=1024))
        write_table(job, out)
    seconds = time.perf_counter() - started
    return measured({"engine": args.engine, "seconds": seconds, "load": load(), **peak_mib()})


# -- the parent ------------------------------------------------------------------------------------
def run_child(kind: str, *extra: str) -> dict:
    """Run a child; its stderr (progress, and each engine's result as soon as it is measured)
    goes to ours, so a long run that is stopped keeps what it measured."""
    cmd = [sys.executable, __file__, "--child", kind, *extra]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=3 * 3600)
    if done.returncode != 0:
        raise SystemExit(f"{kind} child failed (its stderr is above)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measured(result: dict) -> dict:
    print(f"measured: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=20_000)
    p.add_argument("--sizes", default="50000,100000", help="passages per encode run")
    p.add_argument("--encode-model", choices=("minilm", "tiny"), default="minilm")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--max-length", type=int, default=None, help="tokens per pair, all engines")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-encode", action="store_true")
    p.add_argument("--skip-score", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA", "../shared/datasets"))
    # children
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--pairs-file", dest="pairs_path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ref", default=None, help=argparse.SUPPRESS)
    p.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    p.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.pairs = args.pairs_path
        child = {"score": child_score, "ray": child_ray, "encode": child_encode}[args.child]
        print(json.dumps(child(args)))
        return

    import pyarrow as pa
    import pyarrow.parquet as pq

    from winnow.rerankers.hub import resolve_model_path
    from winnow.testing import build_minilm_cross_encoder, build_tiny_bi_encoder

    data_dir = Path(args.data_dir).expanduser()
    report: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if not args.skip_score:
            model = str(build_minilm_cross_encoder(tmp_path / "minilm-ce"))
            rows = real_pairs(data_dir, args.pairs)
            pairs_file = tmp_path / "pairs.parquet"
            pq.write_table(pa.table(rows), pairs_file)
            common = ["--model", model, "--pairs-file", str(pairs_file)]
            common += ["--ref", str(tmp_path / "ref.npy"), "--batch-size", str(args.batch_size)]
            if args.max_length:
                common += ["--max-length", str(args.max_length)]
            print(f"scoring {len(rows['query'])} pairs ({load()})", file=sys.stderr)
            results = run_child("score", *common)["results"]
            if not args.skip_ray:
                results += run_child("ray", *common)["results"]
            base = results[0]["seconds"]
            for r in results:
                r["pairs_per_second"] = len(rows["query"]) / r["seconds"]
                r["ratio"] = base / r["seconds"]
            report["score"] = {
                "pairs": len(rows["query"]),
                "max_length": args.max_length or "model's",
                "results": results,
            }
        if not args.skip_encode:
            if args.encode_model == "tiny":
                enc_model = str(build_tiny_bi_encoder(tmp_path / "tiny-bi"))
            else:
                enc_model = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
            sizes = [int(s) for s in args.sizes.split(",")]
            texts = passages(data_dir, max(sizes))
            encode = []
            for size in sizes:
                corpus = tmp_path / f"corpus-{size}.jsonl"
                with open(corpus, "w", encoding="utf-8") as f:
                    for i, text in enumerate(texts[:size]):
                        f.write(json.dumps({"_id": f"p{i}", "text": text}) + "\n")
            # Daft at every size first: its bounded memory is the claim to show
            for engine, size in [(e, s) for e in ("daft", "in-process") for s in sizes]:
                corpus = tmp_path / f"corpus-{size}.jsonl"
                print(f"encoding {size} passages, {engine} ({load()})", file=sys.stderr)
                out = tmp_path / f"emb-{engine}-{size}.parquet"
                r = run_child(
                    "encode", "--model", enc_model, "--corpus", str(corpus),
                    "--engine", engine, "--out", str(out),
                )  # fmt: skip
                r.update(engine=engine, passages=size, passages_per_second=size / r["seconds"])
                print(f"measured: {json.dumps(r)}", file=sys.stderr, flush=True)
                encode.append(r)
            report["encode"] = {"model": args.encode_model, "results": encode}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"machine: {report['cpus']} CPUs")
    if "score" in report:
        s = report["score"]
        print(
            f"\nscore {s['pairs']} pairs (MiniLM cross-encoder, float32, CPU, "
            f"max length {s['max_length']})"
        )
        print(f"{'engine':<38} {'pairs/s':>9} {'ratio':>6} {'max |diff|':>11}  machine")
        for r in report["score"]["results"]:
            print(
                f"{r['engine']:<38} {r['pairs_per_second']:>9.1f} {r['ratio']:>5.2f}x "
                f"{r['diff']:>11.2e}  {r['load']}"
            )
    if "encode" in report:
        print(f"\nencode passages ({report['encode']['model']}) to Parquet")
        print(f"{'engine':<12} {'passages':>9} {'passages/s':>11} {'peak MiB':>9}  machine")
        for r in report["encode"]["results"]:
            print(
                f"{r['engine']:<12} {r['passages']:>9} {r['passages_per_second']:>11.1f} "
                f"{r['peak_mib']:>9.0f}  {r['load']}"
            )


if __name__ == "__main__":
    main()
