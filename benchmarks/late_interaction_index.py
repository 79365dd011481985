"""PLAID against exact MaxSim on all-MiniLM-L6-v2 token vectors, side by side in one run.

Two corpora:

* ``cranfield``: the 1,400 Cranfield abstracts (``title + " " + text``) and its 225 queries,
  each encoded by all-MiniLM-L6-v2 (``SentenceTransformer.encode(output_value=
  "token_embeddings")``, at most ``--max-length`` tokens, [CLS] and [SEP] kept), every token
  vector L2-normalised as ColBERT does. nDCG@10 of both indexes with Cranfield's qrels.
* ``synthetic``: at least ``--synthetic-docs`` documents made of windows of ``--window``
  consecutive token vectors (stride chosen so there are enough) cut from the in-context token
  vectors of every Cranfield and CISI abstract. Encoding 100,000 separate short documents with
  MiniLM takes hours on this shared 2-core machine, so the windows reuse the abstracts' vectors:
  overlapping windows share vectors, which makes near-ties at the top and so is a hard case for an
  approximate index. The queries are Cranfield's (the first ``--synthetic-queries``).

Reported per corpus: build seconds, index size on disk, queries/s (both indexes built first, then
searched in turn on each batch of ``--batch`` queries, exact then PLAID, in one process, so the
ratio compares them under the same load; exact multiplies a batch's queries at once, PLAID goes
query by query), recall@100 of PLAID against exact's top 100, top-10 overlap, nDCG@10 of PLAID
with exact's top 10 as the relevant documents, and nDCG@10 with the qrels (Cranfield). Token
vectors are encoded once and cached under ``--work`` (``<collection>-tokens.npy`` float16 +
lengths), so reruns only rebuild and search. ``uptime``'s load average is printed beside the
timings. ``--synthetic-sample N`` indexes a random N of the synthetic documents (the break-even
of exact and PLAID in docs/retrieval.md).

    WINNOW_DATA=../shared/datasets python benchmarks/late_interaction_index.py --work /tmp/li --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def encode(texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(all token vectors float16, tokens per text) of ``texts`` under MiniLM, L2-normalised."""
    import torch
    from sentence_transformers import SentenceTransformer

    from winnow.rerankers.hub import resolve_model_path

    model = SentenceTransformer(resolve_model_path(MODEL), device="cpu")
    model.max_seq_length = max_length
    # Longest first, so each batch holds similar lengths (little padding).
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out: list = [None] * len(texts)
    with torch.inference_mode():
        embs = model.encode(
            [texts[i] for i in order],
            output_value="token_embeddings",
            batch_size=32,
            show_progress_bar=sys.stderr.isatty(),
        )
    for i, e in zip(order, embs):
        v = e.float().numpy()
        out[i] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)
    lens = np.array([len(v) for v in out], dtype=np.int64)
    return np.concatenate(out), lens


def cached_tokens(work: Path, name: str, texts: list[str], max_length: int):
    """Token vectors of ``texts`` from ``work`` or encoded now; (matrices, encode seconds or 0)."""
    tok, lens = work / f"{name}-tokens.npy", work / f"{name}-lens.npy"
    if tok.is_file() and lens.is_file():
        t, n = np.load(tok, mmap_mode="r"), np.load(lens)
        return split(t, n), 0.0
    start = time.perf_counter()
    t, n = encode(texts, max_length)
    seconds = time.perf_counter() - start
    np.save(lens, n)
    np.save(tok.with_suffix(".tmp.npy"), t)
    os.replace(tok.with_suffix(".tmp.npy"), tok)
    print(
        f"encoded {name}: {len(texts)} texts, {len(t)} tokens in {seconds:.0f} s", file=sys.stderr
    )
    return split(t, n), seconds


def split(tokens: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(lens)])
    return [np.asarray(tokens[a:b], dtype=np.float32) for a, b in itertools.pairwise(offsets)]


def windows(docs: list[np.ndarray], window: int, minimum: int) -> tuple[list[np.ndarray], int]:
    """Windows of ``window`` token vectors over each document (its [CLS] and [SEP] dropped), with
    the largest stride that gives at least ``minimum`` of them."""
    inner = [d[1:-1] for d in docs]
    for stride in range(window, 0, -1):
        count = sum(max(0, (len(d) - window) // stride + 1) for d in inner)
        if count >= minimum or stride == 1:
            break
    out = [d[s : s + window] for d in inner for s in range(0, max(0, len(d) - window + 1), stride)]
    return out, stride


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def time_search(index, queries, k: int, **knobs) -> tuple[list, float]:
    """Hits of all queries searched in one call (exact batches their tokens), and queries/s."""
    start = time.perf_counter()
    hits = index.search(queries, k=k, **knobs)
    return hits, len(queries) / (time.perf_counter() - start)


def time_side_by_side(indexes: dict, queries, k: int, batch: int, knobs: dict):
    """Hits of every index and its queries/s, the indexes searched in turn on each batch of
    ``batch`` queries (exact, plaid, exact, plaid...), so both see the same machine load."""
    hits: dict = {kind: [] for kind in indexes}
    seconds = dict.fromkeys(indexes, 0.0)
    for begin in range(0, len(queries), batch):
        part = queries[begin : begin + batch]
        for kind, index in indexes.items():
            start = time.perf_counter()
            hits[kind].extend(index.search(part, k=k, **knobs.get(kind, {})))
            seconds[kind] += time.perf_counter() - start
    return hits, {kind: len(queries) / s for kind, s in seconds.items()}


def overlap(ref: list, got: list, k: int) -> float:
    return float(
        np.mean([len({d for d, _ in a[:k]} & {d for d, _ in b[:k]}) / k for a, b in zip(ref, got)])
    )


def ndcg_vs_exact(ref: list, got: list) -> float:
    """nDCG@10 of ``got`` with exact's top 10 of each query as the relevant documents (graded
    10 for exact's first down to 1 for its tenth): 1.0 when the top 10 is exact's, in order."""
    from winnow.evaluation.metrics import evaluate

    qrels = {str(i): {d: 10 - r for r, (d, _) in enumerate(a[:10])} for i, a in enumerate(ref)}
    run = {str(i): dict(b) for i, b in enumerate(got)}
    return evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]


def compare(
    name,
    ids,
    docs,
    queries,
    work: Path,
    knobs: dict,
    search_knobs: dict,
    qrels=None,
    batch=25,
    reuse=False,
):
    from winnow.evaluation.metrics import evaluate
    from winnow.retrieval.late_interaction import build_index, load_index

    row: dict = {"corpus": name, "documents": len(ids), "tokens": int(sum(map(len, docs)))}
    row["queries"] = len(queries)
    indexes = {}
    # The cached vectors are float16, so a float16 exact index holds them without loss.
    for kind, kw in (("exact", {"dtype": "float16"}), ("plaid", knobs)):
        folder = work / f"{name}-{kind}"
        if reuse and (folder / "meta.json").is_file():  # built by an earlier run: no build time
            index = load_index(folder, mmap=False)
            if index.doc_ids != list(ids) or (kind == "plaid" and index.nbits != knobs["nbits"]):
                raise SystemExit(f"{folder} holds another corpus or knobs; drop --reuse")
            row[f"{kind}_build_s"] = None
        else:
            row[f"{kind}_load_avg_before_build"] = load_avg()
            start = time.perf_counter()
            index = build_index(ids, docs, kind=kind, **kw)
            row[f"{kind}_build_s"] = time.perf_counter() - start
            shutil.rmtree(folder, ignore_errors=True)
            index.save(folder)
        row[f"{kind}_disk_mb"] = folder_mb(folder)
        if kind == "plaid":
            row["plaid_knobs"] = index.meta()["knobs"]
        indexes[kind] = index
    indexes["plaid"].search(queries[:1], k=100, **search_knobs)  # one-off: the token norms
    row["load_avg_before_search"] = load_avg()
    hits, qps = time_side_by_side(indexes, queries, 100, batch, {"plaid": search_knobs})
    row["load_avg_after_search"] = load_avg()
    for kind in indexes:
        row[f"{kind}_qps"] = qps[kind]
        (work / f"{name}-{kind}-hits.json").write_text(json.dumps(hits[kind]))
    row["recall@100_vs_exact"] = overlap(hits["exact"], hits["plaid"], 100)
    row["top10_overlap_vs_exact"] = overlap(hits["exact"], hits["plaid"], 10)
    row["nDCG@10_vs_exact"] = ndcg_vs_exact(hits["exact"], hits["plaid"])
    row["speedup_qps"] = row["plaid_qps"] / row["exact_qps"]
    if qrels is not None:
        for kind in ("exact", "plaid"):
            run = {qid: dict(h) for qid, h in zip(qrels["_order"], hits[kind])}
            row[f"{kind}_nDCG@10"] = evaluate(run, qrels["qrels"], ["nDCG@10"])["nDCG@10"]
    return row


def sweep(work: Path, name: str, queries: list, grid: str) -> list[dict]:
    """Search options against the saved ``<name>-plaid`` index and exact hits of an earlier run:
    recall@100 against exact and queries/s for each ``nprobe:ndocs:threshold`` in ``grid``."""
    from winnow.retrieval.late_interaction import load_index

    ref = json.loads((work / f"{name}-exact-hits.json").read_text())
    index = load_index(work / f"{name}-plaid", mmap=False)
    queries = queries[: len(ref)]
    rows = []
    for item in grid.split(","):
        nprobe, ndocs, threshold = item.split(":")
        knobs = {"nprobe": int(nprobe), "ndocs": int(ndocs)}
        knobs["centroid_score_threshold"] = float(threshold)
        hits, qps = time_search(index, queries, 100, **knobs)
        rows.append(
            {
                **knobs,
                "qps": qps,
                "recall@100_vs_exact": overlap(ref, hits, 100),
                "top10_overlap_vs_exact": overlap(ref, hits, 10),
                "load_avg": load_avg(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", default="/tmp/winnow-late-interaction", help="cache folder")
    p.add_argument("--max-length", type=int, default=256, help="tokens per abstract (MiniLM: 256)")
    p.add_argument("--window", type=int, default=16, help="token vectors per synthetic document")
    p.add_argument("--synthetic-docs", type=int, default=100_000)
    p.add_argument("--synthetic-queries", type=int, default=50)
    p.add_argument(
        "--synthetic-sample",
        type=int,
        default=None,
        help="index only this many synthetic documents, drawn at random (seed 0)",
    )
    p.add_argument("--cranfield-queries", type=int, default=225)
    p.add_argument("--corpora", default="cranfield,synthetic")
    p.add_argument("--encode-only", action="store_true", help="encode and cache, then stop")
    p.add_argument("--ncentroids", type=int, default=None)
    p.add_argument("--nbits", type=int, default=8)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--ndocs", type=int, default=None)
    p.add_argument("--threshold", type=float, default=None, help="centroid_score_threshold")
    p.add_argument(
        "--sweep",
        default=None,
        help="nprobe:ndocs:threshold,... searched on the indexes saved by an earlier run "
        "(the first corpus of --corpora)",
    )
    p.add_argument("--batch", type=int, default=25, help="queries per turn of each index")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="load the indexes an earlier run saved under --work instead of building them",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from winnow.data import load_dataset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = os.environ.get("WINNOW_DATA")
    cran = load_dataset("cranfield", data_dir=data, download=False)
    enc: dict[str, float] = {}
    qids = [q for q in cran.queries if q in cran.qrels]
    queries, enc["cranfield_queries"] = cached_tokens(
        work, "cranfield-queries", [cran.queries[q] for q in qids], args.max_length
    )
    cran_ids = list(cran.corpus)
    cran_docs, enc["cranfield"] = cached_tokens(
        work, "cranfield", [cran.corpus[d].full_text for d in cran_ids], args.max_length
    )
    corpora = args.corpora.split(",")
    if "synthetic" in corpora or args.encode_only:
        cisi = load_dataset("cisi", data_dir=data, download=False)
        cisi_docs, enc["cisi"] = cached_tokens(
            work, "cisi", [d.full_text for d in cisi.corpus.values()], args.max_length
        )
    if args.sweep:
        sweep(
            work,
            corpora[0],
            queries[: args.synthetic_queries] if corpora[0] == "synthetic" else queries,
            args.sweep,
        )
        return
    if args.encode_only:
        print(json.dumps({"encode_seconds": enc, "load_avg": load_avg()}))
        return
    knobs = {"nbits": args.nbits}
    if args.ncentroids:
        knobs["ncentroids"] = args.ncentroids
    search_knobs = {
        k: v
        for k, v in {
            "nprobe": args.nprobe,
            "ndocs": args.ndocs,
            "centroid_score_threshold": args.threshold,
        }.items()
        if v is not None
    }
    rows = []
    if "cranfield" in corpora:
        rows.append(
            compare(
                "cranfield",
                cran_ids,
                cran_docs,
                queries[: args.cranfield_queries],
                work,
                knobs,
                search_knobs,
                {"qrels": cran.qrels, "_order": qids[: args.cranfield_queries]},
                args.batch,
                args.reuse,
            )
        )
    if "synthetic" in corpora:
        syn, stride = windows(cran_docs + cisi_docs, args.window, args.synthetic_docs)
        ids = [f"w{i}" for i in range(len(syn))]
        name = "synthetic"
        if args.synthetic_sample:  # a random subset (break-even of exact and PLAID)
            keep = np.sort(np.random.default_rng(0).choice(len(syn), args.synthetic_sample, False))
            syn, ids = [syn[i] for i in keep], [ids[i] for i in keep]
            name = f"synthetic{args.synthetic_sample}"
        row = compare(
            name,
            ids,
            syn,
            queries[: args.synthetic_queries],
            work,
            knobs,
            search_knobs,
            batch=args.batch,
            reuse=args.reuse,
        )
        row["window"], row["stride"] = args.window, stride
        rows.append(row)
    result = {"encode_seconds": enc, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    cols = [
        ("corpus", "{}"),
        ("documents", "{}"),
        ("tokens", "{}"),
        ("exact_build_s", "{}"),
        ("plaid_build_s", "{}"),
        ("exact_disk_mb", "{:.0f}"),
        ("plaid_disk_mb", "{:.0f}"),
        ("exact_qps", "{:.2f}"),
        ("plaid_qps", "{:.1f}"),
        ("speedup_qps", "{:.1f}x"),
        ("recall@100_vs_exact", "{:.3f}"),
        ("top10_overlap_vs_exact", "{:.3f}"),
        ("nDCG@10_vs_exact", "{:.4f}"),
        ("exact_nDCG@10", "{:.4f}"),
        ("plaid_nDCG@10", "{:.4f}"),
    ]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f.format(r[c]) if c in r else "-" for c, f in cols) + " |")
    print(f"encode seconds: {enc}; load average now {load_avg()}")


if __name__ == "__main__":
    main()
