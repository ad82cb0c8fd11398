# Herald: `make run` serves the embedded default; `make test` runs the whole suite.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint system-deps clients migrate clean bench-retention

# --- Python environment --------------------------------------------------------

$(VENV)/.installed: pyproject.toml
	@$(PY) -c "import ensurepip, venv" 2>/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# --- System services the tests start (Redis, PostgreSQL) -------------------------

system-deps:
	@bash .ci/system-deps

# --- The official Supabase clients the tests drive (Node and a venv of their own) ---
# The PyPI client is imported as `realtime`, like Herald's app: it gets its own venv.

CLIENTS := tests/clients

$(CLIENTS)/.venv/.installed: $(CLIENTS)/package-lock.json $(CLIENTS)/requirements.txt | $(VENV)/.installed system-deps
	cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	$(PY) -m venv $(CLIENTS)/.venv
	$(CLIENTS)/.venv/bin/pip install -q -r $(CLIENTS)/requirements.txt
	@touch $@

clients: $(CLIENTS)/.venv/.installed

# --- The two commands ---------------------------------------------------------------

run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py demo_tenant --url http://$(HOST):$(PORT)
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed system-deps clients
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput

clean:
	rm -rf $(VENV) var db.sqlite3 $(CLIENTS)/.venv $(CLIENTS)/node_modules

# --- Retention on a million rows, with a publisher writing all along ------------

bench-retention: $(VENV)/.installed system-deps
	$(BIN)/python -m benchmarks.retention $(BENCH_ARGS)

# --- Broadcast replay: storing private broadcasts, replaying joins, a feed's backlog --

.PHONY: bench-replay
bench-replay: $(VENV)/.installed system-deps
	$(BIN)/python -m benchmarks.replay $(BENCH_ARGS)

# --- Benchmark: Herald's fan-out, best case against the naive Channels design, a ----
# --- realistic workload (own tokens, row policy, filters) and REST (benchmarks/) ----
# BENCH_ARGS picks workloads, e.g. BENCH_ARGS="--workloads realistic --subscribers 300"

.PHONY: bench

benchmarks/node_modules/.installed: benchmarks/package-lock.json
	cd benchmarks && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

bench: $(VENV)/.installed system-deps benchmarks/node_modules/.installed
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# --- Against its peers: a Python websockets ceiling, Socket.IO on Node, naive ------
# --- Soak: 10,000 connections for 10 minutes, memory per process (not in `make test`)

.PHONY: bench-peers soak bench-joins

bench-peers: $(VENV)/.installed system-deps benchmarks/node_modules/.installed
	$(BIN)/python -m benchmarks.peers $(BENCH_ARGS)

soak: $(VENV)/.installed system-deps benchmarks/node_modules/.installed
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# --- Joins: per second on one process (round trips counted), then 10,000 clients ---
# --- reconnecting at once to two processes; BENCH_ARGS="--phases rate --profile DIR" ---

bench-joins: $(VENV)/.installed system-deps
	$(BIN)/python -m benchmarks.joins $(BENCH_ARGS)

# --- What capture costs a writer: each write shape with and without the triggers ---
# --- (PostgreSQL durable and fsync off, then SQLite); BENCH_ARGS="--repeat 5" -------

.PHONY: bench-capture-cost

bench-capture-cost: $(VENV)/.installed system-deps
	$(BIN)/python -m benchmarks.capture_cost $(BENCH_ARGS)

# --- One change among 10,000 distinct filters vs among 100, in-process (seconds) ---

.PHONY: bench-filters

bench-filters: $(VENV)/.installed
	$(BIN)/python -m benchmarks.filters $(BENCH_ARGS)

# --- The relay: committed-and-delivered changes/s with 1, 8, 32 writers (one tenant, --
# --- 32 tenants), commit->socket latency, with and without the ordering lock ---------

.PHONY: bench-relay

bench-relay: $(VENV)/.installed system-deps
	$(BIN)/python -m benchmarks.relay $(BENCH_ARGS)

# --- Identity: RS256/ES256 issuer tokens against HS256 per join; membership
# --- against equality row policies per delivery (issue 15), in one run ---------

.PHONY: bench-identity

bench-identity: $(VENV)/.installed system-deps
	$(BIN)/python -m benchmarks.identity $(BENCH_ARGS)
