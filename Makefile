# The two commands of the README: `make demo` (the main job, from the prebuilt models) and `make test` (the
# whole suite); `make zoo` trains the prebuilt models shipped in brickzoo/zoo/pretrained/ again from scratch.
# Each creates .venv and installs the project with its dev, lightning and bench extras into it (the
# suite smoke-tests benchmarks/, peers included) when it is missing or older than pyproject.toml
# or setup.py (the editable install maps the package brickzoo.zoo_configs onto zoo_configs/).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.brickzoo-installed

.PHONY: demo zoo test lint bench clean

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,lightning,bench]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m brickzoo.demo

zoo: $(STAMP)
	$(BIN)/python -m brickzoo.zoo.build

lint: $(STAMP)
	$(BIN)/ruff check brickzoo tests benchmarks setup.py
	$(BIN)/ruff format --check brickzoo tests benchmarks setup.py
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15

bench: $(STAMP)
	@for script in benchmarks/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf build dist runs .pytest_cache .mypy_cache .ruff_cache
