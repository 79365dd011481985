"""Daft's Ray runner on a local 2-CPU Ray instance: the in-process scores, one load per worker.

Daft fixes its runner once per process, so the job runs in a child process (which starts and
stops its own Ray instance); the test process keeps the native runner of test_distributed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import winnow

pytest.importorskip("daft", reason="needs the distributed extra")
pytest.importorskip("ray", reason="needs the ray extra")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        import daft, winnow
        from winnow.distributed import EngineOptions, collect, score_pairs_job
        rows = json.loads(sys.stdin.read())
        rr = winnow.load_reranker(sys.argv[1], "cross-encoder", device="cpu")
        options = EngineOptions(workers=2, ray_address="auto", batch_size=60)
        out = collect(score_pairs_job(daft.from_pydict(rows), rr, options, worker_info=True))
        print("RESULT " + json.dumps(out))
    finally:
        ray.shutdown()
    """
)


@pytest.mark.slow
def test_ray_runner_scores_equal_in_process(tiny_bert, tmp_path):
    n = 240
    rows = {
        "query_id": [f"q{i % 6}" for i in range(n)],
        "doc_id": [f"d{i}" for i in range(n)],
        "query": [f"wing lift {i % 6}" for i in range(n)],
        "text": [f"flow over a swept wing {i} " * (1 + i % 9) for i in range(n)],
    }
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, tiny_bert],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        timeout=480,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert sorted(out["doc_id"]) == sorted(rows["doc_id"])  # every pair back
    rr = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    expected = rr.score_pairs(list(zip(rows["query"], rows["text"])))
    got = np.array(out["score"], np.float64)
    want = expected[[int(d[1:]) for d in out["doc_id"]]].astype(np.float64)
    # float32 rounding of another batch composition (see test_distributed._close)
    assert np.all(np.abs(got - want) <= 1e-5 * np.maximum(1.0, np.abs(want)))
    assert 1 <= len(set(out["worker_pid"])) <= 2
    assert set(out["model_loads"]) == {1}
    assert set(out["winnow_path"]) == {winnow.__file__}  # Ray workers import this winnow
