# The two commands of the README: `make run` and `make test`. Each does the whole set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers; each starts its own embedded PostgreSQL and broker
TEST_WORKERS ?= 2

.PHONY: run test install migrate lint bench clean browser-deps

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

test: install browser-deps
	$(BIN)/ruff check shared services migrations tests scripts
	$(BIN)/pytest -q -n $(TEST_WORKERS)

# tests/browser drive Debian's Chromium (never a downloaded browser) and need the CJK fonts
# for Chinese names. Installed here when missing and possible (root with apt-get); otherwise
# the browser tests are skipped with the reason (in CI, where CI=true, they fail instead).
browser-deps:
	@if dpkg -s chromium fonts-noto-cjk >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and fonts-noto-cjk for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium fonts-noto-cjk >/dev/null) || echo "could not install chromium"; \
	else echo "chromium or fonts-noto-cjk missing (needs root and apt-get to install)"; fi

# The full run (< 15 min on a quiet 2-core machine); sizes: make bench BENCH="--quick" or
# BENCH="--events 200000 --bus kafka" (scripts/benchmark.py --help). The table: .data/benchmark.md
BENCH ?=
bench: install
	$(BIN)/python scripts/benchmark.py --out .data/benchmark.md $(BENCH)

clean:
	rm -rf $(VENV) .data
