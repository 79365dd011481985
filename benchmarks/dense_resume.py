"""Dense indexing killed part-way with SIGKILL, then resumed from its checkpoints.

Three fresh subprocesses on one collection, all with the same ``checkpoint_every``:

1. a whole ``Dense.index`` into an empty cache (the reference);
2. the same into another empty cache, killed with SIGKILL as chunk ``--kill-at`` starts;
3. the same again on the cache of (2): it reads the finished chunks and encodes the rest.

Prints the encode seconds of (1) and (3), the documents each one encoded, and whether the
resumed embeddings equal the reference bit for bit.

    WINNOW_DATA=../shared/datasets python benchmarks/dense_resume.py --dataset cranfield
    python benchmarks/dense_resume.py --dataset cisi --checkpoint-every 200 --kill-at 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, os, signal, sys, time
import numpy as np
from winnow.data import load_dataset
from winnow.retrieval import DenseIndex

dataset, model, cache, every, kill_at, out = sys.argv[1:7]
ds = load_dataset(dataset, data_dir=os.environ.get("WINNOW_DATA"), download=False)
d = DenseIndex(model, cache_dir=cache, device="cpu", checkpoint_every=int(every), memo_mb=0)
real, encoded = d.encoder.encode_documents, []

def encode(texts, **kwargs):
    if len(encoded) + 1 == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    encoded.append(len(texts))
    return real(texts, **kwargs)

d.encoder.encode_documents = encode
d.index(ds.corpus)
np.save(out, d.embeddings)
print(json.dumps({"encode_seconds": d.timings["encode"], "documents_encoded": sum(encoded)}))
"""


def child(args, cache: Path, kill_at: int, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    command = [sys.executable, "-c", CHILD, args.dataset, args.model, str(cache)]
    command += [str(args.checkpoint_every), str(kill_at), str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True)


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cranfield")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--kill-at", type=int, default=5, help="chunk (1-based) that is killed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        whole = child(args, tmp / "a", 0, tmp / "whole.npy")
        if whole.returncode != 0:
            sys.exit(f"reference run failed:\n{whole.stderr[-3000:]}")
        killed = child(args, tmp / "b", args.kill_at, tmp / "never.npy")
        if killed.returncode != -9:
            sys.exit(f"the run was not killed ({killed.returncode}):\n{killed.stderr[-3000:]}")
        chunks = len(list((tmp / "b" / "dense-chunks").iterdir()))
        resumed = child(args, tmp / "b", 0, tmp / "resumed.npy")
        if resumed.returncode != 0:
            sys.exit(f"resumed run failed:\n{resumed.stderr[-3000:]}")
        a, r = json.loads(whole.stdout), json.loads(resumed.stdout)
        result = {
            "dataset": args.dataset,
            "checkpoint_every": args.checkpoint_every,
            "checkpoints_left_by_the_kill": chunks,
            "whole_encode_seconds": round(a["encode_seconds"], 2),
            "whole_documents_encoded": a["documents_encoded"],
            "resumed_encode_seconds": round(r["encode_seconds"], 2),
            "resumed_documents_encoded": r["documents_encoded"],
            "identical": bool(
                np.array_equal(np.load(tmp / "whole.npy"), np.load(tmp / "resumed.npy"))
            ),
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<30} {value}")


if __name__ == "__main__":
    main()
