"""winnow train: outputs that load through load_reranker, dense:DIR and rerank:DIR; clear errors for
bad mined files and bases; no half-written output after an interruption; per-epoch dev evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import winnow
from winnow.errors import ConfigError, DatasetError, ModelLoadError
from winnow.testing import sample_corpus
from winnow.types import Dataset, Document

TEXTS = sample_corpus(120, seed=21)


def _triplets(n: int = 12) -> list[dict[str, str]]:
    return [
        {"anchor": TEXTS[3 * i], "positive": TEXTS[3 * i + 1], "negative": TEXTS[3 * i + 2]}
        for i in range(n)
    ]


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def mined(tmp_path):
    return _write_jsonl(tmp_path / "mined.jsonl", _triplets())


def _siblings(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _dataset() -> Dataset:
    corpus = {f"d{i}": Document(f"d{i}", TEXTS[60 + i]) for i in range(20)}
    queries = {f"q{i}": TEXTS[90 + i] for i in range(8)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 8}": 0} for i in range(8)}
    return Dataset("tiny", corpus, queries, qrels)


def _write_beir(folder, ds: Dataset) -> str:
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": d.doc_id, "title": "", "text": d.text}) + "\n"
            for d in ds.corpus.values()
        )
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in ds.queries.items())
    )
    (folder / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t{r}" for q, docs in ds.qrels.items() for d, r in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return str(folder)


def test_bi_encoder_output_loads_as_reranker_dense_and_rerank(
    tiny_bi_encoder, tiny_bert, mined, tmp_path
):
    from winnow.pipeline import Context, parse_system
    from winnow.training import train_bi_encoder

    out = tmp_path / "bi-out"
    result = train_bi_encoder(
        mined, tiny_bi_encoder, out, guide=tiny_bert, batch_size=4, max_steps=1, progress=False
    )
    assert result.steps == 1 and result.rows == 12 and result.output == str(out)
    assert result.guide["batches"] == 1 and result.guide["reranker_calls"] > 0
    record = json.loads((out / "training.json").read_text())
    assert record["settings"]["loss"] == "guided" and record["guide"] == result.guide
    assert not (out / "checkpoints").exists()
    assert _siblings(tmp_path) == ["bi-out", "mined.jsonl"]  # no temporary folder left behind
    reranker = winnow.load_reranker(out)
    assert reranker.kind == "bi-encoder"
    scores = reranker.score_pairs([(TEXTS[0], TEXTS[1]), (TEXTS[0], TEXTS[2])])
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    ds = _dataset()
    queries = dict(list(ds.queries.items())[:2])
    for spec in (f"dense:{out}", f"bm25 >> rerank:{out}"):
        run = parse_system(spec).transform(queries, None, Context(ds))
        assert set(run) == set(queries) and all(run.values())


@pytest.mark.parametrize("loss", ["mnrl", "gist"])
def test_bi_encoder_plain_losses(tiny_bi_encoder, mined, tmp_path, loss):
    from winnow.training import train_bi_encoder

    guide = tiny_bi_encoder if loss == "gist" else None
    result = train_bi_encoder(
        mined, tiny_bi_encoder, tmp_path / loss, loss=loss, guide=guide, batch_size=4, max_steps=1
    )
    assert result.steps == 1 and result.guide == {}
    assert winnow.load_reranker(tmp_path / loss).kind == "bi-encoder"


@pytest.mark.parametrize("loss", ["bce", "lambda", "mnrl"])
def test_cross_encoder_from_a_bi_encoder_base_loads_as_reranker(
    tiny_bi_encoder, mined, tmp_path, loss
):
    from winnow.pipeline import Context, parse_system
    from winnow.training import train_cross_encoder

    out = tmp_path / "ce"
    result = train_cross_encoder(
        mined, tiny_bi_encoder, out, loss=loss, batch_size=4, max_steps=1, progress=False
    )
    assert result.steps == 1
    reranker = winnow.load_reranker(out)
    assert reranker.kind == "cross-encoder"
    assert np.all(np.isfinite(reranker.score_pairs([(TEXTS[0], TEXTS[1])])))
    ds = _dataset()
    run = parse_system(f"bm25 >> rerank:{out}").transform(
        {"q0": ds.queries["q0"]}, None, Context(ds)
    )
    assert run["q0"]


def test_cross_encoder_scores_equal_sentence_transformers(tiny_bert, mined, tmp_path):
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from winnow.training import train_cross_encoder

    out = tmp_path / "ce"
    train_cross_encoder(mined, tiny_bert, out, batch_size=4, max_steps=2)
    pairs = [(TEXTS[0], TEXTS[1]), (TEXTS[3], TEXTS[5])]
    ours = winnow.load_reranker(out).score_pairs(pairs)
    ref = CrossEncoder(str(out)).predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_cli_trains_and_reports(tiny_bi_encoder, mined, tmp_path, capsys):
    from winnow.cli import main

    out = tmp_path / "cli-out"
    code = main(
        [
            "train",
            "bi-encoder",
            "--data",
            mined,
            "--model",
            tiny_bi_encoder,
            "--loss",
            "mnrl",
            "--batch-size",
            "4",
            "--max-steps",
            "1",
            "--output",
            str(out),
            "--no-progress",
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 1 and printed["output"] == str(out)
    # the same output again: refused before any training, the folder untouched
    before = (out / "training.json").read_text()
    code = main(
        [
            *("train", "cross-encoder", "--data", mined, "--model", tiny_bi_encoder),
            *("--output", str(out), "--no-progress"),
        ]
    )
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "training.json").read_text() == before


def test_interrupted_run_leaves_no_output(tiny_bi_encoder, tiny_bert, mined, tmp_path):
    from transformers import TrainerCallback

    from winnow.training import train_bi_encoder

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("stopped by the test")

    out = tmp_path / "never"
    with pytest.raises(KeyboardInterrupt, match="stopped by the test"):
        train_bi_encoder(
            mined, tiny_bi_encoder, out, guide=tiny_bert, batch_size=4, callbacks=[Boom()]
        )
    assert _siblings(tmp_path) == ["mined.jsonl"]


def test_interrupted_overwrite_keeps_the_old_model(tiny_bi_encoder, mined, tmp_path):
    from transformers import TrainerCallback

    from winnow.training import train_bi_encoder

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise RuntimeError("disk full")

    out = tmp_path / "model"
    train_bi_encoder(mined, tiny_bi_encoder, out, loss="mnrl", batch_size=4, max_steps=1)
    before = (out / "training.json").read_text()
    with pytest.raises(RuntimeError, match="disk full"):
        train_bi_encoder(
            mined,
            tiny_bi_encoder,
            out,
            loss="mnrl",
            batch_size=4,
            overwrite=True,
            callbacks=[Boom()],
        )
    assert (out / "training.json").read_text() == before
    assert _siblings(tmp_path) == ["mined.jsonl", "model"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"mined\.jsonl: is empty"),
        ("\n\n", r"mined\.jsonl: is empty"),
        (
            '{"anchor": "a", "positive": "b"}\n{"anchor": "a", "positive"\n',
            r"mined\.jsonl:2: not valid JSON",
        ),
        ('{"anchor": "a", "negative": "b"}\n', r"line 1: missing column\(s\) 'positive'"),
        (
            '{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "a", "positive": "b"}\n',
            r"line 2: missing column\(s\) 'negative'",
        ),
        ('{"anchor": "a", "positive": ""}\n', r"line 1: column 'positive' is empty"),
        ('{"anchor": 3, "positive": "b"}\n', r"line 1: column 'anchor' must be a string, got int"),
        ('["a", "b"]\n', r"line 1: expected a JSON object, got list"),
    ],
    ids=[
        "empty",
        "blank-lines",
        "bad-json",
        "no-positive",
        "ragged",
        "empty-text",
        "not-text",
        "list",
    ],
)
def test_bad_mined_files_name_file_line_and_column(tiny_bi_encoder, tmp_path, content, message):
    from winnow.training import train_bi_encoder

    data = tmp_path / "mined.jsonl"
    data.write_text(content)
    with pytest.raises(DatasetError, match=message):
        train_bi_encoder(data, tiny_bi_encoder, tmp_path / "out", loss="mnrl")
    assert not (tmp_path / "out").exists()


def test_formats_are_read_from_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from winnow.training import read_mined

    rows = [
        {
            "query": "q",
            "positive": "p",
            "negative_1": "n1",
            "negative_2": "n2",
            "scores": [3.0, 1.0, -1.0],
        }
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    mined = read_mined(tmp_path / "m.parquet")
    assert mined.format == "n-tuple-scores" and mined.negatives == ("negative_1", "negative_2")
    assert mined.tuples() == {
        "anchor": ["q"],
        "positive": ["p"],
        "negative_1": ["n1"],
        "negative_2": ["n2"],
    }
    assert mined.labeled_pairs()["label"] == [1.0, 0.0, 0.0]
    lists = [{"anchor": "q", "positive": ["d1", "d2"], "labels": [1, 0]}]
    mined = read_mined(_write_jsonl(tmp_path / "l.jsonl", lists))
    assert mined.format == "labeled-list"
    with pytest.raises(DatasetError, match=r"l\.jsonl: is in the labeled-list format"):
        mined.tuples()
    pairs = [
        {"anchor": "q", "positive": "d1", "label": 1},
        {"anchor": "q", "positive": "d2", "label": 0},
    ]
    mined = read_mined(_write_jsonl(tmp_path / "p.jsonl", pairs))
    assert mined.format == "labeled-pair"
    assert mined.labeled_lists() == {"query": ["q"], "docs": [["d1", "d2"]], "labels": [[1.0, 0.0]]}
    bad = [{"anchor": "q", "positive": "d1", "label": 2}]
    with pytest.raises(DatasetError, match=r"b\.jsonl: line 1: column 'label' must be 0 or 1"):
        read_mined(_write_jsonl(tmp_path / "b.jsonl", bad))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"broken\.parquet: not a readable Parquet file"):
        read_mined(tmp_path / "broken.parquet")


def test_bases_that_cannot_be_trained_are_clear_errors(
    tiny_bi_encoder, tiny_bert, tiny_llama, mined, tmp_path
):
    from winnow.training import train_bi_encoder, train_cross_encoder

    with pytest.raises(ModelLoadError, match="is a cross-encoder"):
        train_bi_encoder(mined, tiny_bert, tmp_path / "a", loss="mnrl")
    with pytest.raises(ModelLoadError, match="causal language model"):
        train_cross_encoder(mined, tiny_llama, tmp_path / "b")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="not-a-model"):
        train_bi_encoder(mined, str(empty), tmp_path / "c", loss="mnrl")
    with pytest.raises(ConfigError, match="loss 'guided' needs a guide"):
        train_bi_encoder(mined, tiny_bi_encoder, tmp_path / "d")
    with pytest.raises(ConfigError, match="unknown loss 'triplet'"):
        train_cross_encoder(mined, tiny_bi_encoder, tmp_path / "e", loss="triplet")
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        train_cross_encoder(mined, tiny_bi_encoder, tmp_path / "f", epochs=0)
    assert _siblings(tmp_path) == ["mined.jsonl", "not-a-model"]


def test_dev_split_is_evaluated_each_epoch_and_the_best_kept(tiny_bi_encoder, tiny_bert, tmp_path):
    from winnow.training import train_bi_encoder, train_cross_encoder

    ds = _dataset()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _write_beir(data_dir / "tiny", ds)
    rows = [
        {"anchor": ds.queries[q], "positive": ds.corpus[d].text}
        for q, docs in ds.qrels.items()
        for d, r in docs.items()
        if r > 0
    ]
    data = _write_jsonl(tmp_path / "mined.jsonl", rows)
    common = dict(dev="test@0.5", dataset="tiny", data_dir=str(data_dir), epochs=2, batch_size=4)
    result = train_bi_encoder(data, tiny_bi_encoder, tmp_path / "bi", loss="mnrl", **common)
    assert [e["epoch"] for e in result.dev] == [1.0, 2.0]
    scores = [e["eval_dev_cosine_ndcg@10"] for e in result.dev]
    assert result.best_metric == max(scores)
    result = train_cross_encoder(data, tiny_bert, tmp_path / "ce", loss="bce", **common)
    assert len(result.dev) == 2 and result.best_metric == max(
        e["eval_dev_ndcg@10"] for e in result.dev
    )
    with pytest.raises(ConfigError, match="give the collection with --dataset"):
        train_bi_encoder(data, tiny_bi_encoder, tmp_path / "x", loss="mnrl", dev="dev@0.5/0.2")


def test_dev_file_loss_and_guide_options_from_the_cli(tiny_bi_encoder, tiny_bert, mined, tmp_path):
    from winnow.cli import main

    out = tmp_path / "guided"
    args = ["train", "bi-encoder", "--data", mined, "--model", tiny_bi_encoder]
    args += ["--guide", f"cross-encoder:{tiny_bert}", "--guide-max-length", "32"]
    args += ["--no-contrast-positives", "--preset", "aggressive", "--dev", mined]
    args += ["--epochs", "2", "--batch-size", "6", "--output", str(out), "--no-progress"]
    assert main(args) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["settings"]["guide_options"]["contrast_positives"] is False
    assert (
        record["settings"]["guide_max_length"] == 32
        and record["settings"]["preset"] == "aggressive"
    )
    losses = [e["eval_loss"] for e in record["dev"]]
    assert len(losses) == 2 and record["best_metric"] == min(losses)
    # 2 epochs of 2 training batches, plus 2 evaluations of 2 batches
    assert record["guide"]["batches"] == 8
    assert record["guide"]["all_pairs"] == 8 * 6 * 6 * 3  # ap, aa, an blocks of 6 x 6


def test_sigterm_leaves_no_output_and_no_temporary_folder(tiny_bi_encoder, mined, tmp_path):
    """A CLI run stopped with SIGTERM (what `kill` and schedulers send) cleans up like Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "winnow.cli", "train", "bi-encoder", "--data", mined]
    cmd += ["--model", tiny_bi_encoder, "--loss", "mnrl", "--batch-size", "2", "--epochs", "50"]
    cmd += ["--output", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # bounded wait for training to begin writing
        while not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert _siblings(tmp_path) == ["mined.jsonl"]
