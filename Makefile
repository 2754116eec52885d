# The project's entry points. `make install` builds .venv; every other target uses it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lint test test-normal bench torture clean man demo

$(BIN)/durablectl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/durablectl

lint: install
	$(BIN)/ruff check durablectl tests bench workflows_example
	$(BIN)/mypy durablectl

test: lint
	$(BIN)/pytest

# the whole suite with every store at synchronous NORMAL (commits on the event loop); ~3 min.
# `python -m` puts the project on the path for the plugin
test-normal: install
	$(BIN)/python -m pytest -p tests.normal_level

# a daemon on a throwaway database serving workflows_example/, one workflow run end to end;
# leaves the daemon running and prints the commands to try next (daemon stop among them)
demo: install
	@sh scripts/demo.sh

bench: install
	$(BIN)/python -m bench.run

# crash torture: SIGKILL the daemon 200 times at random moments under load, then check SPEC §8's
# guarantees (tests/test_torture.py runs 20 kills at each level); KILLS=, SEED=, SYNCHRONOUS=
# (FULL or NORMAL) override
KILLS ?= 200
SEED ?= 1
SYNCHRONOUS ?= FULL
torture: install
	$(BIN)/python -m bench.torture --kills $(KILLS) --seed $(SEED) --synchronous $(SYNCHRONOUS)

# man/durablectl.1 and man/durablectl-<group>.1 from the typer app (tests/test_man_pages.py
# fails when they are stale)
man: install
	$(BIN)/python -m durablectl.cli.manpages man/

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
