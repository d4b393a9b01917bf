# The two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest system-deps bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Phoenix needs Python 3.11+ (found: $$($(PYTHON) --version))"; exit 1; }
	@if command -v uv >/dev/null 2>&1; then uv venv --python $(PYTHON) $(VENV); \
	else $(PYTHON) -m venv $(VENV); fi

# Reinstall whenever pyproject.toml changes.
$(STAMP): $(BIN)/python pyproject.toml
	@if command -v uv >/dev/null 2>&1; then \
		VIRTUAL_ENV=$(VENV) uv pip install --python $(BIN)/python -e '.[test]'; \
	else $(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e '.[test]'; fi
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/phx demo

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict

system-deps:
	@bash scripts/ensure-system-deps.sh

# CI=1 makes the suite fail, not skip, when a system dependency or privilege is missing
# (tests/testing/ci_gate.py); system-deps already stops here when it cannot install one.
pytest: $(STAMP) system-deps
	CI="$${CI:-1}" $(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/phx bench local --json benchmarks/results/local.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
