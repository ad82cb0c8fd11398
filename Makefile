# Herald: `make run` serves the embedded default; `make test` runs the whole suite.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint system-deps migrate clean

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

# --- The two commands ---------------------------------------------------------------

run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py demo_tenant --url http://$(HOST):$(PORT)
	$(BIN)/daphne -b $(HOST) -p $(PORT) config.asgi:application

test: $(VENV)/.installed system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput

clean:
	rm -rf $(VENV) var db.sqlite3
