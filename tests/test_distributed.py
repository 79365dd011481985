"""Daft jobs on the native runner (2 cores): the in-process scores and embeddings, one model load
per worker, bad rows and failing batches named, and the CLI on files and on a local HTTP server."""

from __future__ import annotations

import functools
import json
import random
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import winnow
from overlap_spy import Overlap
from winnow.cli import main
from winnow.errors import InputError, MissingExtraError
from winnow.rerankers.cross_encoder import CrossEncoderReranker

daft = pytest.importorskip("daft", reason="needs the distributed extra")

from winnow.distributed import (  # noqa: E402
    DistributedError,
    EngineOptions,
    collect,
    encode_job,
    load_dataset_url,
    score_pairs_job,
)

WORDS = ["wing", "lift", "drag", "flow", "boundary", "layer", "heat", "transfer", "shock", "wave"]
WORDS += ["grain", "chaff", "wheat"]


def _pairs(n: int, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    queries = [" ".join(rng.sample(WORDS, 3)) for _ in range(7)]
    rows = {"query_id": [], "doc_id": [], "query": [], "text": []}
    for i in range(n):
        q = i % len(queries)
        rows["query_id"].append(f"q{q}")
        rows["doc_id"].append(f"d{i}")
        rows["query"].append(queries[q])
        rows["text"].append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))))
    return rows


def _close(actual, expected) -> None:
    """Equal up to float32 rounding of another batch composition (other padding, other matrix
    shapes): in-process ``score_pairs`` itself moves by up to 4.7e-6 of the score's magnitude
    between token budgets, or when the same pairs are scored in four calls of 100 (measured on
    these pairs). Scores of the same batches are equal exactly (``test_cli_score_pairs...``)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.abs(actual - expected) <= 1e-5 * np.maximum(1.0, np.abs(expected)))


def test_score_pairs_two_worker_processes_equal_in_process(tiny_bert):
    rows = _pairs(400)
    rr = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    expected = rr.score_pairs_detailed(list(zip(rows["query"], rows["text"])))
    job = score_pairs_job(
        daft.from_pydict(rows), rr, EngineOptions(workers=2, batch_size=100), worker_info=True
    )
    out = collect(job)
    assert out["doc_id"] == rows["doc_id"]  # every row back, in order
    _close(out["score"], expected.scores)
    assert out["truncated"] == expected.truncated.tolist()
    assert out["num_tokens"] == expected.num_tokens.tolist()
    pids = set(out["worker_pid"])
    assert 1 <= len(pids) <= 2
    assert set(out["model_loads"]) == {1}  # each worker process loaded the model once
    # the workers imported this checkout's winnow (PYTHONPATH reaches worker processes)
    assert set(out["winnow_path"]) == {winnow.__file__}


def test_encode_equals_the_dense_encoder(tiny_bi_encoder):
    rows = _pairs(120, seed=1)
    corpus = {"_id": rows["doc_id"], "title": ["t"] * 60 + [None] * 60, "text": rows["text"]}
    enc = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cpu", memo_mb=0)
    out = collect(encode_job(daft.from_pydict(corpus), enc, EngineOptions(batch_size=50)))
    assert out["doc_id"] == rows["doc_id"]
    full = [f"t {t}" for t in rows["text"][:60]] + rows["text"][60:]
    expected = enc.encode_documents(full)
    got = np.stack(out["embedding"])
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("job", ["encode", "score"])
def test_in_process_workers_never_call_one_model_from_two_threads(
    job, tiny_bi_encoder, tiny_bert, tmp_path, monkeypatch
):
    """Regression: Daft's native runner calls the one in-process worker from several threads at
    once, and a Hugging Face fast tokenizer keeps its padding/truncation settings on the shared
    object, so two concurrent calls of one model mixed them up (the 100,000-passage encode failed
    with ``Unable to create tensor ...`` on a batch tokenized without padding)."""
    rows = _pairs(600, seed=5)
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(dict(zip(rows, v))) + "\n" for v in zip(*rows.values())))
    options = EngineOptions(batch_size=50)
    if job == "encode":
        model = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cpu", memo_mb=0)
        method = "encode_documents"
        expected = model.encode_documents(rows["text"])
    else:
        model = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
        method = "score_pairs_detailed"
        expected = model.score_pairs(list(zip(rows["query"], rows["text"])))
    spy = Overlap(getattr(model, method))
    monkeypatch.setattr(model, method, spy)  # the worker's unpickled reranker is this instance
    table = daft.read_json(str(src))
    if job == "encode":
        out = collect(encode_job(table, model, options))
        got = np.stack(out["embedding"])
        order = [rows["doc_id"].index(d) for d in out["doc_id"]]
        np.testing.assert_allclose(got, expected[order], rtol=0, atol=1e-6)
    else:
        out = collect(score_pairs_job(table, model, options))
        order = [rows["doc_id"].index(d) for d in out["doc_id"]]
        _close(out["score"], expected[order])
    assert sorted(out["doc_id"]) == sorted(rows["doc_id"])
    assert spy.calls >= 600 // 50  # the worker called the model once per batch, in this process
    assert spy.most == 1


def test_bad_rows_are_named(tiny_bert):
    rr = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    rows = _pairs(5)
    rows["text"][3] = None
    with pytest.raises(InputError, match=r"row 3 \(query_id='q3', doc_id='d3'\): text is null"):
        collect(score_pairs_job(daft.from_pydict(rows), rr))
    rows = _pairs(5)
    rows["doc_id"] = [1, 2, 3, 4, 5]
    with pytest.raises(InputError, match=r"row 0 \(query_id='q0', doc_id=1\): doc_id is int"):
        collect(score_pairs_job(daft.from_pydict(rows), rr))
    del rows["query"]
    with pytest.raises(InputError, match="lacks the column"):
        score_pairs_job(daft.from_pydict(rows), rr)


class PoisonedCrossEncoder(CrossEncoderReranker):
    """A cross-encoder whose model raises on any batch holding the word POISON."""

    def _score(self, pairs):
        if any("POISON" in text for _, text in pairs):
            raise RuntimeError("the model hit a poisoned document")
        return super()._score(pairs)


def test_a_failing_batch_is_reported_with_its_ids_and_nothing_is_written(
    tiny_bert, tmp_path, monkeypatch
):
    from winnow.distributed.io import write_table
    from winnow.rerankers import registry

    monkeypatch.setitem(registry._KINDS, "poisoned", f"{__name__}:PoisonedCrossEncoder")
    rr = winnow.load_reranker(tiny_bert, "poisoned", device="cpu")
    rows = _pairs(40)
    rows["text"][25] = "POISON " + rows["text"][25]
    out = tmp_path / "scores.parquet"
    job = score_pairs_job(daft.from_pydict(rows), rr, EngineOptions(batch_size=10))
    with pytest.raises(DistributedError) as info:
        write_table(job, out)
    message = str(info.value)
    batch = re.search(r"a batch of (\d+) rows \(row (\d+) to row (\d+)", message)
    assert batch is not None, message
    size, first, last = map(int, batch.groups())
    assert size <= 10 and first <= 25 <= last and last - first + 1 == size
    assert "q4/d25" in message
    assert "RuntimeError: the model hit a poisoned document" in message  # type and whole cause
    assert not out.exists() and not list(tmp_path.iterdir())  # no partial output


def test_missing_extra_names_the_pip_command(monkeypatch):
    import sys

    from winnow.distributed.engine import require_daft

    monkeypatch.setitem(sys.modules, "daft", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'winnow\[distributed\]'"):
        require_daft()


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_score_pairs_daft_equals_local(tiny_bert, tmp_path):
    rows = _pairs(150)
    rows["source"] = ["bm25"] * 150  # extra columns are kept
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(dict(zip(rows, v))) + "\n" for v in zip(*rows.values())))
    common = ["score-pairs", "--input", str(src), "--model", f"cross-encoder:{tiny_bert}"]
    assert main([*common, "--output", str(tmp_path / "d.parquet"), "--device", "cpu"]) == 0
    local = tmp_path / "l.jsonl"
    assert main([*common, "--output", str(local), "--device", "cpu", "--engine", "local"]) == 0
    got = daft.read_parquet(str(tmp_path / "d.parquet" / "*.parquet")).sort("doc_id").to_pydict()
    ref = daft.read_json(str(local / "*.json*")).sort("doc_id").to_pydict()
    assert got["doc_id"] == sorted(rows["doc_id"]) == ref["doc_id"]
    assert got["source"] == rows["source"]
    # one worker, all 150 rows in one batch: the very batch the local engine scores
    np.testing.assert_array_equal(  # the JSON lines hold the shortest text of each float32
        np.float32(got["score"]), np.float32(ref["score"])
    )


def test_cli_encode_writes_an_embedding_column(tiny_bi_encoder, tmp_path, shared_datasets):
    src = shared_datasets / "adi" / "corpus.jsonl"
    out = tmp_path / "emb.parquet"
    args = ["encode", "--input", str(src), "--model", tiny_bi_encoder, "--device", "cpu"]
    assert main([*args, "--output", str(out)]) == 0
    df = daft.read_parquet(str(out / "*.parquet"))
    assert str(df.schema()["embedding"].dtype).startswith("Embedding")
    got = df.to_pydict()
    encoder = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cpu", memo_mb=0)
    from winnow.data import read_corpus

    corpus = read_corpus(src)
    assert sorted(got["doc_id"]) == sorted(corpus)  # every document once (parts in any order)
    expected = encoder.encode_documents([corpus[d].full_text for d in got["doc_id"]])
    np.testing.assert_allclose(np.stack(got["embedding"]), expected, rtol=0, atol=1e-6)


def test_engine_flags_need_engine_daft(tmp_path, capsys):
    args = ["rerank", "--dataset", "x", "--run", "r", "--output", str(tmp_path / "o")]
    assert main([*args, "--workers", "2"]) == 2
    assert "--workers need --engine daft" in capsys.readouterr().err


# -- remote inputs and eval/rerank on Daft -------------------------------------------------------
def _beir(root: Path) -> Path:
    rng = random.Random(3)
    (root / "qrels").mkdir(parents=True)
    docs = [
        {"_id": f"d{i}", "title": f"doc {i}", "text": " ".join(rng.choices(WORDS, k=8 + i % 20))}
        for i in range(40)
    ]
    queries = [{"_id": f"q{j}", "text": " ".join(rng.sample(WORDS, 3))} for j in range(6)]
    qrels = [f"q{j}\td{rng.randrange(40)}\t1" for j in range(6) for _ in range(3)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(dict.fromkeys(qrels)) + "\n"
    )
    return root


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def served(tmp_path):
    """A tiny BEIR folder served by a real HTTP server on 127.0.0.1 (stopped afterwards)."""
    root = _beir(tmp_path / "www" / "tiny")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "www"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_dataset_from_a_url_equals_the_local_folder(served):
    from winnow.data import load_beir

    root, base = served
    remote = load_dataset_url(f"{base}/tiny")
    local = load_beir(root)
    assert remote.corpus == dict(local.corpus)
    assert list(remote.queries.items()) == list(local.queries.items())
    assert remote.qrels == {q: dict(d) for q, d in local.qrels.items()}


def test_rerank_on_daft_from_urls_equals_local_and_shares_the_cache(served, tiny_bert, tmp_path):
    from winnow.data import read_run, write_run

    root, base = served
    run = {f"q{j}": {f"d{i}": float(40 - i) for i in range(0, 40, 3)} for j in range(6)}
    write_run(run, root / "run.trec")
    common = ["rerank", "--model", f"cross-encoder:{tiny_bert}", "--device", "cpu", "--depth", "8"]
    cache = tmp_path / "cache"
    local = tmp_path / "local.trec"
    assert main([*common, "--dataset", str(root), "--run", str(root / "run.trec"),
                 "--output", str(local), "--no-cache"]) == 0  # fmt: skip
    daft_out = tmp_path / "daft.trec"
    urls = ["--dataset", f"{base}/tiny", "--run", f"{base}/tiny/run.trec"]
    assert main([*common, *urls, "--output", str(daft_out), "--engine", "daft",
                 "--cache-dir", str(cache)]) == 0  # fmt: skip
    a, b = read_run(local), read_run(daft_out)
    assert a.keys() == b.keys()
    for qid in a:
        assert list(a[qid]) == list(b[qid])  # same order
        _close(list(b[qid].values()), list(a[qid].values()))
    entries = sorted(p.name for p in (cache / "rerank").iterdir())
    assert len(entries) == 1
    # the local engine finds the entry the Daft run wrote (same content key)
    again = tmp_path / "again.trec"
    assert main([*common, *urls, "--output", str(again), "--cache-dir", str(cache)]) == 0
    assert sorted(p.name for p in (cache / "rerank").iterdir()) == entries
    assert read_run(again) == b


def test_eval_on_daft_gives_the_local_metrics(tiny_bert, tiny_bi_encoder, tmp_path):
    root = _beir(tmp_path / "tiny")
    args = [
        "eval", "--dataset", str(root), "--systems", "bm25,dense,bm25>>rerank",
        "--dense-model", tiny_bi_encoder, "--reranker", f"cross-encoder:{tiny_bert}",
        "--depth", "10", "--device", "cpu", "--no-progress", "--no-plot",
    ]  # fmt: skip
    local_args = ["--cache-dir", str(tmp_path / "c1"), "--output", str(tmp_path / "l")]
    daft_args = ["--cache-dir", str(tmp_path / "c2"), "--output", str(tmp_path / "d")]
    assert main([*args, *local_args]) == 0
    assert main([*args, *daft_args, "--engine", "daft"]) == 0
    local = json.loads((tmp_path / "l" / "metrics.json").read_text())
    remote = json.loads((tmp_path / "d" / "metrics.json").read_text())
    for name, entry in local["systems"].items():
        for metric in local["metrics"]:
            assert remote["systems"][name][metric] == pytest.approx(entry[metric], abs=1e-9)
    for sub in ("rerank", "search", "dense"):  # the same cache entries, by content key
        names = {p.name for p in (tmp_path / "c1" / sub).iterdir() if not p.name.startswith(".")}
        assert names == {
            p.name for p in (tmp_path / "c2" / sub).iterdir() if not p.name.startswith(".")
        }


def test_int8_auto_calibration_on_daft_equals_local(tiny_bert, tiny_bi_encoder, tmp_path):
    """Static int8 with no sample: the Daft engine draws the same sample from the collection as
    the local one (dense: its texts; rerank: the stage's pairs), so metrics and cache keys agree."""
    pytest.importorskip("onnxruntime")
    root = _beir(tmp_path / "tiny")
    exports = tmp_path / "exports"
    int8 = f"backend=onnx&dtype=int8&export_dir={exports}"
    args = [
        "eval", "--dataset", str(root), "--systems",
        f"dense:{tiny_bi_encoder}?{int8},bm25 % 10 >> rerank:cross-encoder:{tiny_bert}?{int8}",
        "--device", "cpu", "--no-progress", "--no-plot",
    ]  # fmt: skip
    assert main([*args, "--cache-dir", str(tmp_path / "c1"), "--output", str(tmp_path / "l")]) == 0
    daft_args = ["--cache-dir", str(tmp_path / "c2"), "--output", str(tmp_path / "d")]
    assert main([*args, *daft_args, "--engine", "daft"]) == 0
    local = json.loads((tmp_path / "l" / "metrics.json").read_text())
    remote = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert local["systems"].keys() == remote["systems"].keys()
    for name, entry in local["systems"].items():
        for metric in local["metrics"]:
            assert remote["systems"][name][metric] == pytest.approx(entry[metric], abs=1e-9)
    for sub in ("rerank", "search", "dense"):
        names = {p.name for p in (tmp_path / "c1" / sub).iterdir() if not p.name.startswith(".")}
        assert names and names == {
            p.name for p in (tmp_path / "c2" / sub).iterdir() if not p.name.startswith(".")
        }
    # one int8 file per model: both engines calibrated on the same sample
    int8_dirs = sorted(p.name for p in exports.rglob("int8-*") if p.is_dir())
    assert len(int8_dirs) == 2


def test_on_engine_rebuilds_the_branches_of_a_fused_stage(tiny_bi_encoder):
    """A fusion is one Fused stage: on_engine moves its dense branch to Daft, keeps the fusion."""
    from winnow.distributed.stages import DaftDense, on_engine
    from winnow.pipeline import Fused, SpecOptions, parse_system
    from winnow.pipeline.retrieval import Dense

    stage = parse_system(
        f"(bm25 % 5 | dense:{tiny_bi_encoder} % 5) >> rrf % 3", SpecOptions(device="cpu")
    )
    moved = on_engine(stage, EngineOptions(workers=1))
    fused = moved.stages[0]
    assert isinstance(fused, Fused) and fused.fusion is stage.stages[0].fusion
    assert type(fused.branches[1].stages[0]) is DaftDense
    assert type(stage.stages[0].branches[1].stages[0]) is Dense  # the given stage is unchanged
    assert moved.label == stage.label


def test_on_engine_keeps_a_dense_stages_backend_options_and_passages(tiny_bi_encoder):
    """``dense:M?backend=onnx...`` and ``maxp:M?window=...`` on Daft are the same stages, not
    torch ones over whole documents (on_engine used to drop both)."""
    from winnow.distributed.stages import DaftDense, on_engine
    from winnow.pipeline import parse_system

    onnx = parse_system(f"dense:{tiny_bi_encoder}?backend=onnx&dtype=int8&guard=refuse")
    moved = on_engine(onnx, EngineOptions(workers=1))
    assert type(moved) is DaftDense
    assert moved.options == onnx.options == {"backend": "onnx", "guard": "refuse"}
    assert moved.dtype == "int8" and moved._key() == onnx._key()
    maxp = parse_system(f"maxp:{tiny_bi_encoder}?window=16&stride=8")
    moved = on_engine(maxp, EngineOptions(workers=1))
    assert type(moved) is DaftDense and moved.passages == maxp.passages
    assert moved._key() == maxp._key() and moved.label == maxp.label
