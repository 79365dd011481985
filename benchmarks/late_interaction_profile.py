"""Where PLAID's search time goes, and where exact MaxSim stops being the faster.

Reads the token vectors ``benchmarks/late_interaction_index.py`` cached under ``--work``
(all-MiniLM-L6-v2, float16) and times exact and PLAID search on the first ``--queries`` Cranfield
queries, k = 100, default knobs:

* ``cranfield``: the Cranfield indexes (built once and saved under ``--work`` as ``cran-exact``
  and ``cran-plaid``), exact then PLAID on all the queries, recall@100 of PLAID against exact;
  ``--profile`` then prints cProfile's top functions of the PLAID search.
* ``subsets N,N,...``: for each N, an exact and a PLAID index of N synthetic documents drawn at
  random (seed 0) from the 16-token windows of the Cranfield and CISI abstracts (as the index
  benchmark cuts them), timed the same way: the break-even behind ``index=auto``.

    python benchmarks/late_interaction_index.py --work /tmp/li --encode-only
    python benchmarks/late_interaction_profile.py --work /tmp/li cranfield --profile
    python benchmarks/late_interaction_profile.py --work /tmp/li subsets 2000,5000,20000
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from late_interaction_index import split, windows


def tokens(work: Path, name: str) -> list[np.ndarray]:
    return split(
        np.load(work / f"{name}-tokens.npy", mmap_mode="r"), np.load(work / f"{name}-lens.npy")
    )


def recall(ref, got, k: int = 100) -> float:
    return float(
        np.mean([len({d for d, _ in a} & {d for d, _ in b}) / k for a, b in zip(ref, got)])
    )


def timed(index, queries, k: int = 100):
    start = time.perf_counter()
    hits = index.search(queries, k)
    return hits, len(queries) / (time.perf_counter() - start)


def cranfield(work: Path, queries, profile: bool) -> None:
    from winnow.retrieval.late_interaction import build_index, load_index

    if not (work / "cran-plaid").exists():
        docs = tokens(work, "cranfield")
        ids = [f"d{i}" for i in range(len(docs))]
        t = time.perf_counter()
        build_index(ids, docs, kind="plaid").save(work / "cran-plaid")
        print(f"plaid build {time.perf_counter() - t:.1f} s")
        build_index(ids, docs, kind="exact", dtype="float16").save(work / "cran-exact")
    plaid = load_index(work / "cran-plaid", mmap=False)
    exact = load_index(work / "cran-exact", mmap=False)
    ref, exact_qps = timed(exact, queries)
    got, plaid_qps = timed(plaid, queries)
    print(
        f"exact {exact_qps:.2f} q/s plaid {plaid_qps:.2f} q/s recall {recall(ref, got):.3f} "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if profile:
        out = work / "plaid.prof"
        cProfile.runctx(
            "plaid.search(queries, 100)", globals(), {"plaid": plaid, "queries": queries}, str(out)
        )
        pstats.Stats(str(out)).sort_stats("cumtime").print_stats(15)


def subsets(work: Path, queries, sizes: list[int]) -> None:
    from winnow.retrieval.late_interaction import build_index

    syn, _ = windows(tokens(work, "cranfield") + tokens(work, "cisi"), 16, 100_000)
    rng = np.random.default_rng(0)
    for n in sizes:
        pick = np.sort(rng.choice(len(syn), n, replace=False))
        docs, ids = [syn[i] for i in pick], [f"w{i}" for i in pick]
        exact = build_index(ids, docs, kind="exact", dtype="float16")
        t = time.perf_counter()
        plaid = build_index(ids, docs, kind="plaid")
        build_s = time.perf_counter() - t
        plaid.search(queries[:1], 100)  # one-off: the token norms
        ref, exact_qps = timed(exact, queries)
        got, plaid_qps = timed(plaid, queries)
        print(
            f"docs {n} tokens {plaid.num_tokens}: exact {exact_qps:.2f} q/s plaid "
            f"{plaid_qps:.2f} q/s ratio {plaid_qps / exact_qps:.2f} recall@100 "
            f"{recall(ref, got):.3f} plaid build {build_s:.0f}s load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", required=True, help="the index benchmark's --work folder")
    p.add_argument("--queries", type=int, default=50)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cranfield")
    c.add_argument("--profile", action="store_true")
    s = sub.add_parser("subsets")
    s.add_argument("sizes", help="document counts, comma-separated")
    args = p.parse_args()
    work = Path(args.work)
    queries = tokens(work, "cranfield-queries")[: args.queries]
    if args.what == "cranfield":
        cranfield(work, queries, args.profile)
    else:
        subsets(work, queries, [int(x) for x in args.sizes.split(",")])


if __name__ == "__main__":
    main()
