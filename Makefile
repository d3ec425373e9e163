# evorec: `make run` sets everything up and runs the main job; `make test` sets up and runs the checks.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.evorec-setup

.PHONY: setup run test lint test-fast lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt requirements/lock-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock-nodeps.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	$(BIN)/evorec run

CODE := evorec recsys pipelines offline_agent online_agent ab_testing reward_lib serving benchmarks tests

lint: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/lint-imports
	$(BIN)/mypy evorec recsys pipelines offline_agent serving ab_testing online_agent reward_lib benchmarks

test: lint
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

# Re-resolve the pin set after a change of pyproject.toml's dependencies.
lock: setup
	$(BIN)/python -m pip freeze --all --exclude-editable | grep -v -i -E '^(torchrec|fbgemm|pip)==' > requirements/lock.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
