"""What a deep health check costs: ``/ready?deep=1`` against scoring the same probe batch directly.

One run, one model, one process: the MiniLM-L6 cross-encoder (``build_minilm_cross_encoder``: the
compute of ms-marco-MiniLM-L-6-v2) served by a real uvicorn on 127.0.0.1 in a thread
(``winnow.server.testing.running_server``), and the same reranker instance called directly. The
two are measured alternately, ``--runs`` times each, so a shared machine's drifting load hits both:

* direct: ``reranker.score_pairs(probe_pairs(...))``, the check's own inference;
* probe: ``GET /ready?deep=1`` (the check's ``seconds`` as the server reports it, through the
  batcher, and the client's round trip).

It then times the start-up deep warm-up (``deep_warmup``) for each ``--warmup-samples`` count
(pairs of max_length = 512 tokens). It prints medians and the probe / direct ratio.

    python benchmarks/health_check.py --runs 10 --warmup-samples 1,8,32
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="probes and direct calls, each")
    parser.add_argument(
        "--warmup-samples", default="1,8,32", help="comma-separated deep warm-up sizes to time"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    import httpx

    from winnow import load_reranker
    from winnow.server.config import ModelSpec, ServerConfig
    from winnow.server.health import PROBE_PAIRS, PROBE_WORDS, deep_warmup, probe_pairs
    from winnow.server.testing import running_server
    from winnow.testing import build_minilm_cross_encoder

    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_minilm_cross_encoder(Path(tmp) / "minilm-ce"))
        reranker = load_reranker(path)
        config = ServerConfig(models=(ModelSpec.parse(f"m={path}"),))
        direct, served, round_trip = [], [], []
        with running_server(config, timeout=600) as srv, httpx.Client(timeout=120) as client:
            for run in range(args.runs):
                pairs = probe_pairs(PROBE_PAIRS, PROBE_WORDS, nonce=10_000 + run)
                started = time.perf_counter()
                reranker.score_pairs(pairs)
                direct.append(time.perf_counter() - started)
                started = time.perf_counter()
                body = client.get(srv.url + "/ready", params={"deep": 1}).json()
                round_trip.append(time.perf_counter() - started)
                check = body["models"]["m"]["last_check"]
                if not check["ok"]:
                    raise SystemExit(f"deep check failed: {check['error']}")
                served.append(check["seconds"])
        warmups = {}
        for n in [int(x) for x in args.warmup_samples.split(",") if x.strip()]:
            result = deep_warmup(reranker, n, max_batch_pairs=512)
            warmups[n] = result.seconds

    figures = {
        "model": "MiniLM-L6 cross-encoder (build_minilm_cross_encoder), cpu, float32",
        "probe_pairs": PROBE_PAIRS,
        "runs": args.runs,
        "direct_median_s": statistics.median(direct),
        "probe_median_s": statistics.median(served),
        "round_trip_median_s": statistics.median(round_trip),
        "probe_over_direct": statistics.median(served) / statistics.median(direct),
        "deep_warmup_s": warmups,
    }
    print(f"model: {figures['model']}; {PROBE_PAIRS} probe pairs, {args.runs} runs each")
    print(f"  direct score_pairs      median {figures['direct_median_s']:.3f} s")
    print(f"  /ready?deep=1 (server)  median {figures['probe_median_s']:.3f} s")
    print(f"  /ready?deep=1 (client)  median {figures['round_trip_median_s']:.3f} s")
    print(f"  probe / direct          {figures['probe_over_direct']:.2f}x")
    for n, seconds in warmups.items():
        print(f"  deep warm-up, {n:>3} x 512-token pairs: {seconds:.2f} s")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
