"""benchmarks/cpu_backends.py's row machinery: real subprocesses, a real tiny model, real Cranfield
pairs; the figures it reports are computed from the times and outputs it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cpu_backends.py"


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_rows_report_ratios_and_quality_from_their_own_measurements(
    tiny_bert, shared_datasets, tmp_path
):
    proc = bench(
        "--family",
        "cross-encoder",
        "--rows",
        "winnow-torch-float32",
        "--pairs",
        "8",
        "--repeats",
        "1",
        "--calibration",
        "0",
        "--cross-model",
        tiny_bert,
        "--data-dir",
        str(shared_datasets),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert list(report["families"]) == ["cross-encoder"]
    fam = report["families"]["cross-encoder"]
    assert fam["inputs"] == 8 and fam["unit"] == "pairs"
    assert fam["reference"] == "st-torch-float32"
    # the reference row is added (and run first) even when --rows does not name it
    assert list(fam["rows"]) == ["st-torch-float32", "winnow-torch-float32"]
    ref, ours = fam["rows"]["st-torch-float32"], fam["rows"]["winnow-torch-float32"]
    for row in (ref, ours):
        assert row["status"] == "ok", row
        assert row["inputs"] == 8 and row["repeats"] == 1 and row["seconds"] > 0
        assert row["per_s"] == pytest.approx(8 / row["seconds"])
        mem = row["peak_rss_mib"]
        assert 0 < mem["import"] <= mem["load"] <= mem["score"]  # a high-water mark, per process
        assert row["load_seconds"] > 0
    assert ref["ratio_vs_reference"] == 1.0
    assert ours["ratio_vs_reference"] == pytest.approx(ref["seconds"] / ours["seconds"])
    assert ref["spearman_vs_reference"] == pytest.approx(1.0)
    assert ref["max_abs_diff_vs_reference"] == 0.0
    # the same tiny model through winnow's engine and sentence-transformers: the same scores
    assert ours["spearman_vs_reference"] > 0.999
    assert ours["max_abs_diff_vs_reference"] < 1e-4
    assert fam["ndcg"] is None
    # the summary against issue 13's targets is read off the same rows
    exact, fast = fam["summary"]["exact"], fam["summary"]["fast"]
    assert exact["winnow_row"] == "winnow-torch-float32"
    assert exact["ratio"] == ours["ratio_vs_reference"]
    assert exact["target_met"] == (ours["ratio_vs_reference"] >= 1.8)
    assert exact["peers"] == {
        "sentence-transformers": {
            "row": "st-torch-float32",
            "ratio": 1.0,
            "quality": pytest.approx(1.0),
        }
    }
    assert exact["ahead_of"] == {"sentence-transformers": ours["ratio_vs_reference"] > 1.0}
    assert fast["winnow_row"] is None  # no fast row was asked for


def test_an_unknown_row_is_refused_with_the_valid_ones():
    proc = bench("--rows", "winnow-onnx-int9", timeout=60)
    assert proc.returncode == 2
    assert "unknown row 'winnow-onnx-int9'" in proc.stderr
    assert "winnow-onnx-int8" in proc.stderr and "rerankers-float32" in proc.stderr


def test_a_row_that_cannot_run_says_why():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from _cpu_rows import classify, get_row
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from winnow.errors import ConfigError

    onnx = get_row("cross-encoder", "winnow-onnx-int8")
    missing = ConfigError("unknown option 'backend' for cross-encoder. Valid options of ...")
    assert classify(missing, onnx)["status"] == "not available in this checkout"
    other = ConfigError("max_length must be an integer >= 8, got 2")
    assert classify(other, onnx) == {"status": "error", "reason": f"ConfigError: {other}"}
    peer = get_row("bi-encoder", "infinity-emb")
    verdict = classify(ModuleNotFoundError("No module named 'infinity_emb'"), peer)
    assert verdict["status"] == "not installed"
    assert "numpy<2" in verdict["reason"] and "No module named 'infinity_emb'" in verdict["reason"]
    # a peer's own TypeError mentioning backend is that peer's error, not winnow's missing option
    st = get_row("cross-encoder", "st-onnx-float32")
    assert classify(TypeError("got an unexpected keyword 'backend'"), st)["status"] == "error"


def test_a_rows_peak_memory_is_its_own_process_not_the_parents():
    """ru_maxrss survives fork + exec, so a row's process started by a big parent would report the
    parent's resident memory as its own peak; the peak must be the row's process alone."""
    parent = bytearray(400 * 2**20)
    parent[::4096] = b"\x01" * len(parent[::4096])  # touch every page: resident, not just mapped
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from _cpu_rows import peak_rss_mib; "
        "print(peak_rss_mib())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SCRIPT.parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    child = float(proc.stdout)
    del parent
    assert 0 < child < 200  # numpy and the rows module: tens of MiB, not the parent's 400


def test_an_int8_row_that_fell_back_to_float32_is_no_fast_mode():
    """The guard's fallback runs the exact model under the int8 row's name: the summary must not
    report it as winnow's fast mode (the quiet-machine run of 2026-12-01 did, at 1.58x)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from cpu_backends import summarise
    finally:
        sys.path.remove(str(SCRIPT.parent))

    def row(peer, ratio, spearman, log=()):
        return {
            "peer": peer,
            "ratio_vs_reference": ratio,
            "spearman_vs_reference": spearman,
            "max_abs_diff_vs_reference": 0.0 if spearman == 1.0 else 0.01,
            "log": list(log),
        }

    refused = "WARNING ...: int8 m on onnx fails its quality guard: spearman 0.94; using the exact"
    fam = {
        "rows": {
            "st-torch-float32": row("sentence-transformers", 1.0, 1.0),
            "winnow-torch-float32": row("winnow", 1.5, 1.0),
            "winnow-onnx-int8": row("winnow", 1.6, 1.0, [refused]),
        }
    }
    assert summarise(fam, "cross-encoder")["fast"]["winnow_row"] is None
    fam["rows"]["winnow-onnx-int8"]["log"] = []  # int8 that passed its guard counts
    assert summarise(fam, "cross-encoder")["fast"]["winnow_row"] == "winnow-onnx-int8"
