"""``winnow eval`` and ``winnow rerank`` end to end on a tiny BEIR folder written here."""

from __future__ import annotations

import json
import random

import pytest

from winnow.cli import main
from winnow.data import read_run, write_run
from winnow.evaluation import Evaluator

TOPICS = {
    "grain": "wheat grain chaff threshing winnowing harvest barley",
    "market": "stock market shares trading prices investors bonds",
    "search": "search engine ranking documents queries retrieval index",
    "ocean": "ocean waves tides currents salt water coral",
}


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory):
    """A 40-document, 8-query BEIR collection: each query is about one topic."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("beir") / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs, qrels_rows, queries = [], [], []
    for t, (topic, words) in enumerate(TOPICS.items()):
        vocab = words.split()
        for i in range(10):
            text = " ".join(rng.choice(vocab) for _ in range(12 + 3 * i))
            docs.append({"_id": f"{topic}{i}", "title": f"{topic} {i}", "text": text})
        for j in range(2):
            qid = f"q{2 * t + j}"
            queries.append({"_id": qid, "text": " ".join(rng.sample(vocab, 3))})
            for i in rng.sample(range(10), 4):
                qrels_rows.append(f"{qid}\t{topic}{i}\t{rng.randint(1, 2)}")
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(qrels_rows) + "\n"
    )
    return root


def _eval(beir_folder, out, cache, tiny_bi_encoder, tiny_bert, *extra):
    return main(
        [
            "eval",
            "--dataset",
            str(beir_folder),
            "--systems",
            "bm25,dense,hybrid,hybrid+rerank,bm25%5>>rerank:" + tiny_bi_encoder,
            "--dense-model",
            tiny_bi_encoder,
            "--reranker",
            f"cross-encoder:{tiny_bert}",
            "--depth",
            "10",
            "--cache-dir",
            str(cache),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
            *extra,
        ]
    )


def test_eval_writes_runs_metrics_report_and_plot(
    beir_folder, tmp_path, tiny_bi_encoder, tiny_bert, capsys
):
    out = tmp_path / "out"
    assert _eval(beir_folder, out, tmp_path / "cache", tiny_bi_encoder, tiny_bert) == 0
    printed = capsys.readouterr().out
    assert "bm25 (baseline)" in printed and "hybrid+rerank" in printed
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["dataset"] == "tiny" and doc["baseline"] == "bm25"
    names = ["bm25", "dense", "hybrid", "hybrid+rerank", f"bm25%5>>rerank:{tiny_bi_encoder}"]
    assert list(doc["systems"]) == names
    qrels = {}
    for line in (beir_folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, r = line.split("\t")
        qrels.setdefault(q, {})[d] = int(r)
    evaluator = Evaluator(qrels)
    for name, entry in doc["systems"].items():
        for metric in ("nDCG@10", "R@100", "R@1000", "MAP", "MRR@10", "P@10"):
            assert 0.0 <= entry[metric] <= 1.0
        assert set(entry["seconds"]) >= {"total"} and entry["seconds"]["total"] > 0
        run = read_run(out / entry["run"])
        assert set(run) == set(qrels)
        # the metrics in metrics.json are those of the run file written next to them
        assert evaluator.aggregate(run)["nDCG@10"] == pytest.approx(entry["nDCG@10"], abs=1e-9)
        if name != "bm25":
            assert set(entry["significance"]["nDCG@10"]) == {
                "delta",
                "statistic",
                "t",
                "p",
                "p_adjusted",
                "p_holm",
                "significant",
            }
    assert doc["systems"]["bm25"]["seconds"]["index"] >= 0
    assert "encode" in doc["systems"]["dense"]["seconds"]
    assert doc["systems"]["hybrid+rerank"]["pairs"] == 8 * 10
    assert doc["systems"]["hybrid+rerank"]["pairs_per_second"] > 0
    cut = read_run(out / doc["systems"][names[-1]]["run"])
    bm25_run = read_run(out / "runs" / "bm25.trec")
    assert all(len(r) == min(5, len(bm25_run[q])) for q, r in cut.items())
    report = (out / "report.md").read_text()
    assert "| bm25 (baseline) |" in report and "Holm" in report and "plot.png" in report
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_reuses_the_cache(beir_folder, tmp_path, tiny_bi_encoder, tiny_bert, capsys):
    cache = tmp_path / "cache"
    assert _eval(beir_folder, tmp_path / "a", cache, tiny_bi_encoder, tiny_bert, "--no-plot") == 0
    assert _eval(beir_folder, tmp_path / "b", cache, tiny_bi_encoder, tiny_bert, "--no-plot") == 0
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    for name, entry in second["systems"].items():
        heavy = [s for s in entry["stages"] if s["phase"] in ("index", "retrieve", "rerank")]
        assert heavy and all(s["cached"] for s in heavy), name  # nothing searched or re-scored
        assert not any(s["phase"] == "index" for s in entry["stages"])  # index not even loaded
        for metric in ("nDCG@10", "MAP"):
            assert entry[metric] == first["systems"][name][metric]
    # the first run did the work (each index once, shared by the systems that use it)
    stages = [s for e in first["systems"].values() for s in e["stages"] if s["phase"] == "index"]
    assert sorted(s["stage"] for s in stages) == ["bm25", f"dense:{tiny_bi_encoder}"]
    assert not any(s["cached"] for s in stages)
    capsys.readouterr()


def test_queries_limit_and_json_output(beir_folder, tmp_path, capsys):
    code = main(
        [
            "eval",
            "--dataset",
            str(beir_folder),
            "--systems",
            "bm25,bm25%3",
            "--queries",
            "3",
            "--no-cache",
            "--json",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["queries"] == 3 and list(doc["systems"]) == ["bm25", "bm25%3"]
    assert doc["systems"]["bm25%3"]["R@1000"] <= doc["systems"]["bm25"]["R@1000"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--systems", "bm25,bm99"], "unknown name 'bm99'; valid names: bm25"),
        (["--systems", "bm25,dense", "--baseline", "hybrid"], "--baseline 'hybrid' is not one of"),
        (["--metrics", "nDCG@10,XYZ@3"], "unknown metric 'XYZ@3'"),
        (["--queries", "0"], "positive integer"),
    ],
)
def test_bad_options_are_clear_errors(beir_folder, args, message, capsys):
    code = main(["eval", "--dataset", str(beir_folder), "--no-cache", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_rerank_command_round_trips_a_trec_run(beir_folder, tmp_path, tiny_bert, capsys):
    import winnow
    from winnow.data import load_dataset

    dataset = load_dataset(beir_folder)
    bm25 = tmp_path / "bm25.trec"
    assert (
        main(
            [
                "eval",
                "--dataset",
                str(beir_folder),
                "--systems",
                "bm25",
                "--no-cache",
                "--no-plot",
                "--output",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    run = read_run(tmp_path / "e" / "runs" / "bm25.trec")
    write_run(run, bm25)
    out = tmp_path / "reranked.trec"
    args = [
        "rerank",
        "--run",
        str(bm25),
        "--dataset",
        str(beir_folder),
        "--model",
        f"cross-encoder:{tiny_bert}",
    ]
    args += ["--output", str(out), "--depth", "5", "--no-cache", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert "reranked 40 pairs of 8 queries" in capsys.readouterr().err
    reranked = read_run(out)
    reranker = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    for qid, ranking in run.items():
        top = sorted(ranking, key=lambda d: (-ranking[d], d))
        head = top[:5]
        expected = reranker.score_pairs(
            [(dataset.queries[qid], dataset.corpus[d].full_text) for d in head]
        )
        assert [reranked[qid][d] for d in head] == pytest.approx(
            expected.tolist(), rel=1e-4, abs=1e-5
        )
        tail = sorted(top[5:], key=lambda d: -reranked[qid][d])
        assert tail == top[5:]  # below depth: incoming order kept underneath
    chunked = tmp_path / "chunked.trec"
    chunk_args = [
        *args[:7],
        "--output",
        str(chunked),
        "--chunked",
        "--window",
        "12",
        "--stride",
        "8",
    ]
    assert main([*chunk_args, "--no-cache", "--device", "cpu", "--no-progress"]) == 0
    assert {q: set(r) for q, r in read_run(chunked).items()} == {q: set(r) for q, r in run.items()}
    capsys.readouterr()
    # an unknown document in the input run is an error naming the file
    bad = tmp_path / "bad.trec"
    bad.write_text("q0 Q0 nosuchdoc 1 1.0 x\n")
    args[2] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "'nosuchdoc'" in err


def test_unusable_output_paths_fail_before_any_work(beir_folder, tmp_path, capsys, monkeypatch):
    """An --output that cannot be written is refused up front, not after the evaluation ran."""
    import winnow.evaluation.commands as commands

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started although the output could not be written")

    monkeypatch.setattr(commands, "_load", must_not_run)  # the collection is not even read
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    code = main(
        ["eval", "--dataset", str(beir_folder), "--systems", "bm25", "--output", str(a_file)]
    )
    assert code == 2 and "is a file; give a folder" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"
    under_a_file = a_file / "out"
    code = main(
        ["eval", "--dataset", str(beir_folder), "--systems", "bm25", "--output", str(under_a_file)]
    )
    assert code == 2 and "cannot be created" in capsys.readouterr().err

    run = tmp_path / "in.trec"
    run.write_text("q0 Q0 d0 1 1.0 x\n")
    rerank = ["rerank", "--run", str(run), "--dataset", str(beir_folder), "--model", "m"]
    assert main([*rerank, "--output", str(tmp_path)]) == 2
    assert "is a folder; give the path of the run file" in capsys.readouterr().err
