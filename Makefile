# The two commands: `make run` and `make test`. Everything they need is installed on first use.
SHELL := /bin/bash
PY := .venv/bin/python
PORT ?= 8000

.PHONY: run test setup migrate lint bench profile

setup:
	@scripts/bootstrap.sh python node

migrate: export DEBUG ?= true
migrate: setup
	@$(PY) manage.py migrate --noinput -v 0

# make run is development: DEBUG=true turns it on explicitly (production is the default).
run: export DEBUG ?= true
run: migrate
	@$(PY) manage.py seed_demo
	@echo "Serving on http://127.0.0.1:$(PORT)  (Ctrl-C stops)"
	@exec .venv/bin/uvicorn archon_site.asgi:application --host 127.0.0.1 --port $(PORT) --ws-per-message-deflate false --ws-max-size 65536

test: setup
	@scripts/bootstrap.sh redis nginx chromium
	@.venv/bin/lint-imports --no-cache  # the import contract (pyproject's [tool.importlinter]) before any test
	@PYTHONPATH=examples/noteboard .venv/bin/lint-imports --no-cache --config examples/noteboard/.importlinter
	@$(PY) -m pytest

bench: setup
	@scripts/bootstrap.sh redis
	@$(PY) -m bench.run $(BENCH_ARGS)

profile: setup
	@$(PY) -m bench.profile $(BENCH_ARGS)

lint: setup
	@.venv/bin/ruff check .
