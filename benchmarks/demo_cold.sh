#!/usr/bin/env bash
# `make demo`'s command, cold: the Makefile's demo target runs
#   HF_HUB_OFFLINE=1 $(BIN)/winnow eval --dataset cranfield --output runs/cranfield
# with the default winnow cache (~/.cache/winnow). Here it runs with an empty --cache-dir and an
# empty --output folder (both fresh temporary folders, removed afterwards), so nothing a previous
# run left behind is reused, and with --no-progress so the log is readable. The same command,
# run on the code before and after a change, gives the before / after figure.
#
#   PYTHONPATH=$PWD/src WINNOW_DATA=/work/shared/datasets benchmarks/demo_cold.sh [extra eval args]
#
# Prints the eval's own table, then one line: wall seconds, peak RSS (GNU time's maximum resident
# set size of the whole command) and the exit status. PYTHON picks the interpreter (default
# .venv/bin/python); the model is read from the local copy (HF_HUB_OFFLINE=1, as the Makefile sets).
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
: "${WINNOW_DATA:?set WINNOW_DATA to the folder holding cranfield/}"
export WINNOW_DATA HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
work=$(mktemp -d "${TMPDIR:-/tmp}/winnow-demo-cold.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/cache"
timing="$work/time.txt"
load_start=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s.%N)
status=0
/usr/bin/time -f '%e %M' -o "$timing" \
    "$PYTHON" -m winnow.cli eval --dataset cranfield --output "$work/out" \
    --cache-dir "$work/cache" --no-progress "$@" || status=$?
end=$(date +%s.%N)
read -r _elapsed max_kb < "$timing" || max_kb=0
wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
peak=$(awk -v k="$max_kb" 'BEGIN { printf "%.0f", k / 1024 }')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
load_end=$(cut -d' ' -f1 /proc/loadavg)
echo "demo cold: ${wall} s wall, peak RSS ${peak} MiB, exit ${status}" \
    "(commit ${commit}, 1-minute load average ${load_start} at start, ${load_end} at end)"
exit "$status"
