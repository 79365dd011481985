"""The MCP server (`winnow mcp`) tested with the mcp SDK's own client over real transports:
stdio (a `winnow mcp` subprocess) and streamable HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

import winnow
from winnow.pipeline import BM25

DOCS = ["the wing of the aircraft makes lift", "heat transfer in a boundary layer", "wing lift"]
QUERY = "lift of a wing"


def expected_rerank(reranker, top_k=None):
    return [
        {"index": h.index, "score": h.score, "rank": h.rank, "document": h.document}
        for h in reranker.rank(QUERY, DOCS, top_k=top_k)
    ]


async def exercise(client, reranker, dataset):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"rerank", "search"}
    assert set(tools["rerank"].input_schema["properties"]) == {
        "query",
        "documents",
        "top_k",
        "model",
    }
    assert tools["rerank"].input_schema["required"] == ["query", "documents"]
    assert "results" in tools["search"].output_schema["properties"]

    got = await client.call_tool("rerank", {"query": QUERY, "documents": DOCS, "top_k": 2})
    assert not got.is_error
    assert got.structured_content["results"] == expected_rerank(reranker, 2)

    found = await client.call_tool("search", {"query": "information retrieval", "top_k": 3})
    want = [h.as_dict() for h in BM25().bind(dataset).search("information retrieval", top_k=3)]
    assert found.structured_content["results"] == want
    assert found.structured_content["collection"] == dataset.name

    bad = await client.call_tool("rerank", {"query": QUERY, "documents": DOCS, "model": "nope"})
    assert bad.is_error and "unknown model 'nope'" in bad.content[0].text
    negative = await client.call_tool("rerank", {"query": QUERY, "documents": DOCS, "top_k": -1})
    assert negative.is_error and "top_k must be a non-negative integer" in negative.content[0].text


@pytest.fixture
def adi(shared_datasets):
    from winnow.data import load_dataset

    return load_dataset(shared_datasets / "adi")


def test_mcp_over_stdio_with_the_sdk_client(tiny_bert, adi, shared_datasets):
    env = {
        "PYTHONPATH": os.pathsep.join(sys.path),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "WINNOW_DATA": str(shared_datasets),
    }
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "winnow.cli", "mcp", "--model", tiny_bert, "--dataset", "adi"],
        env=env,
    )
    reranker = winnow.load_reranker(tiny_bert)

    async def main():
        with anyio.fail_after(180):
            async with Client(params) as client:
                await exercise(client, reranker, adi)

    anyio.run(main)


@contextlib.contextmanager
def serving_http(server):
    """Serve the MCP server's streamable-HTTP app with uvicorn on 127.0.0.1 in a thread."""
    import uvicorn

    from winnow.integrations.mcp import http_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    userver = uvicorn.Server(uvicorn.Config(http_app(server), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=userver.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not userver.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the MCP HTTP server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        userver.should_exit = True
        thread.join(30)
        sock.close()


def test_mcp_over_streamable_http_with_the_sdk_client(tiny_bert, adi):
    from winnow.integrations.mcp import build_server

    reranker = winnow.load_reranker(tiny_bert)
    server = build_server({"tiny": reranker}, pipeline=BM25().bind(adi))
    assert reranker.warmed  # models load before any client connects

    async def main(url):
        with anyio.fail_after(120):
            async with Client(url) as client:
                await exercise(client, reranker, adi)
                named = await client.call_tool(
                    "rerank", {"query": QUERY, "documents": DOCS, "model": "tiny"}
                )
                assert named.structured_content["model"] == "tiny"

    with serving_http(server) as url:
        anyio.run(main, url)


def test_winnow_mcp_command_serves_streamable_http(tiny_bert, tmp_path):
    """`winnow mcp --transport http` as a user starts it: a subprocess on 127.0.0.1, stopped after."""
    import subprocess

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # the command binds it itself; a clash would fail the start, not the check
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "winnow.cli", "mcp", "--model", f"tiny={tiny_bert}"]
    cmd += ["--transport", "http", "--port", str(port)]
    log = (tmp_path / "err.txt").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    reranker = winnow.load_reranker(tiny_bert)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "winnow mcp did not listen in time"
            time.sleep(0.1)

        async def main():
            with anyio.fail_after(120):
                async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                    tools = [t.name for t in (await client.list_tools()).tools]
                    assert tools == ["rerank"]  # no --dataset: no search tool
                    got = await client.call_tool("rerank", {"query": QUERY, "documents": DOCS})
                    assert got.structured_content["model"] == "tiny"
                    assert got.structured_content["results"] == expected_rerank(reranker)

        anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
