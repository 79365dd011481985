"""Red-team regressions of the server's load life cycle and error path, over real HTTP.

Each test here failed before its fix: named errors (429/503) on a kept-alive connection without a
traceback in the log, bounded metric labels, abandoned requests not scored, shutdown past the
graceful timeout answered in JSON within the deadline, retries, fallbacks and the ``/ready`` policy.
The model is the gated tiny cross-encoder (``winnow.server.testing``), so "a request is inside the
model" is established, not slept for.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from winnow import load_reranker
from winnow.rerankers.cache import RERANKERS
from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.testing import GATED_KIND, Background, Gates, running_server, wait_for
from winnow.testing import sample_corpus

DOCS = sample_corpus(12, seed=7)


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def label_sets(text: str, name: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith(name + "{")}


class LogCapture(logging.Handler):
    """Every record of the uvicorn and winnow loggers, formatted with its traceback if any."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.loggers = [logging.getLogger("uvicorn"), logging.getLogger("winnow")]
        self.levels = [lg.level for lg in self.loggers]

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> LogCapture:
        for lg in self.loggers:
            lg.addHandler(self)
        logging.getLogger("winnow").setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        for lg, level in zip(self.loggers, self.levels):
            lg.removeHandler(self)
            lg.setLevel(level)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def gated(tiny_bert: str, **kw) -> ServerConfig:
    return ServerConfig(models=(ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),), **kw)


def local_port(response: httpx.Response) -> int:
    """The client-side port of the connection a response came on (same port: same connection)."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def raw_post(path: str, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_responses(sock: socket.socket, count: int, timeout: float = 30.0) -> list[int]:
    """Statuses of the next ``count`` responses on ``sock`` (fewer if the server closes it)."""
    sock.settimeout(timeout)
    data = b""
    statuses: list[int] = []
    while len(statuses) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = data[:head_end].decode("latin-1")
            length = int(re.search(r"(?i)content-length: (\d+)", head).group(1))
            if len(data) < head_end + 4 + length:
                break
            statuses.append(int(head.split(" ", 2)[1]))
            data = data[head_end + 4 + length :]
    return statuses


@pytest.fixture(autouse=True)
def open_gates():
    Gates.open_all()
    Gates.load_attempts = 0
    yield
    Gates.open_all()


# -- 429 and 503 are named errors: clean answers, connection kept, right status in metrics ---------
def test_429_and_503_keep_the_connection_and_log_no_traceback(tiny_bert, fresh_cache):
    Gates.load.clear()
    payload = {"query": "q", "documents": DOCS[:2]}
    with (
        running_server(gated(tiny_bert, max_queue=1), wait_ready=False) as srv,
        LogCapture() as log,
        httpx.Client(base_url=srv.url, timeout=30) as client,
    ):
        loading = client.post("/v1/rerank", json=payload)
        assert loading.status_code == 503 and loading.headers["Retry-After"]
        assert loading.json()["error_type"] == "unavailable"
        port = local_port(loading)
        # two pipelined POSTs while loading: two 503s, and the socket stays open for a third
        with socket.create_connection(address(srv.url)) as sock:
            sock.sendall(raw_post("/v1/rerank", payload) * 2)
            assert read_responses(sock, 2) == [503, 503]
            sock.sendall(raw_post("/rerank", {"query": "q", "texts": ["d"]}))
            assert read_responses(sock, 1) == [503]
        Gates.load.set()
        wait_for(lambda: client.get("/ready").status_code == 200)

        Gates.score.clear()
        Gates.entered.clear()
        busy = Background(srv.url, payload)
        assert Gates.entered.wait(30)
        waiting = Background(srv.url, {"query": "b", "texts": DOCS[:2]}, path="/rerank")
        wait_for(lambda: srv.app.state.server.batchers["m"].depth == 1)
        full = client.post("/v1/rerank", json=payload)
        assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
        assert full.json()["error_type"] == "overloaded"
        Gates.score.set()
        assert busy.result().status_code == 200 and waiting.result().status_code == 200
        ok = client.post("/v1/rerank", json=payload)
        assert ok.status_code == 200
        assert local_port(full) == port and local_port(ok) == port  # one connection throughout

        text = client.get("/metrics").text
        count = "winnow_request_duration_seconds_count"
        assert metric(text, f'{count}{{endpoint="/v1/rerank",method="POST",status="429"}}') == 1
        assert metric(text, f'{count}{{endpoint="/v1/rerank",method="POST",status="503"}}') == 3
        assert metric(text, f'{count}{{endpoint="/rerank",method="POST",status="503"}}') == 1
        assert 'status="500"' not in text
    assert "Traceback" not in log.text
    assert "Exception in ASGI application" not in log.text


# -- metric labels are bounded ---------------------------------------------------------------------
def test_odd_methods_and_paths_add_no_label_sets(tiny_bert):
    config = ServerConfig(models=(ModelSpec.parse(tiny_bert),))
    name = "winnow_request_duration_seconds_count"
    with running_server(config) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        client.request("ZZ0", "/v1/rerank")
        client.request("ZZ0", "/no/such/0")
        client.get("/zz0")
        client.get("/metrics")  # (a request is counted once its answer is sent)
        before = label_sets(client.get("/metrics").text, name)
        for i in range(1, 51):
            client.request(f"ZZ{i}", "/v1/rerank")
            client.request(f"ZZ{i}", f"/no/such/{i}")
            client.get(f"/zz{i}")
        text = client.get("/metrics").text
        assert label_sets(text, name) == before
        assert "ZZ" not in text and "/zz" not in text and "/no/such" not in text
        assert metric(text, f'{name}{{endpoint="other",method="other",status="404"}}') == 51
        assert metric(text, f'{name}{{endpoint="/v1/rerank",method="other",status="405"}}') == 51


# -- a request whose client went away is not scored ------------------------------------------------
def test_pairs_of_a_disconnected_request_never_reach_the_model(tiny_bert):
    with running_server(gated(tiny_bert, max_wait_ms=0)) as srv:
        batcher = srv.app.state.server.batchers["m"]
        before = metric(httpx.get(srv.url + "/metrics").text, "winnow_pairs_scored_total")
        Gates.score.clear()
        Gates.entered.clear()
        busy = Background(srv.url, {"query": "wing", "documents": DOCS[:1]})
        assert Gates.entered.wait(30)
        sock = socket.create_connection(address(srv.url))
        sock.sendall(raw_post("/v1/rerank", {"query": "gone", "documents": DOCS}))
        wait_for(lambda: batcher.depth == 1)
        sock.close()  # the client gives up (curl -m 3)
        wait_for(lambda: batcher.depth == 0)  # its job left the queue without the model
        Gates.score.set()
        assert busy.result().status_code == 200
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "winnow_pairs_scored_total") - before == 1  # only the busy request's
        assert metric(text, 'winnow_cancelled_requests_total{model="m"}') == 1
        assert metric(text, 'winnow_cancelled_pairs_total{model="m"}') == len(DOCS)
        assert metric(text, 'winnow_errors_total{type="client_closed"}') == 1


# -- shutdown past the graceful timeout --------------------------------------------------------------
def test_shutdown_past_the_graceful_timeout_answers_json_503_and_exits(tiny_bert):
    with running_server(gated(tiny_bert, graceful_timeout=1.0)) as srv:
        Gates.score.clear()
        Gates.entered.clear()
        in_model = Background(srv.url, {"query": "wing", "documents": DOCS[:2]})
        assert Gates.entered.wait(30)
        queued = Background(srv.url, {"query": "heat", "texts": DOCS[:3]}, path="/rerank")
        wait_for(lambda: srv.app.state.server.batchers["m"].depth == 1)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        # the model stays held (its gate waits 60 s): the server must not wait for it
        for r in (in_model.result(), queued.result()):
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/json"
            assert r.json()["error_type"] == "shutting_down" and r.headers["Retry-After"]
        stopper.join(30)
        assert not srv.thread.is_alive()
        assert not Gates.score.is_set()  # it exited with the model call still held
        text = srv.app.state.metrics.render()[0].decode()
        assert metric(text, 'winnow_cancelled_requests_total{model="m"}') == 2
        assert metric(text, 'winnow_cancelled_pairs_total{model="m"}') == 3  # the queued ones


# -- load retries, the /ready policy, fallbacks ----------------------------------------------------
def test_a_flaky_load_is_retried_and_logged_with_its_traceback(tiny_bert, fresh_cache):
    Gates.load_failures = 2
    with LogCapture() as log, running_server(gated(tiny_bert, load_backoff=0.01)) as srv:
        ready = httpx.get(srv.url + "/ready")
        assert ready.status_code == 200 and ready.json()["models"]["m"]["status"] == "ready"
        assert Gates.load_attempts == 3
        assert srv.app.state.server.batchers["m"].load_failures == 2
    assert log.text.count("failed to load (try") == 2
    assert "Traceback" in log.text and "flaky load" in log.text


def test_ready_when_all_or_any_with_a_model_that_stays_failed(tiny_bert, tmp_path, fresh_cache):
    missing = tmp_path / "no-such-model"
    models = (ModelSpec.parse(f"good={tiny_bert}"), ModelSpec.parse(f"bad={missing}"))
    for policy, status in (("all", 503), ("any", 200)):
        config = ServerConfig(models=models, ready_when=policy, load_retries=1, load_backoff=0.01)
        with LogCapture() as log, running_server(config, wait_ready=False) as srv:
            batchers = srv.app.state.server.batchers
            good, bad = batchers["good"], batchers["bad"]
            wait_for(lambda: bad.state == "failed" and good.state == "ready")  # noqa: B023
            ready = httpx.get(srv.url + "/ready")
            assert ready.status_code == status and ready.json()["ready"] is (status == 200)
            assert ready.json()["models"]["bad"]["status"] == "failed"
            r = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"]})
            assert r.status_code == 200  # the good model serves either way
            r = httpx.post(
                srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"], "model": "bad"}
            )
            assert r.status_code == 503 and "Traceback" not in r.text
            assert bad.load_failures == 2  # tried twice
        # the log keeps the traceback of the final failure, the answer does not
        assert "Traceback" in log.text and str(missing) in log.text


def test_a_model_that_runs_out_of_memory_is_served_by_its_fallback(tiny_bert, fresh_cache):
    Gates.load_error = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    config = ServerConfig(
        models=(ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),),
        fallbacks=(ModelSpec.parse_fallback(f"m=cross-encoder:{tiny_bert}"),),
        load_backoff=0.01,
    )
    with running_server(config) as srv:
        assert Gates.load_attempts == 1  # out of memory is not retried
        # the primary's cached instance was dropped (its memory freed) before the fallback loaded
        assert not [k for k in RERANKERS if k[1] == GATED_KIND]
        info = httpx.get(srv.url + "/ready").json()["models"]["m"]
        assert info["status"] == "ready" and info["fallback"] is True
        assert info["serving"] == tiny_bert and "out of memory" in info["primary_error"]
        listed = httpx.get(srv.url + "/v1/models").json()["data"][0]
        assert listed["fallback"] is True and listed["serving"] == tiny_bert
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "wing", "documents": DOCS})
        assert r.status_code == 200 and r.json()["model"] == "m"
        expected = load_reranker(tiny_bert, "cross-encoder").rank("wing", DOCS)
        assert [x["index"] for x in r.json()["results"]] == [h.index for h in expected]


def test_a_model_whose_fallback_also_fails_reports_both(tiny_bert, tmp_path, fresh_cache):
    Gates.load_failures = 10
    missing = tmp_path / "nothing-here"
    config = ServerConfig(
        models=(ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),),
        fallbacks=(ModelSpec.parse_fallback(f"m={missing}"),),
        load_retries=0,
        ready_when="any",
    )
    with running_server(config, wait_ready=False) as srv:
        wait_for(lambda: srv.app.state.server.batchers["m"].state == "failed")
        info = httpx.get(srv.url + "/ready").json()["models"]["m"]
        assert "flaky load" in info["error"] and str(missing) in info["error"]


def test_cuda_asked_for_and_absent(tiny_bert, fresh_cache):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the fallback does not apply")
    config = ServerConfig(models=(ModelSpec.parse(tiny_bert),), device="cuda", ready_when="any")
    with running_server(config, wait_ready=False) as srv:
        wait_for(lambda: srv.app.state.server.batchers[tiny_bert].state == "failed")
        info = httpx.get(srv.url + "/ready").json()["models"][tiny_bert]
        assert "CUDA is not available" in info["error"]
        assert srv.app.state.server.batchers[tiny_bert].load_failures == 1  # not retried
    with (
        LogCapture() as log,
        running_server(config.with_overrides(device_fallback=True)) as srv,
    ):
        info = httpx.get(srv.url + "/ready").json()["models"][tiny_bert]
        assert info["device"] == "cpu" and info["device_fallback"] == "cuda -> cpu"
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"]})
        assert r.status_code == 200
    assert "CUDA is not available; loading on the CPU" in log.text


@pytest.mark.slow
def test_models_loading_on_parallel_threads_all_load(
    tiny_bert, tiny_bert_2labels, tiny_xlmr, tiny_bi_encoder
):
    """A fresh interpreter (transformers not imported yet), four models, no retries: each loads.

    Before the import lock, ``from transformers import AutoConfig`` raced on the worker threads and
    failed with "cannot import name 'AutoConfig'" in most such starts."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    specs = [f"a={tiny_bert}", f"b={tiny_bert_2labels}", f"c={tiny_xlmr}", f"d={tiny_bi_encoder}"]
    script = (
        "import sys, time\n"
        "from winnow.server.app import ServerState\n"
        "from winnow.server.config import ModelSpec, ServerConfig\n"
        "from winnow.server.metrics import Metrics\n"
        "specs = tuple(ModelSpec.parse(s) for s in sys.argv[1:])\n"
        "state = ServerState(ServerConfig(models=specs, load_retries=0), Metrics())\n"
        "assert 'transformers' not in sys.modules\n"
        "for b in state.batchers.values(): b.start()\n"
        "deadline = time.monotonic() + 300\n"
        "while any(b.state == 'loading' for b in state.batchers.values()):\n"
        "    assert time.monotonic() < deadline, 'still loading after 300 s'\n"
        "    time.sleep(0.05)\n"
        "for name, b in state.batchers.items(): print(name, b.state, b.error)\n"
        "for b in state.batchers.values(): b.close(30)\n"
    )
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for _ in range(3):  # the race hit 2 of 4 such starts without the lock
        done = subprocess.run(
            [sys.executable, "-c", script, *specs],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[:4] == [f"{n} ready " for n in "abcd"], done.stdout
