# The common loops. Every target bootstraps .venv from nothing when it is missing or stale
# (setup.cfg or pyproject.toml newer than the last install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRODUCTS ?= 20000
PACKAGES := catalog proxy indexer devstack hos_search

.PHONY: dev test test-soak lint format bench bench-seed relevance clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/hos-search dev --products $(PRODUCTS) $(if $(ENV_FILE),--env-file $(ENV_FILE))

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Long fault and soak runs, off by default.
test-soak: $(STAMP)
	HOS_SOAK=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(PACKAGES)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Search quality on the judged query set (load/relevance): nDCG@10, MRR, zero-result rate and
# per-query changes against the committed baseline. RELEVANCE_ARGS=--write-baseline records a new one.
relevance: $(STAMP)
	$(BIN)/python -m load.relevance $(RELEVANCE_ARGS)

bench-seed: $(STAMP)
	$(BIN)/python load/bench_seed.py --products 150000

# The measured table in the README: 150,000 products on the dev stack's engine (about 6 min).
bench: $(STAMP)
	$(BIN)/python load/bench_seed.py --products 150000 --no-breakdown
	$(BIN)/python load/bench_proxy.py --products 150000 --rounds 40
	$(BIN)/python load/bench_indexer.py --products 150000 --seconds 30 --refresh 1s,500ms

clean:
	rm -rf $(VENV) .devstack build *.egg-info
