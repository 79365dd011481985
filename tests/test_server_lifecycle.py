"""Server life cycle over real HTTP: readiness, batching across requests, overload, shutdown.

The model is a real tiny cross-encoder whose loading and scoring can be held at a gate
(``winnow.server.testing.GatedCrossEncoder``), so "a request is inside the model" is a fact the test
establishes, not a sleep it hopes is long enough.
"""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from winnow import load_reranker
from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.testing import GATED_KIND, Background, Gates, running_server, wait_for
from winnow.testing import sample_corpus

DOCS = sample_corpus(12, seed=5)


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def gated_config(tiny_bert: str, **kw) -> ServerConfig:
    return ServerConfig(models=(ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),), **kw)


@pytest.fixture(autouse=True)
def open_gates():
    Gates.open_all()
    yield
    Gates.open_all()


def test_ready_is_503_until_the_model_has_warmed_up(tiny_bert, fresh_cache):
    Gates.load.clear()
    with running_server(gated_config(tiny_bert), wait_ready=False) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200
        r = httpx.get(srv.url + "/ready")
        assert r.status_code == 503
        assert r.json()["models"]["m"]["status"] == "loading"
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"]})
        assert r.status_code == 503 and "loading" in r.json()["error"]
        assert r.headers["Retry-After"]
        Gates.load.set()
        wait_for(lambda: httpx.get(srv.url + "/ready").status_code == 200)
        info = httpx.get(srv.url + "/ready").json()["models"]["m"]
        assert info["loaded"] and info["warmed"] and info["warmup_seconds"] > 0
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"]})
        assert r.status_code == 200


def test_a_failed_model_is_reported_and_the_others_serve(tiny_bert, tmp_path):
    missing = tmp_path / "no-such-model"
    config = ServerConfig(
        models=(ModelSpec.parse(f"good={tiny_bert}"), ModelSpec.parse(f"bad={missing}")),
        ready_when="any",
        load_backoff=0.01,
    )
    with running_server(config) as srv:
        ready = httpx.get(srv.url + "/ready").json()
        assert ready["ready"] is True
        assert ready["models"]["bad"]["status"] == "failed"
        assert str(missing) in ready["models"]["bad"]["error"]
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"]})
        assert r.status_code == 200 and r.json()["model"] == "good"
        r = httpx.post(
            srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"], "model": "bad"}
        )
        assert r.status_code == 503
        assert r.json()["error_type"] == "model_failed" and "'bad'" in r.json()["error"]
        assert r.json()["error"].endswith("available models: good")


def test_queued_requests_share_one_model_call(tiny_bert):
    """While the model is busy, waiting requests pile up and then run as one batch."""
    config = gated_config(tiny_bert, max_wait_ms=0)
    with running_server(config) as srv:
        base = metric(httpx.get(srv.url + "/metrics").text, "winnow_batch_pairs_count")
        Gates.score.clear()
        Gates.entered.clear()
        first = Background(srv.url, {"query": "wing", "documents": DOCS[:3]})
        assert Gates.entered.wait(30)
        queued = [
            Background(srv.url, {"query": f"q{i}", "documents": DOCS[i : i + 4]}) for i in range(3)
        ]
        wait_for(lambda: srv.app.state.server.batchers["m"].depth == 3)
        Gates.score.set()
        responses = [first.result()] + [b.result() for b in queued]
        assert all(r.status_code == 200 for r in responses)
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "winnow_batch_pairs_count") - base == 2  # 3 pairs, then 12 together
        assert metric(text, "winnow_pairs_scored_total") == 3 + 12
        reranker = load_reranker(tiny_bert, GATED_KIND)
        for i, r in enumerate(responses[1:]):
            expected = reranker.rank(f"q{i}", DOCS[i : i + 4])
            assert [x["index"] for x in r.json()["results"]] == [h.index for h in expected]


def test_a_request_larger_than_a_batch_is_split_not_refused(tiny_bert):
    config = ServerConfig(models=(ModelSpec.parse(tiny_bert),), max_batch_pairs=4)
    docs = sample_corpus(30, seed=9)
    with running_server(config) as srv:
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "heat flow", "documents": docs})
        assert r.status_code == 200
        expected = load_reranker(tiny_bert).rank("heat flow", docs)
        got = r.json()["results"]
        assert [x["index"] for x in got] == [h.index for h in expected]
        np.testing.assert_allclose(
            [x["relevance_score"] for x in got], [h.score for h in expected], atol=1e-4
        )
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "winnow_batch_pairs_count") >= 30 / 4


def test_full_queue_answers_429_with_retry_after(tiny_bert):
    with running_server(gated_config(tiny_bert, max_queue=1)) as srv:
        Gates.score.clear()
        Gates.entered.clear()
        busy = Background(srv.url, {"query": "a", "documents": DOCS[:2]})
        assert Gates.entered.wait(30)  # the first request is inside the model
        waiting = Background(srv.url, {"query": "b", "texts": DOCS[:2]}, path="/rerank")
        wait_for(lambda: srv.app.state.server.batchers["m"].depth == 1)
        rejected = [
            httpx.post(srv.url + "/v1/rerank", json={"query": "c", "documents": DOCS[:2]})
            for _ in range(3)
        ]
        tei = httpx.post(srv.url + "/rerank", json={"query": "c", "texts": DOCS[:2]})
        for r in [*rejected, tei]:
            assert r.status_code == 429
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error_type"] == "overloaded"
        Gates.score.set()
        assert busy.result().status_code == 200
        assert waiting.result().status_code == 200
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, 'winnow_errors_total{type="overloaded"}') == 4


def test_many_concurrent_clients_get_200_or_429_only(tiny_bert):
    """Saturating a queue of 1 from many threads: every answer is a result or a clean 429."""
    with running_server(gated_config(tiny_bert, max_queue=1)) as srv:
        Gates.score.clear()
        Gates.entered.clear()
        first = Background(srv.url, {"query": "a", "documents": DOCS})
        assert Gates.entered.wait(30)
        crowd = [Background(srv.url, {"query": f"q{i}", "documents": DOCS}) for i in range(16)]
        wait_for(lambda: sum(b.response is not None for b in crowd) >= 15)
        Gates.score.set()
        statuses = [first.result().status_code] + [b.result().status_code for b in crowd]
        assert set(statuses) <= {200, 429}
        assert statuses.count(429) >= 15  # one of the crowd may take the only queue slot


def test_shutdown_finishes_in_flight_requests(tiny_bert):
    with running_server(gated_config(tiny_bert)) as srv:
        Gates.score.clear()
        Gates.entered.clear()
        in_flight = Background(srv.url, {"query": "wing", "documents": DOCS[:5]})
        assert Gates.entered.wait(30)
        stopper = threading.Thread(target=srv.stop)  # SIGTERM's handler, then wait for exit
        stopper.start()
        wait_for(lambda: srv.server.should_exit)
        # uvicorn's shutdown closes its listening sockets first: wait for that, not a fixed time.
        wait_for(lambda: srv.server.servers and not any(s.is_serving() for s in srv.server.servers))
        with pytest.raises(httpx.TransportError):
            httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["d"]}, timeout=5)
        Gates.score.set()
        r = in_flight.result()
        assert r.status_code == 200
        assert len(r.json()["results"]) == 5
        stopper.join(30)
        assert not srv.thread.is_alive()
        assert srv.app.state.server.batchers["m"].state == "stopped"


def test_a_model_error_is_a_500_without_internals_and_the_server_survives(tiny_bert):
    secret = "CUDA kernel failed at /opt/secret/path.py line 42"
    with running_server(gated_config(tiny_bert)) as srv:
        Gates.fail_with = secret
        for path, payload in (
            ("/v1/rerank", {"query": "q", "documents": ["a", "b"]}),
            ("/rerank", {"query": "q", "texts": ["a", "b"]}),
        ):
            r = httpx.post(srv.url + path, json=payload)
            assert r.status_code == 500
            assert r.json() == {"error": "internal server error", "error_type": "internal"}
            assert "secret" not in r.text and "Traceback" not in r.text
        Gates.fail_with = None
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert r.status_code == 200
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, 'winnow_errors_total{type="internal"}') == 2
