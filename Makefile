# The project's entry points. `make install` builds .venv; every other target uses it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lint test bench crash clean

$(BIN)/durablectl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/durablectl

lint: install
	$(BIN)/ruff check durablectl tests bench
	$(BIN)/mypy durablectl

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
