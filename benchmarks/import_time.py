"""What ``import winnow`` costs: fresh interpreters, ``python -X importtime -c "import winnow"``.

Each run starts a new Python process (so nothing is cached in ``sys.modules``) and reads the
cumulative microseconds Python itself reports for the ``winnow`` package (``-X importtime``), and
checks that torch, numpy and the integration packages stayed out of ``sys.modules``. Runs
alternate with a bare ``python -c pass`` start, so a shared machine's load hits both; it prints the
median import time of winnow and the median start-up of a bare interpreter for scale.

    python benchmarks/import_time.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ["torch", "numpy", "transformers", "langchain_core", "llama_index", "mcp", "ranx"]


def winnow_import_us() -> tuple[int, list[str]]:
    code = f"import sys, winnow; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    cumulative = None
    for line in out.stderr.splitlines():  # "import time: self [us] | cumulative | imported package"
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "winnow":
            cumulative = int(parts[1])
    if cumulative is None:
        raise RuntimeError("no import time line for winnow")
    return cumulative, json.loads(out.stdout.strip().replace("'", '"'))


def bare_start_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    imports, bare, heavy = [], [], set()
    for _ in range(args.runs):
        us, loaded = winnow_import_us()
        imports.append(us / 1000)
        heavy.update(loaded)
        bare.append(bare_start_s() * 1000)
    result = {
        "runs": args.runs,
        "import_winnow_ms_median": round(statistics.median(imports), 2),
        "import_winnow_ms_max": round(max(imports), 2),
        "bare_interpreter_start_ms_median": round(statistics.median(bare), 1),
        "heavy_modules_imported": sorted(heavy),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
