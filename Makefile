# winnow developer commands. `make demo` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data directory that holds BEIR-format collections by name (cranfield, cisi, adi, ...).
WINNOW_DATA ?= $(abspath ../shared/datasets)
export WINNOW_DATA
# torch is pinned so that pip takes this machine's local CPU build instead of the CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Known-good versions of every dependency, so a fresh clone installs what CI tested.
CONSTRAINTS ?= requirements/constraints.txt

.PHONY: venv test test-fast demo lint format bench clean constraints

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[server,report,faiss,onnx,openvino,training,distributed,ray,langchain,llama-index,mcp,ranx,pyterrier,ir-datasets,dev]" "$(TORCH_SPEC)"
	touch $(STAMP)

# Re-pin requirements/constraints.txt to what .venv has now (run `make test` first).
constraints: venv
	{ sed -n '1,2p' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(torch|winnow)=='; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/winnow eval --dataset cranfield --output runs/cranfield

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: venv
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
