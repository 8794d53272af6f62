# Two entry points (see README): `make demo` runs the main job on the built-in default,
# `make test` runs the test suite. Both create .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup clean

$(BIN)/chatforge: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: this version resolves to the CPU build (DEVELOPERS.md)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/chatforge

setup: $(BIN)/chatforge

demo: setup
	$(BIN)/chatforge demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -x -q -p no:cacheprovider tests

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
