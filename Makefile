# The common loops. Every target bootstraps .venv from nothing when it is missing or stale
# (setup.cfg or pyproject.toml newer than the last install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := catalog proxy indexer devstack hos_search benchmarks loadtest relevance

.PHONY: dev test test-soak lint format bench bench-seed bench-cache bench-ratelimit bench-fallback relevance clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/hos-search dev $(if $(PRODUCTS),--products $(PRODUCTS)) $(if $(ENV_FILE),--env-file $(ENV_FILE))

# The whole test set-up, then the tests: scripts/install-test-tools installs what is missing where it
# can (JDK + Maven, promtool, Chromium, Node.js, hadolint, kubeconform, kustomize, k6) and names the
# command where it cannot; the run's summary names the engine used and every skip with its reason.
# CI runs exactly this (.ci/run).
test: $(STAMP)
	@scripts/install-test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Long fault and soak runs, off by default.
test-soak: $(STAMP)
	@scripts/install-test-tools
	HOS_SOAK=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(PACKAGES) tests

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Search quality on the judged query set (relevance/, docs/relevance.md): nDCG@10, MRR, zero-result
# rate and per-query changes against the committed baseline. RELEVANCE_ARGS=--write-baseline records a new one.
relevance: $(STAMP)
	$(BIN)/python -m relevance $(RELEVANCE_ARGS)

# Load test (loadtest/, docs/load-testing.md): PROFILE=smoke|average|stress|spike|soak|breakpoint|ratelimit
# or a JSON path, against PROXY_URL when set, else a dev stack it starts and stops. Exits 99 when a
# threshold fails. K6=1 runs it with the real k6 instead of Locust (go install go.k6.io/k6@v1.8.1).
.PHONY: load
load: $(STAMP)
	$(BIN)/python -m loadtest --profile $(or $(PROFILE),smoke) $(if $(filter 1 yes true,$(K6)),--k6) $(LOAD_ARGS)

# Seeding speed at 150,000 products against a plain COPY (benchmarks/seed.py, docs/benchmarks.md).
bench-seed: $(STAMP)
	$(BIN)/python -m benchmarks.seed --products 150000

# Every benchmark in one run on this machine (about 16 min; needs wrk: apt-get install -y wrk), written
# up as benchmarks/results/<date>.md and .json with PNG plots in benchmarks/results/<date>/
# (benchmarks/report.py). QUICK=1: small catalogs and short phases (4-6 min; <date>-quick.md).
# BENCH_ARGS=--only=cache,proxy runs some (<date>-cache-proxy.md).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.report $(if $(filter 1 yes true,$(QUICK)),--quick) $(BENCH_ARGS)

# The rate limiter's cost on cache hits, one hot client and 10,000 clients (about 2 min; wrk).
# BENCH_RATELIMIT_ARGS passes flags on, e.g. BENCH_RATELIMIT_ARGS="--rounds 1 --seconds 4".
bench-ratelimit: $(STAMP)
	$(BIN)/python -m benchmarks.ratelimit $(BENCH_RATELIMIT_ARGS)

# The response cache alone: cache-hit req/s against bare aiohttp servers (wrk), hit ratio and
# commit -> visible latency under a Zipf mix with 20 price changes/s, stampede control (about 4 min).
# BENCH_CACHE_ARGS passes flags on, e.g. BENCH_CACHE_ARGS="--only zipf --duration 120".
bench-cache: $(STAMP)
	$(BIN)/python -m benchmarks.cache --products 20000 $(BENCH_CACHE_ARGS)

# The Postgres fallback at 150,000 products: its latency against the engine's on one mix, engine
# cut/hang -> fallback -> engine switch-over times, goodput at 2x engine capacity with and without
# shedding, and whether its plans avoid Seq Scans (about 3-5 min; wrk). BENCH_FALLBACK_ARGS=--quick
# for about 1.5 min on 10,000 products.
bench-fallback: $(STAMP)
	$(BIN)/python -m benchmarks.fallback $(BENCH_FALLBACK_ARGS)

clean:
	rm -rf $(VENV) .devstack build *.egg-info
