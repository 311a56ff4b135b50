# The two commands a newcomer needs are `make demo` and `make test`; everything else is for contributors.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench docs clean

# Create the virtual environment once, and reinstall only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Gossamer needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gossamer validate -f examples/assets --list

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	@echo "No benchmark yet: bench/ gains its scripts with the proxy, control plane and event backbone."

docs: $(STAMP)
	$(BIN)/python -m gossamer.resources.reference docs/resources.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
