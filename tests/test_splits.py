"""Query splits: spec parsing, exact sizes, no overlap (property test), loading and the CLI."""

from __future__ import annotations

import hashlib
import json
import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winnow.cli import main
from winnow.data import load_dataset, read_run
from winnow.data.splits import QuerySplit, is_split_spec, part_sizes, split_query_ids
from winnow.errors import ConfigError

QRELS = "query-id\tcorpus-id\tscore\n" + "".join(
    f"q{i}\td{i % 5}\t{1 + i % 2}\n" for i in range(20)
)


def write_collection(root: Path, qrels: str = QRELS, extra_split: str | None = None) -> Path:
    """20 judged queries q0..q19 plus one unjudged (q99), 5 documents."""
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "text": f"document about topic{i}"} for i in range(5)]
    queries = [{"_id": f"q{i}", "text": f"topic{i % 5} question"} for i in [*range(20), 99]]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(qrels)
    if extra_split:
        (root / "qrels" / f"{extra_split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t0\nq4\td4\t1\n"
        )
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- spec strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected", "canonical"),
    [
        ("train@0.6", QuerySplit("train", Decimal("0.6")), "train@0.6:seed0"),
        ("test@0.6:seed0", QuerySplit("test", Decimal("0.6")), "test@0.6:seed0"),
        ("test@0.60:seed3", QuerySplit("test", Decimal("0.6"), seed=3), "test@0.6:seed3"),
        (
            "dev@0.6/0.2:seed1",
            QuerySplit("dev", Decimal("0.6"), Decimal("0.2"), seed=1),
            "dev@0.6/0.2:seed1",
        ),
        (
            "dev/train@.5",
            QuerySplit("train", Decimal("0.5"), source="dev"),
            "dev/train@0.5:seed0",
        ),
    ],
)
def test_parse_and_canonical_spec(spec, expected, canonical):
    parsed = QuerySplit.parse(spec)
    assert parsed == expected
    assert parsed.spec == canonical
    assert QuerySplit.parse(parsed.spec) == parsed
    assert is_split_spec(spec)


def test_plain_names_are_not_split_specs():
    assert not is_split_spec("test") and not is_split_spec("dev")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("valid@0.6", "part 'valid' is not one of train, dev, test"),
        ("dev@0.6", "needs a dev fraction, e.g. dev@0.6/0.2"),
        ("train@0", "train fraction must be strictly between 0 and 1"),
        ("train@1", "train fraction must be strictly between 0 and 1"),
        ("train@1.5", "train fraction must be strictly between 0 and 1"),
        ("train@abc", "train fraction must be a number"),
        ("train@nan", "train fraction must be strictly between 0 and 1"),
        ("train@0.6/0", "dev fraction must be strictly between 0 and 1"),
        ("train@0.6/0.4", "train + dev fractions must leave some test queries"),
        ("train@0.6:7", "the seed must be written seedN"),
        ("train@0.6:seed-1", "the seed must be written seedN"),
        ("train@", "is not a split spec; the form is PART@TRAIN"),
        ("a/b/train@0.5", "is not a split spec"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ConfigError, match="split") as err:
        QuerySplit.parse(spec)
    assert message in str(err.value)
    assert repr(spec) in str(err.value)


# -- assignment -----------------------------------------------------------------------------


def test_assignment_is_the_documented_sha256_order():
    """Golden values: the order is sha256("seed:id"), so they hold on every machine and Python."""
    ids = [f"q{i}" for i in range(1, 11)]
    assert split_query_ids(ids, (0.5,), 0) == {
        "train": ["q2", "q4", "q5", "q6", "q9"],
        "test": ["q1", "q3", "q7", "q8", "q10"],
    }
    assert split_query_ids(ids, (0.3, 0.3), 7) == {
        "train": ["q5", "q8", "q10"],
        "dev": ["q2", "q3", "q6"],
        "test": ["q1", "q4", "q7", "q9"],
    }
    ranked = sorted(ids, key=lambda q: hashlib.sha256(f"0:{q}".encode()).hexdigest())
    assert sorted(split_query_ids(ids, (0.5,), 0)["train"]) == sorted(ranked[:5])


def test_sizes_round_half_up_with_exact_decimals():
    assert part_sizes(225, 0.6) == {"train": 135, "test": 90}  # Cranfield
    assert part_sizes(5, 0.5) == {"train": 3, "test": 2}  # 2.5 rounds up
    assert part_sizes(10, 0.15) == {"train": 2, "test": 8}  # 1.5 up; float 0.15 < 0.15
    assert part_sizes(10, 0.25, 0.25) == {"train": 3, "dev": 2, "test": 5}  # 2.5 -> 3, 5 - 3
    assert part_sizes(3, 0.1) == {"train": 0, "test": 3}
    assert part_sizes(0, 0.6) == {"train": 0, "test": 0}


def test_split_query_ids_refuses_bad_input():
    with pytest.raises(ConfigError, match="listed twice"):
        split_query_ids(["a", "b", "a"], (0.5,))
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        split_query_ids(["a"], (0.5,), seed=-1)
    with pytest.raises(ConfigError, match=r"\(train,\) or \(train, dev\)"):
        split_query_ids(["a"], (0.2, 0.2, 0.2))
    with pytest.raises(ConfigError, match="'train' key"):
        split_query_ids(["a"], {"dev": 0.2})


@settings(max_examples=200, deadline=None)
@given(
    ids=st.sets(st.text(min_size=1, max_size=8), max_size=120),
    train=st.integers(1, 98),
    dev=st.one_of(st.none(), st.integers(1, 98)),
    seed=st.integers(0, 2**32),
    shuffle_seed=st.integers(0, 1000),
)
def test_parts_are_disjoint_complete_exact_and_order_free(ids, train, dev, seed, shuffle_seed):
    t = Decimal(train) / 100
    d = None if dev is None or train + dev >= 100 else Decimal(dev) / 100
    fractions = (t,) if d is None else (t, d)
    ordered = sorted(ids)
    parts = split_query_ids(ordered, fractions, seed)
    # every id in exactly one part
    placed = [q for members in parts.values() for q in members]
    assert sorted(placed) == ordered and len(placed) == len(set(placed))
    assert set(parts) == ({"train", "test"} if d is None else {"train", "dev", "test"})
    # the documented sizes
    n = len(ids)
    assert {p: len(m) for p, m in parts.items()} == part_sizes(n, *fractions)
    assert abs(len(parts["train"]) - n * t) <= Decimal("0.5")
    # the input order changes nothing but the order inside each part
    shuffled = list(ordered)
    random.Random(shuffle_seed).shuffle(shuffled)
    again = split_query_ids(shuffled, fractions, seed)
    assert {p: sorted(m) for p, m in again.items()} == {p: sorted(m) for p, m in parts.items()}
    # a larger train fraction only moves test queries into train (nested parts)
    if d is None and train < 98:
        bigger = split_query_ids(ordered, (t + Decimal("0.01"),), seed)
        assert set(parts["train"]) <= set(bigger["train"])


# -- datasets -------------------------------------------------------------------------------


def test_select_keeps_the_corpus_object_and_restricts_queries_and_qrels(tmp_path):
    root = write_collection(tmp_path / "c")
    full = load_dataset(root)
    train = QuerySplit.parse("train@0.6").select(full)
    test = QuerySplit.parse("test@0.6").select(full)
    assert train.corpus is full.corpus and test.corpus is full.corpus
    assert len(train.queries) == 12 and len(test.queries) == 8
    assert not set(train.queries) & set(test.queries)
    assert set(train.queries) | set(test.queries) == set(full.qrels)  # q99 is in neither
    for part in (train, test):
        assert set(part.qrels) == set(part.queries)
        assert all(part.qrels[q] == full.qrels[q] for q in part.qrels)
        assert all(part.queries[q] == full.queries[q] for q in part.queries)


def test_load_dataset_with_a_spec_reads_and_writes_no_file_of_the_collection(tmp_path):
    root = write_collection(tmp_path / "data" / "toy", extra_split="dev")
    before = _digest(root)
    train = load_dataset("toy", split="train@0.6:seed2", data_dir=tmp_path / "data")
    test = load_dataset("toy", split="test@0.6:seed2", data_dir=tmp_path / "data")
    assert _digest(root) == before
    assert sorted([*train.queries, *test.queries]) == sorted(f"q{i}" for i in range(20))
    assert train.queries.keys().isdisjoint(test.queries.keys())
    # another source split: only the queries judged in qrels/dev.tsv are split
    dev_train = load_dataset(root, split="dev/train@0.5")
    dev_test = load_dataset(root, split="dev/test@0.5")
    assert sorted([*dev_train.qrels, *dev_test.qrels]) == ["q1", "q2", "q3", "q4"]
    assert len(dev_train.qrels) == 2


def test_load_dataset_refuses_a_bad_spec_before_reading(tmp_path):
    with pytest.raises(ConfigError, match="'holdout' is not one of"):
        load_dataset(tmp_path / "does-not-exist", split="holdout@0.6")


def test_cranfield_train_and_test_partition_the_judged_queries(shared_datasets):
    full = load_dataset("cranfield", data_dir=shared_datasets)
    train = load_dataset("cranfield", split="train@0.6", data_dir=shared_datasets)
    test = load_dataset("cranfield", split="test@0.6", data_dir=shared_datasets)
    judged = {q for q, docs in full.qrels.items() if docs}
    assert len(judged) == 225 and len(train.queries) == 135 and len(test.queries) == 90
    assert set(train.queries) | set(test.queries) == judged
    assert set(train.queries).isdisjoint(test.queries)


# -- CLI ------------------------------------------------------------------------------------


def test_cli_data_split_prints_specs_and_writes_id_lists(tmp_path, capsys):
    root = write_collection(tmp_path / "toy")
    out = tmp_path / "ids"
    args = ["data", "split", str(root), "--train", "0.5", "--dev", "0.25", "--seed", "4"]
    assert main([*args, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "20 queries judged in test, seed 4" in printed
    for part, count in (("train", 10), ("dev", 5), ("test", 5)):
        assert f"--split {part}@0.5/0.25:seed4" in printed
        ids = (out / f"{part}.txt").read_text().split()
        assert len(ids) == count
        assert sorted(ids) == sorted(load_dataset(root, split=f"{part}@0.5/0.25:seed4").queries)
    summary = json.loads((out / "split.json").read_text())
    assert summary["parts"]["dev"] == {"spec": "dev@0.5/0.25:seed4", "queries": 5}
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["judged_queries"] == 20


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train", "1.2"], "--train/--dev/--source: the train fraction must be strictly"),
        (["--train", "0.6", "--dev", "0.5"], "train + dev fractions must leave some test"),
        (["--train", "0.6", "--seed", "-3"], "--seed must be >= 0"),
    ],
)
def test_cli_data_split_errors(tmp_path, capsys, extra, message):
    root = write_collection(tmp_path / "toy")
    assert main(["data", "split", str(root), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_data_split_refuses_a_file_as_output(tmp_path, capsys):
    root = write_collection(tmp_path / "toy")
    (tmp_path / "file").write_text("x")
    code = main(["data", "split", str(root), "--train", "0.6", "--output", str(tmp_path / "file")])
    assert code == 2 and "is a file; give a folder" in capsys.readouterr().err


def test_cli_eval_split_evaluates_only_that_part(tmp_path, capsys):
    root = write_collection(tmp_path / "toy")
    base = ["eval", "--dataset", str(root), "--systems", "bm25", "--no-progress", "--no-plot"]
    base += ["--cache-dir", str(tmp_path / "cache"), "--json"]
    out = tmp_path / "out"
    assert main([*base, "--split", "test@0.6:seed1", "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 8
    expected = load_dataset(root, split="test@0.6:seed1")
    assert sorted(read_run(next((out / "runs").glob("*.trec")))) == sorted(expected.queries)
    assert main([*base, "--split", "test@0.6:seedX"]) == 2
    assert "the seed must be written seedN" in capsys.readouterr().err
