# The two commands of the README: `make run` and `make test`. Each does the whole set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install migrate lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/creator-activity migrate

run: migrate
	$(BIN)/creator-activity serve

test: install
	$(BIN)/ruff check shared services migrations tests scripts
	$(BIN)/pytest -q

bench: install
	$(BIN)/python scripts/benchmark.py

clean:
	rm -rf $(VENV) .data
