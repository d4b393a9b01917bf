# The two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What each target installs: the demo needs the `demo` extra (CLI and web endpoint);
# lint, typecheck, pytest and bench install `test`, which includes `all` (every extra).
STAMP      := $(VENV)/.installed-test
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint typecheck pytest system-deps bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Phoenix needs Python 3.11+ (found: $$($(PYTHON) --version))"; exit 1; }
	@if command -v uv >/dev/null 2>&1; then uv venv --python $(PYTHON) $(VENV); \
	else $(PYTHON) -m venv $(VENV); fi

# Reinstall whenever pyproject.toml changes. $(1): the extras to install.
define install
	@if command -v uv >/dev/null 2>&1; then \
		VIRTUAL_ENV=$(VENV) uv pip install --python $(BIN)/python -e '.[$(1)]'; \
	else $(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e '.[$(1)]'; fi
endef

$(STAMP): $(BIN)/python pyproject.toml
	$(call install,test)
	@touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(call install,demo)
	@touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/phx demo

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks

# src, tests, benchmarks and examples: [tool.mypy] files in pyproject.toml.
typecheck: $(STAMP)
	$(BIN)/mypy --strict

system-deps:
	@bash scripts/ensure-system-deps.sh

# CI=1 makes the suite fail, not skip, when a system dependency or privilege is missing
# (tests/testing/ci_gate.py); system-deps already stops here when it cannot install one.
# Two pytest workers (pytest-xdist), each taking the next test when it is free: most of
# the suite's time is cluster tests waiting on failure detectors and split-brain timers,
# not using the CPU, so two at once halve the run on 2 cores. PYTEST_WORKERS=0 runs
# everything in one process.
PYTEST_WORKERS ?= 2
pytest: $(STAMP) system-deps
	CI="$${CI:-1}" $(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/phx bench local --json benchmarks/results/local.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
