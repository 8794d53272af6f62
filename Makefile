# Two entry points (see README): `make demo` runs the main job (recipes/demo.yaml) on the built-in default,
# `make test` runs the test suite. Both create .venv on first use, from requirements.lock.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned here, installed first and kept out of the lock: 2.13.0 resolves to the CPU build on
# the project's machines; a GPU machine installs its CUDA build of the same version instead (docs/install.md).
TORCH ?= torch==2.13.0
# Where `make lock` finds the torch wheel it resolves against (torch's own dependencies are locked).
TORCH_FIND_LINKS ?= /opt/wheels
UV_VERSION := 0.13.9
PYTEST_ARGS ?= -q -p no:cacheprovider --durations=15 tests

.PHONY: demo test test-latest lint setup lock doctor clean

$(BIN)/chatforge: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	# every other package at the locked version, hash-checked; --no-deps because the lock is complete
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $(BIN)/chatforge

setup: $(BIN)/chatforge

demo: setup
	$(BIN)/chatforge run recipes/demo.yaml

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -x $(PYTEST_ARGS)

# The newest releases the version ranges in pyproject.toml allow (torch stays pinned), in a venv of
# their own: tells early whether the next releases break us. CI runs `make test` (the lock).
test-latest:
	rm -rf .venv-latest
	$(PY) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet $(TORCH)
	# torch held at the pin by a constraint: an eager upgrade would otherwise swap in a newer CUDA build
	echo "$(TORCH)" > .venv-latest/torch-pin.txt
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -c .venv-latest/torch-pin.txt -e ".[dev]"
	.venv-latest/bin/chatforge doctor || true
	.venv-latest/bin/python -m pytest $(PYTEST_ARGS)

# Regenerate requirements.lock from pyproject.toml after changing a dependency (uv, in a venv of its own).
lock:
	test -x .venv-tools/bin/uv || ($(PY) -m venv .venv-tools && .venv-tools/bin/pip install --quiet uv==$(UV_VERSION))
	echo "$(TORCH)+cpu" > .venv-tools/torch-override.txt
	.venv-tools/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --quiet \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --find-links $(TORCH_FIND_LINKS) --override .venv-tools/torch-override.txt --no-emit-package torch \
	  --custom-compile-command "make lock" -o requirements.lock

doctor: setup
	$(BIN)/chatforge doctor

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .venv-latest runs .pytest_cache
