"""Load test of ``winnow serve``: served pairs/s against the library's offline ``score_pairs``.

One run measures both sides with the same model and the same texts:

* offline: ``reranker.score_pairs`` on all the pairs of a few hundred requests at once (the engine's
  best case: one call, length-sorted token-budget batches), in this process, before the server starts;
* served: ``winnow serve`` in a subprocess on 127.0.0.1, and N concurrent clients (asyncio + httpx)
  each sending ``POST /v1/rerank`` requests of 20-100 documents, back to back, for a fixed time.

It prints, per concurrency level, requests/s, pairs/s, p50/p95/p99 latency, errors, and the ratio of
served pairs/s to offline pairs/s (the offline rate is measured before and after the server runs,
and their mean is used, so a shared machine's drifting load is visible). The model is all-MiniLM-L6-v2's encoder with a fresh one-logit head
(``winnow.testing.build_minilm_cross_encoder``: the compute of ms-marco-MiniLM-L-6-v2), the texts are
Cranfield queries and abstracts from ../shared/datasets when present.

    python benchmarks/server_load.py --levels 1,8,64 --duration 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_texts(data_dir: Path | None) -> tuple[list[str], list[str], str]:
    """(queries, documents, source): Cranfield when available, else generated sentences."""
    candidates = [data_dir] if data_dir else []
    if os.environ.get("WINNOW_DATA"):
        candidates.append(Path(os.environ["WINNOW_DATA"]))
    candidates.append(REPO.parent / "shared" / "datasets")
    for base in candidates:
        folder = base / "cranfield"
        if (folder / "corpus.jsonl").is_file() and (folder / "queries.jsonl").is_file():
            with open(folder / "queries.jsonl") as f:
                queries = [json.loads(line)["text"] for line in f if line.strip()]
            with open(folder / "corpus.jsonl") as f:
                docs = [json.loads(line)["text"] for line in f if line.strip()]
            return queries, [d for d in docs if d.strip()], str(folder)
    from winnow.testing import sample_corpus

    sentences = sample_corpus(3000, seed=1)
    return (
        sentences[:200],
        [" ".join(sentences[i : i + 6]) for i in range(200, 3000, 2)],
        "generated",
    )


def make_requests(
    queries: list[str], docs: list[str], n: int, lo: int, hi: int, seed: int
) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    return [(rng.choice(queries), rng.sample(docs, rng.randint(lo, hi))) for _ in range(n)]


def measure_offline(reranker, requests, min_seconds: float) -> dict:
    """Pairs/s of one score_pairs call over all the requests' pairs (repeated for min_seconds)."""
    pairs = [(q, d) for q, ds in requests for d in ds]
    reranker.score_pairs(pairs[:64])  # warm-up
    runs, started = 0, time.perf_counter()
    while True:
        reranker.score_pairs(pairs)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    return {
        "pairs": len(pairs) * runs,
        "seconds": elapsed,
        "pairs_per_s": len(pairs) * runs / elapsed,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable, "-m", "winnow.cli", "serve", "--model", f"bench={model}",
        "--port", str(port), "--log-level", "warning", "--max-queue", "4096", *extra,
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError("server did not become ready")


async def run_level(url: str, requests, clients: int, duration: float, seed: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    pairs_done = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        stop_at = time.perf_counter() + duration

        async def worker(k: int) -> None:
            nonlocal pairs_done
            rng = random.Random(seed * 1000 + k)
            while time.perf_counter() < stop_at:
                query, docs = rng.choice(requests)
                body = {"query": query, "documents": docs, "return_documents": False}
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/rerank", json=body)
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - t0)
                if status == "200":
                    pairs_done += len(docs)
                else:
                    errors[status] = errors.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(lat),
        "requests_per_s": len(lat) / elapsed,
        "pairs_per_s": pairs_done / elapsed,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "errors": sum(errors.values()),
        "errors_by_status": errors,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,8,64", help="concurrent clients per level")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--min-docs", type=int, default=20)
    parser.add_argument("--max-docs", type=int, default=100)
    parser.add_argument("--model", help="model folder (default: build the MiniLM cross-encoder)")
    parser.add_argument(
        "--max-length", type=int, help="token limit for both sides (default: the model's 512)"
    )
    parser.add_argument("--data", type=Path, help="folder holding cranfield/ (BEIR format)")
    parser.add_argument("--offline-requests", type=int, default=8, help="requests in offline run")
    parser.add_argument("--offline-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra flag for winnow serve (repeat)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    levels = [int(x) for x in args.levels.split(",") if x.strip()]

    import winnow
    from winnow.testing import build_minilm_cross_encoder

    queries, docs, source = load_texts(args.data)
    requests = make_requests(queries, docs, 500, args.min_docs, args.max_docs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_minilm_cross_encoder(Path(tmp) / "minilm-ce"))
        reranker = winnow.load_reranker(model, max_length=args.max_length)
        offline = measure_offline(reranker, requests[: args.offline_requests], args.offline_seconds)
        winnow.clear_cache()  # free the weights before the server loads its own copy
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        extra = list(args.server_arg)
        if args.max_length:
            extra += ["--max-length", str(args.max_length)]
        proc = start_server(model, port, extra)
        try:
            wait_ready(url, proc)
            asyncio.run(run_level(url, requests, 2, 2.0, args.seed))  # warm the server
            results = []
            for clients in levels:
                level = asyncio.run(run_level(url, requests, clients, args.duration, args.seed))
                results.append(level)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        # Measured again after the server, so drift in a shared machine's load shows up.
        reranker = winnow.load_reranker(model, max_length=args.max_length)
        offline_after = measure_offline(
            reranker, requests[: args.offline_requests], args.offline_seconds
        )
    offline_rate = (offline["pairs_per_s"] + offline_after["pairs_per_s"]) / 2
    for level in results:
        level["ratio_to_offline"] = level["pairs_per_s"] / offline_rate
        if not args.json:
            print(
                f"{level['clients']:>4} clients: {level['requests_per_s']:7.2f} req/s "
                f"{level['pairs_per_s']:8.1f} pairs/s  p50 {level['p50_ms']:8.0f} ms  "
                f"p95 {level['p95_ms']:8.0f} ms  p99 {level['p99_ms']:8.0f} ms  "
                f"errors {level['errors']}  served/offline {level['ratio_to_offline']:.2f}"
            )
    report = {
        "model": "MiniLM-L6 cross-encoder (fresh head)" if not args.model else args.model,
        "texts": source,
        "docs_per_request": [args.min_docs, args.max_docs],
        "max_length": args.max_length,
        "offline_before": offline,
        "offline_after": offline_after,
        "offline_pairs_per_s": offline_rate,
        "levels": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"offline score_pairs: {offline_rate:.1f} pairs/s (before the server "
            f"{offline['pairs_per_s']:.1f}, after {offline_after['pairs_per_s']:.1f}); "
            f"texts: {source}"
        )
    return report


if __name__ == "__main__":
    main()
