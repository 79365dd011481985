"""Operations over real HTTP: deep health checks, memory figures and model details.

A real uvicorn on 127.0.0.1 with the tiny BERT cross-encoder. Failing models are real ones made to
fail: ``GatedCrossEncoder`` raises while ``Gates.fail_with`` is set, or holds its call while
``Gates.score`` is shut; ``NanCrossEncoder`` (below) scores every pair as NaN.
"""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from winnow import load_reranker
from winnow.errors import ConfigError
from winnow.rerankers.base import PairScores
from winnow.rerankers.cross_encoder import CrossEncoderReranker
from winnow.rerankers.registry import register_kind
from winnow.server.commands import build_config, register
from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.health import PROBE_PAIRS, check_scores, deep_warmup, probe_pairs
from winnow.server.testing import GATED_KIND, Gates, running_server, wait_for

NAN_KIND = "nan-cross-encoder"


class NanCrossEncoder(CrossEncoderReranker):
    """A real cross-encoder whose scores come out as NaN (a model gone wrong after loading)."""

    kind = NAN_KIND

    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        scored = super()._score(pairs)
        return PairScores(
            np.full(len(pairs), np.nan, np.float32), scored.truncated, scored.num_tokens
        )


register_kind(NAN_KIND, f"{__name__}:NanCrossEncoder")


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text (None when absent)."""
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def parse_time(text: str) -> datetime:
    stamp = datetime.fromisoformat(text)
    assert stamp.tzinfo is not None and stamp.utcoffset().total_seconds() == 0
    return stamp


@pytest.fixture(autouse=True)
def open_gates():
    Gates.open_all()
    yield
    Gates.open_all()


@pytest.fixture(scope="module")
def server(tiny_bert):
    config = ServerConfig(models=(ModelSpec.parse(f"tiny={tiny_bert}"),))
    with running_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def reference_parameters(tiny_bert) -> int:
    """Parameters of the tiny model as transformers itself loads it (not through winnow)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    return sum(p.numel() for p in model.parameters())


# -- deep checks -------------------------------------------------------------------------------
def test_ready_deep_runs_a_fresh_check_through_the_batcher(server):
    url = server.url
    before = httpx.get(url + "/ready").json()
    assert "last_check" not in before["models"]["tiny"]  # no check asked for yet (interval off)
    scored = metric(httpx.get(url + "/metrics").text, "winnow_pairs_scored_total", model="tiny")
    started = datetime.now(timezone.utc)
    r = httpx.get(url + "/ready", params={"deep": 1}, timeout=60)
    assert r.status_code == 200 and r.json()["ready"] is True
    check = r.json()["models"]["tiny"]["last_check"]
    assert check["ok"] is True and check["trigger"] == "probe" and "error" not in check
    assert check["pairs"] == PROBE_PAIRS and check["seconds"] > 0
    first = parse_time(check["time"])
    assert first >= started.replace(microsecond=started.microsecond // 1000 * 1000)
    text = httpx.get(url + "/metrics").text
    # the probe pairs went through the model's batcher (counted like any batch)
    assert metric(text, "winnow_pairs_scored_total", model="tiny") == (scored or 0) + PROBE_PAIRS
    assert metric(text, "winnow_health_check_ok", model="tiny") == 1.0
    assert metric(text, "winnow_health_check_duration_seconds", model="tiny") == pytest.approx(
        check["seconds"]
    )
    again = httpx.get(url + "/ready?deep=true", timeout=60).json()["models"]["tiny"]["last_check"]
    assert parse_time(again["time"]) >= first and again["time"] != check["time"]
    # a plain /ready reports the last check without running one
    plain = httpx.get(url + "/ready").json()["models"]["tiny"]["last_check"]
    assert plain == again


def test_a_model_failing_its_deep_check_makes_ready_503_with_the_reason(tiny_bert):
    config = ServerConfig(
        models=(
            ModelSpec.parse(f"good={tiny_bert}"),
            ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),
        )
    )
    with running_server(config) as srv:
        assert httpx.get(srv.url + "/ready").status_code == 200
        Gates.fail_with = "the accelerator fell off the bus"
        r = httpx.get(srv.url + "/ready?deep=1", timeout=60)
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False
        bad = body["models"]["m"]
        assert bad["status"] == "unhealthy"
        assert bad["last_check"]["ok"] is False
        assert "the accelerator fell off the bus" in bad["last_check"]["error"]
        assert "deep health check failed" in bad["error"]
        assert "the accelerator fell off the bus" in bad["error"]
        assert body["models"]["good"]["status"] == "ready"
        assert body["models"]["good"]["last_check"]["ok"] is True
        # a plain /ready keeps saying so until a check passes again
        assert httpx.get(srv.url + "/ready").status_code == 503
        models = httpx.get(srv.url + "/v1/models").json()["data"]
        assert {m["id"]: m["status"] for m in models} == {"good": "ready", "m": "unhealthy"}
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "winnow_health_check_ok", model="m") == 0.0
        Gates.fail_with = None
        r = httpx.get(srv.url + "/ready?deep=1", timeout=60)
        assert r.status_code == 200 and r.json()["models"]["m"]["status"] == "ready"
        assert "error" not in r.json()["models"]["m"]


def test_a_deep_check_that_gets_no_answer_in_time_fails(tiny_bert):
    config = ServerConfig(
        models=(ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),), health_timeout=0.5
    )
    with running_server(config) as srv:
        Gates.score.clear()  # the model takes the probe and never answers
        r = httpx.get(srv.url + "/ready?deep=1", timeout=60)
        assert r.status_code == 503
        error = r.json()["models"]["m"]["last_check"]["error"]
        assert "no answer within 0.5 s (health_timeout)" in error
        Gates.score.set()
        r = httpx.get(srv.url + "/ready?deep=1", timeout=60)
        assert r.status_code == 200


def test_periodic_checks_report_on_ready(tiny_bert):
    config = ServerConfig(models=(ModelSpec.parse(f"tiny={tiny_bert}"),), health_interval=0.2)
    with running_server(config) as srv:

        def check():
            return httpx.get(srv.url + "/ready").json()["models"]["tiny"].get("last_check")

        wait_for(lambda: check() is not None)
        first = check()
        assert first["ok"] is True and first["trigger"] == "interval"
        wait_for(lambda: check()["time"] != first["time"])
        assert parse_time(check()["time"]) > parse_time(first["time"])


def test_deep_warmup_at_start_scores_the_largest_batch_shape(tiny_bert):
    config = ServerConfig(
        models=(ModelSpec.parse(f"tiny={tiny_bert}"),), warmup_samples=5, max_batch_pairs=3
    )
    with running_server(config) as srv:
        info = httpx.get(srv.url + "/ready").json()["models"]["tiny"]
        check = info["last_check"]
        assert check["ok"] is True and check["trigger"] == "warmup"
        assert check["pairs"] == 3  # min(warmup_samples, max_batch_pairs)


def test_deep_warmup_fills_max_length_tokens(tiny_bert):
    rr = load_reranker(tiny_bert)
    result = deep_warmup(rr, samples=4, max_batch_pairs=512)
    assert result.ok and result.pairs == 4
    assert rr.last_stats.items == 4
    assert rr.last_stats.real_tokens == 4 * rr.max_length  # every pair cut to exactly max_length


def test_a_model_scoring_nan_fails_its_deep_warmup_and_the_others_serve(tiny_bert):
    config = ServerConfig(
        models=(
            ModelSpec.parse(f"good={tiny_bert}"),
            ModelSpec.parse(f"nan={NAN_KIND}:{tiny_bert}"),
        ),
        warmup_samples=2,
        ready_when="any",  # one model stays failed: an "all" server would never be ready
    )
    with running_server(config) as srv:
        body = httpx.get(srv.url + "/ready").json()
        nan = body["models"]["nan"]
        assert nan["status"] == "failed"
        assert "deep warm-up (2 samples) failed" in nan["error"]
        assert "2 of 2 probe pairs scored a non-finite number" in nan["error"]
        assert body["models"]["good"]["last_check"]["ok"] is True


def test_probe_pairs_differ_between_checks_and_check_scores_refuses_bad_ones():
    a, b = probe_pairs(2, 10, nonce=1), probe_pairs(2, 10, nonce=2)
    assert a == probe_pairs(2, 10, nonce=1)
    assert len(set(a) | set(b)) == 4 and len(set(a)) == 2
    assert len({q for q, _ in a}) == 1  # one query, as a request has (listwise ranks a list)
    assert {q for q, _ in a} != {q for q, _ in b}
    assert all(len(doc.split()) == 4 + 10 for _, doc in a)  # "check N passage I" + 10 words
    check_scores(np.array([0.5, -1.0], np.float32), 2)
    with pytest.raises(RuntimeError, match="1 of 2 probe pairs scored a non-finite number"):
        check_scores(np.array([0.5, np.inf], np.float32), 2)
    with pytest.raises(RuntimeError, match="expected 3 scores"):
        check_scores(np.array([0.5, 1.0], np.float32), 3)


# -- memory and model details ------------------------------------------------------------------
def test_metrics_have_memory_gauges(server, reference_parameters):
    import torch

    text = httpx.get(server.url + "/metrics").text
    assert metric(text, "winnow_model_parameters", model="tiny") == reference_parameters
    assert metric(text, "winnow_model_bytes", model="tiny") == 4 * reference_parameters  # float32
    resident = metric(text, "process_resident_memory_bytes")  # prometheus-client's own collector
    assert resident is not None and resident > 50 * 2**20  # torch alone is more than that
    assert metric(text, "winnow_process_peak_resident_memory_bytes") >= 50 * 2**20
    assert "winnow_process_resident_memory_bytes" not in text  # not a second copy of the same
    if not torch.cuda.is_available():
        assert "winnow_gpu_memory" not in text  # absent, not zero, without CUDA


def test_ready_reports_model_size_and_process_memory(server, reference_parameters):
    body = httpx.get(server.url + "/ready").json()
    tiny = body["models"]["tiny"]
    assert tiny["parameters"] == reference_parameters
    assert tiny["model_bytes"] == 4 * reference_parameters
    assert body["memory"]["resident_bytes"] > 50 * 2**20
    assert body["memory"]["peak_resident_bytes"] > 50 * 2**20


def test_v1_models_gives_the_model_details(server, tiny_bert, reference_parameters):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_bert)
    (entry,) = httpx.get(server.url + "/v1/models").json()["data"]
    details = entry["details"]
    assert details["name"] == tiny_bert and details["path"] == tiny_bert
    assert details["kind"] == "cross-encoder" and details["backend"] == "hf"
    assert details["architecture"] == "BertForSequenceClassification"
    assert details["num_layers"] == config.num_hidden_layers
    assert details["hidden_size"] == config.hidden_size
    assert details["num_attention_heads"] == config.num_attention_heads
    assert details["vocab_size"] == config.vocab_size
    assert details["max_position_embeddings"] == config.max_position_embeddings
    assert details["parameters"] == reference_parameters
    assert details["dtype"] == "float32" and details["device"] == "cpu"
    assert details["max_length"] == 128


def test_v1_models_has_no_details_before_the_model_loads(tiny_bert, fresh_cache):
    Gates.load.clear()
    config = ServerConfig(models=(ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),))
    with running_server(config, wait_ready=False) as srv:
        (entry,) = httpx.get(srv.url + "/v1/models").json()["data"]
        assert entry["status"] == "loading" and entry["details"] is None
        body = httpx.get(srv.url + "/ready?deep=1").json()  # nothing serving: nothing to check
        assert "last_check" not in body["models"]["m"]
        Gates.load.set()


# -- settings ----------------------------------------------------------------------------------
def test_settings_are_validated_and_read_from_flags_and_environment():
    import argparse

    with pytest.raises(ConfigError, match="warmup_samples must be >= 0"):
        ServerConfig(warmup_samples=-1)
    with pytest.raises(ConfigError, match="health_interval must be a number of seconds >= 0"):
        ServerConfig(health_interval=float("nan"))
    with pytest.raises(ConfigError, match="health_timeout must be > 0"):
        ServerConfig(health_timeout=0)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["serve", "--model", "m", "--warmup-samples", "8", "--health-interval", "15"]
    )
    config = build_config(args, {"WINNOW_HEALTH_TIMEOUT": "2.5", "WINNOW_HEALTH_INTERVAL": "99"})
    assert (config.warmup_samples, config.health_interval, config.health_timeout) == (8, 15.0, 2.5)
    with pytest.raises(ConfigError, match="WINNOW_WARMUP_SAMPLES"):
        build_config(parser.parse_args(["serve", "--model", "m"]), {"WINNOW_WARMUP_SAMPLES": "x"})


def test_deep_checks_of_a_bi_encoder_really_embed(tiny_bi_encoder, encode_spy):
    """The bi-encoder remembers embeddings; each check's texts are new, so the model runs."""
    config = ServerConfig(models=(ModelSpec.parse(f"bi=bi-encoder:{tiny_bi_encoder}"),))
    with running_server(config) as srv:
        rr = srv.app.state.server.batchers["bi"].reranker
        seen = encode_spy(rr.model)
        for _ in range(2):
            r = httpx.get(srv.url + "/ready?deep=1", timeout=60)
            assert r.status_code == 200 and r.json()["models"]["bi"]["last_check"]["ok"]
        # two checks, each embedding its query and documents: nothing came from the memo
        assert len(seen) == 2 * (1 + PROBE_PAIRS) and len(set(seen)) == len(seen)


def test_deep_check_of_a_listwise_model(tiny_qwen2):
    config = ServerConfig(models=(ModelSpec.parse(f"lw=llm-listwise:{tiny_qwen2}"),))
    with running_server(config) as srv:
        rr = srv.app.state.server.batchers["lw"].reranker
        windows = rr.stats["windows"]
        r = httpx.get(srv.url + "/ready?deep=1", timeout=120)
        assert r.status_code == 200
        assert r.json()["models"]["lw"]["last_check"]["ok"] is True
        assert rr.stats["windows"] == windows + 1  # the model ranked the probe's documents
        (entry,) = httpx.get(srv.url + "/v1/models").json()["data"]
        assert entry["details"]["architecture"] == "Qwen2ForCausalLM"
        assert entry["details"]["kind"] == "llm-listwise"


def test_a_probe_goes_in_the_next_model_call_ahead_of_waiting_requests(tiny_bert, monkeypatch):
    import threading

    config = ServerConfig(
        models=(ModelSpec.parse(f"m={GATED_KIND}:{tiny_bert}"),), max_batch_pairs=2, max_wait_ms=0
    )
    with running_server(config) as srv:
        batcher = srv.app.state.server.batchers["m"]
        calls: list[list[tuple[str, str]]] = []
        real = batcher.reranker.score_pairs_detailed

        def recording(pairs):
            pairs = list(pairs)
            calls.append(pairs)
            return real(pairs)

        monkeypatch.setattr(batcher.reranker, "score_pairs_detailed", recording)
        Gates.score.clear()
        Gates.entered.clear()
        responses = {}

        def send(key, method, path, **kw):
            responses[key] = httpx.request(method, srv.url + path, timeout=60, **kw)

        first = {"query": "first", "documents": ["a"]}
        waiting = {"query": "waiting", "documents": ["b", "c"]}
        threads = [
            threading.Thread(
                target=send, args=("first", "POST", "/v1/rerank"), kwargs={"json": first}
            )
        ]
        threads[0].start()
        assert Gates.entered.wait(30)  # the first request is inside the model
        threads.append(
            threading.Thread(
                target=send, args=("waiting", "POST", "/v1/rerank"), kwargs={"json": waiting}
            )
        )
        threads[1].start()
        wait_for(lambda: batcher.depth == 1)
        threads.append(threading.Thread(target=send, args=("probe", "GET", "/ready?deep=1")))
        threads[2].start()
        wait_for(lambda: batcher.depth == 2)
        Gates.score.set()
        for t in threads:
            t.join(60)
        assert {k: r.status_code for k, r in responses.items()} == {
            "first": 200,
            "waiting": 200,
            "probe": 200,
        }
        assert [c[0][0].split()[0] for c in calls] == ["first", "health", "waiting"]
