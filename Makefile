# streamscore — `make demo` runs the pipeline once, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration lint format kafka kafka-down up down status bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install streamscore with its dev tools
	$(BIN)/streamscore kafka install

demo: install  ## run the whole pipeline once, print a summary, stop everything
	$(BIN)/streamscore demo

test: install lint  ## lint, type-check, then every test against a real Kafka broker
	$(BIN)/pytest -q

unit: $(STAMP)  ## the tests that need no broker
	$(BIN)/pytest -q tests/unit

integration: install  ## the tests that talk to a real broker
	$(BIN)/pytest -q tests/integration

lint: $(STAMP)  ## ruff (check + format) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

kafka: install  ## start the local broker (a no-op when it is up)
	$(BIN)/streamscore kafka up

kafka-down: $(STAMP)
	$(BIN)/streamscore kafka down

up: install  ## broker and services in the background; logs in .streamscore/logs
	$(BIN)/streamscore up

down: $(STAMP)  ## stop everything `make up` started
	$(BIN)/streamscore down

status: $(STAMP)
	$(BIN)/streamscore status

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: install $(VENV)/.bench  ## benchmarks beside their peers; figures printed and written to bench/results
	$(BIN)/python -m bench

chaos: install  ## faults on a live stream (broker restarts, kills, poison records); docs/reliability.md
	$(BIN)/python -m chaos

clean:
	rm -rf $(VENV) .streamscore .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results
