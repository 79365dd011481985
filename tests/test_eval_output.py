"""``winnow eval --output DIR``: the folder is written as a whole under an exclusive lock, files get
the umask's permissions, and a run killed with -9 resumes to byte-identical runs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from test_data_beir import write_beir
from winnow._fs import atomic_directory, remove_stale_temporaries, write_json_atomic
from winnow.cli import main
from winnow.data import write_run
from winnow.evaluation.commands import output_lock_path

WORDS = ["wing", "lift", "drag", "heat", "flow", "shock", "layer", "boundary", "plate", "jet"]
CORPUS = [
    {"_id": f"d{i}", "text": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(4))}
    for i in range(20)
]
QUERIES = [{"_id": f"q{i}", "text": f"{WORDS[i]} {WORDS[i + 1]}"} for i in range(5)]
QRELS = "".join(f"q{i} 0 d{i} 1\nq{i} 0 d{i + 3} 2\n" for i in range(5))


@pytest.fixture
def collection(tmp_path):
    return write_beir(tmp_path / "toy", corpus=CORPUS, queries=QUERIES, qrels=QRELS)


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def evaluate(collection, output, systems="bm25,bm25%3", *extra):
    return main(
        ["eval", "--dataset", str(collection), "--systems", systems, "--no-plot"]
        + ["--output", str(output), *extra]
        + ([] if "--cache-dir" in extra else ["--no-cache"])
    )


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_rerun_with_fewer_systems_leaves_no_old_runs(collection, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate(collection, out, "bm25,bm25%3,bm25%2") == 0
    assert listing(out / "runs") == ["bm25.trec", "bm25_2.trec", "bm25_3.trec"]
    assert evaluate(collection, out, "bm25,bm25%3") == 0
    assert listing(out) == [
        "metrics.json",
        "report.md",
        "runs",
        "runs/bm25.trec",
        "runs/bm25_3.trec",
    ]
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".out.") and "lock" not in p.name
    ]
    capsys.readouterr()


def test_output_holding_other_files_is_refused_before_any_work(
    collection, tmp_path, capsys, monkeypatch
):
    import winnow.evaluation.commands as commands

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started although the output would lose files")

    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "runs" / "keep.txt").write_text("mine too")
    monkeypatch.setattr(commands, "_load", must_not_run)
    assert evaluate(collection, out) == 2
    err = capsys.readouterr().err
    assert "holds files an evaluation did not write (notes.txt, runs/keep.txt)" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_a_second_eval_into_a_locked_output_fails_at_once(
    collection, tmp_path, capsys, monkeypatch
):
    """Another process holds the lock (as a running eval does): this eval stops before any work."""
    import winnow.evaluation.commands as commands

    out = tmp_path / "out"
    lock = output_lock_path(out)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
            "print('locked', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"

        def must_not_run(*args, **kwargs):
            raise AssertionError("work started although the output is locked")

        monkeypatch.setattr(commands, "_load", must_not_run)
        assert evaluate(collection, out) == 2
        err = capsys.readouterr().err
        assert f"is being written by another evaluation (it holds the lock {str(lock)!r})" in err
        assert not out.exists()
    finally:
        holder.communicate("", timeout=30)
    monkeypatch.undo()
    assert evaluate(collection, out) == 0  # released: the next eval goes ahead
    capsys.readouterr()


def test_failed_write_leaves_the_previous_output_untouched(
    collection, tmp_path, capsys, monkeypatch
):
    import winnow.evaluation.report as report

    out = tmp_path / "out"
    assert evaluate(collection, out, "bm25,bm25%3") == 0
    before = {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "markdown_report", broken)
    assert evaluate(collection, out, "bm25") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out", "toy"]


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "out"
    stale = [tmp_path / ".out.0123456789ab.tmp", tmp_path / ".out.ba9876543210.old"]
    for s in stale:
        s.mkdir()
    other = [tmp_path / ".out.x.0123456789ab.tmp", tmp_path / ".out.lock", tmp_path / "out"]
    for o in other:
        o.mkdir()
    assert sorted(remove_stale_temporaries(target)) == sorted(stale)
    assert all(o.exists() for o in other) and not any(s.exists() for s in stale)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_and_folders_follow_the_umask(collection, tmp_path, umask, mask, capsys):
    umask(mask)
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert evaluate(collection, out, "bm25,bm25%3", "--cache-dir", str(cache)) == 0
    capsys.readouterr()
    write_run({"q": {"d": 1.0}}, tmp_path / "run.trec")
    write_json_atomic(tmp_path / "entry.json", {"a": 1})
    with atomic_directory(tmp_path / "entry") as folder:
        (folder / "x").write_text("x")
    files = [tmp_path / "run.trec", tmp_path / "entry.json"]
    folders = [tmp_path / "entry", out]
    for root in (out, cache):
        for p in root.rglob("*"):
            (folders if p.is_dir() else files).append(p)
    assert any(p.suffix == ".json" for p in cache.rglob("*"))  # the caches were written
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == file_mode, p
    for p in folders:
        assert stat.S_IMODE(p.stat().st_mode) == dir_mode, p


def test_rerun_keeps_the_permissions_of_the_output_folder(collection, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate(collection, out) == 0
    out.chmod(0o750)
    assert evaluate(collection, out) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    capsys.readouterr()


KILL_DURING_RERANK = textwrap.dedent(
    """
    import os, signal, sys
    from winnow.cli import main
    from winnow.pipeline import Rerank

    if sys.argv[1] == "kill":
        def transform(self, queries, run, ctx):
            os.kill(os.getpid(), signal.SIGKILL)
        Rerank.transform = transform
    sys.exit(main(sys.argv[2:]))
    """
)


def test_eval_killed_during_rerank_resumes_to_byte_identical_runs(collection, tmp_path, tiny_bert):
    """kill -9 while the last system reranks: the previous output stays whole, and the rerun
    reuses the finished systems' runs from the cache and writes the same bytes as a clean run."""
    systems = f"bm25,bm25%3,bm25>>rerank:{tiny_bert}"

    def run(mode, out, cache):
        args = ["eval", "--dataset", str(collection), "--systems", systems, "--no-plot"]
        args += ["--output", str(out), "--cache-dir", str(cache), "--device", "cpu"]
        args += ["--depth", "5", "--no-progress", "--json"]
        return subprocess.run(
            [sys.executable, "-c", KILL_DURING_RERANK, mode, *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )

    out, cache = tmp_path / "out", tmp_path / "cache"
    assert evaluate(collection, out, "bm25") == 0  # an earlier output in the same folder
    earlier = (out / "metrics.json").read_bytes()
    killed = run("kill", out, cache)
    assert killed.returncode == -9, killed.stderr
    assert (out / "metrics.json").read_bytes() == earlier and listing(out / "runs") == ["bm25.trec"]
    resumed = run("normal", out, cache)
    assert resumed.returncode == 0, resumed.stderr
    clean = run("normal", tmp_path / "clean", tmp_path / "clean-cache")
    assert clean.returncode == 0, clean.stderr
    assert listing(out) == listing(tmp_path / "clean")
    for name in listing(out / "runs"):
        assert (out / "runs" / name).read_bytes() == (
            tmp_path / "clean" / "runs" / name
        ).read_bytes()
    import json

    stages = {n: s["stages"] for n, s in json.loads(resumed.stdout)["systems"].items()}
    assert all(s["cached"] for s in stages["bm25"] if s["phase"] == "retrieve")
    assert all(s["cached"] for s in stages["bm25%3"] if s["phase"] == "retrieve")


def test_a_lock_file_that_cannot_be_created_is_named(collection, tmp_path, capsys):
    out = tmp_path / "out"
    output_lock_path(out).mkdir()  # a folder where the lock file should be
    assert evaluate(collection, out) == 2
    err = capsys.readouterr().err
    assert f"cannot create the lock file {str(output_lock_path(out))!r}" in err
    assert "another evaluation" not in err


@pytest.mark.parametrize("output", [".", "..", "./sub/.."])
def test_current_folder_or_above_is_refused(collection, tmp_path, monkeypatch, output, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert evaluate(collection, output) == 2
    assert "is the current folder or holds it" in capsys.readouterr().err
    assert work.is_dir() and list(work.iterdir()) == []


def test_relative_output_and_a_symlink_to_it(collection, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert evaluate(collection, "out") == 0
    (tmp_path / "link").symlink_to(tmp_path / "out")
    assert evaluate(collection, "link", "bm25") == 0  # replaces the folder the link points to
    assert (tmp_path / "link").is_symlink()
    assert listing(tmp_path / "out" / "runs") == ["bm25.trec"]
    capsys.readouterr()
