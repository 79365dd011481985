"""Overload and shutdown red-team of ``winnow serve``: 500s, tracebacks, dropped keep-alive connections.

Starts ``winnow serve`` in a subprocess (its log captured), then N concurrent clients, each on its
own keep-alive connection (an ``httpx.AsyncClient`` with one connection), send ``POST /v1/rerank``
requests back to back for a fixed time. It counts answers by status, transport errors, the
connections each client had to open again (a server that closes a keep-alive connection after an
error answer forces a new one: "dropped"), the tracebacks and "Exception in ASGI application" lines
in the server's log, and the ``status="500"`` samples of ``/metrics``. With ``--sigterm-after S``
it sends SIGTERM S seconds into the run and reports how long the process took to exit and what
the clients got after the signal (JSON 503 ``shutting_down``, 200, or refused connections).

    python benchmarks/server_overload.py --clients 64 --duration 30 --max-queue 8
    python benchmarks/server_overload.py --clients 64 --duration 30 --sigterm-after 10 \
        --graceful-timeout 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_load import REPO, free_port, load_texts, make_requests, wait_ready


def start(model: str, port: int, extra: list[str], log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable, "-m", "winnow.cli", "serve", "--model", f"bench={model}",
        "--port", str(port), "--log-level", os.environ.get("OVERLOAD_LOG_LEVEL", "warning"), *extra,
    ]  # fmt: skip
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the caller through proc.wait
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def client_port(response) -> int | None:
    """The local port of the response's connection (None once the server has closed it)."""
    stream = response.extensions.get("network_stream")
    try:
        return stream.get_extra_info("client_addr")[1] if stream else None
    except OSError:  # closed after a "Connection: close" answer
        return None


async def run_clients(url, requests, clients, duration, seed, proc, sigterm_after) -> dict:
    import httpx

    statuses: Counter[str] = Counter()
    after_signal: Counter[str] = Counter()
    error_types: Counter[str] = Counter()
    reconnects = 0
    signalled: dict[str, float] = {}
    stop_at = time.perf_counter() + duration

    async def worker(k: int) -> None:
        nonlocal reconnects
        rng = random.Random(seed * 1000 + k)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            port = None
            while time.perf_counter() < stop_at:
                query, docs = rng.choice(requests)
                body = {"query": query, "documents": docs, "return_documents": False}
                try:
                    r = await client.post("/v1/rerank", json=body)
                    status = str(r.status_code)
                    local = client_port(r)
                    if port is not None and local != port and "sigterm" not in signalled:
                        reconnects += 1
                    port = local
                    if r.status_code != 200:
                        try:
                            error_types[f"{status} {r.json()['error_type']}"] += 1
                        except (ValueError, KeyError):
                            error_types[f"{status} not-json: {r.text[:40]!r}"] += 1
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                    port = None
                    if "sigterm" in signalled:
                        await asyncio.sleep(0.05)  # the server is gone: do not spin
                (after_signal if "sigterm" in signalled else statuses)[status] += 1
                if "sigterm" in signalled and proc.poll() is not None:
                    return

    async def terminator() -> None:
        if sigterm_after is None:
            return
        await asyncio.sleep(sigterm_after)
        signalled["sigterm"] = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:
            await asyncio.sleep(0.02)
        signalled["exited"] = time.perf_counter()

    await asyncio.gather(terminator(), *(worker(k) for k in range(clients)))
    out = {
        "statuses": dict(statuses),
        "error_types": dict(error_types),
        "reconnects": reconnects,
    }
    if "sigterm" in signalled:
        out["after_sigterm"] = dict(after_signal)
        out["exit_seconds_after_sigterm"] = round(signalled["exited"] - signalled["sigterm"], 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--max-queue", type=int, help="winnow serve --max-queue (its default)")
    parser.add_argument("--sigterm-after", type=float, help="send SIGTERM after S seconds")
    parser.add_argument("--graceful-timeout", type=float, default=5.0)
    parser.add_argument("--min-docs", type=int, default=5)
    parser.add_argument("--max-docs", type=int, default=40)
    parser.add_argument("--model", help="model folder (default: build the tiny BERT cross-encoder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, help="also write the server's log here")
    args = parser.parse_args(argv)

    import httpx

    from winnow.testing import build_tiny_bert_cross_encoder

    queries, docs, _ = load_texts(None)
    requests = make_requests(queries, docs, 500, args.min_docs, args.max_docs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_tiny_bert_cross_encoder(Path(tmp) / "tiny"))
        extra = ["--graceful-timeout", str(args.graceful_timeout)]
        if args.max_queue:
            extra += ["--max-queue", str(args.max_queue)]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        proc = start(model, port, extra, log_path)
        try:
            wait_ready(url, proc)
            result = asyncio.run(
                run_clients(
                    url, requests, args.clients, args.duration, args.seed, proc, args.sigterm_after
                )
            )
            if proc.poll() is None:
                metrics = httpx.get(url + "/metrics", timeout=30).text
                result["metrics_500_samples"] = sum(
                    1
                    for line in metrics.splitlines()
                    if 'status="500"' in line and not line.startswith("#")
                )
                proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = log_path.read_text(errors="replace")
        if args.log:
            args.log.write_text(log)
    result.update(
        clients=args.clients,
        duration=args.duration,
        max_queue=args.max_queue,
        log_tracebacks=log.count("Traceback"),
        log_asgi_exceptions=log.count("Exception in ASGI application"),
        exit_status=proc.returncode,
    )
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
