# sbi-ops: the two commands a newcomer needs are `make demo` and `make test`.
# Everything installs into ./.venv from the exact pins in requirements.lock.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# uv lives in its own small venv: `uv pip sync` would otherwise uninstall itself from .venv.
TOOLS := .tools
UV := $(TOOLS)/bin/uv
STAMP := $(VENV)/.installed-stamp

# Offline, quiet defaults: nothing reaches for the network at run time.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export JAX_PLATFORMS := cpu
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: install demo test test-fast bench lock clean

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (sbi-ops needs Python 3.11)"; exit 2; }
	test -x $(UV) || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9; }
	test -x $(BIN)/python || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sbi_ops.demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# Regenerate the exact pins after changing pyproject.toml dependencies.
lock:
	$(UV) pip compile pyproject.toml --all-extras --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) $(TOOLS) demo-output .pytest_cache
