# The two commands: `make run` and `make test`. Everything they need is installed on first use.
SHELL := /bin/bash
PY := .venv/bin/python
PORT ?= 8000

.PHONY: run test setup migrate lint bench profile chaos storm soak

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
	@exec .venv/bin/uvicorn archon_site.asgi:application --host 127.0.0.1 --port $(PORT) --ws-per-message-deflate false --ws-max-size 65536 --ws-ping-interval 0

# DB=postgres: the whole suite on a throwaway PostgreSQL server that the run starts and removes (tests/settings.py).
# DATABASE_URL=postgres://... make test: on a server you run (Django makes and drops test_<name> there).
DB ?= sqlite
test: setup
	@case "$(DB)" in sqlite|postgres) ;; *) echo "DB=$(DB): sqlite or postgres" >&2; exit 2 ;; esac
	@scripts/bootstrap.sh redis nginx chromium $(filter postgres,$(DB))
	@.venv/bin/lint-imports --no-cache  # the import contract (pyproject's [tool.importlinter]) before any test
	@PYTHONPATH=examples/noteboard .venv/bin/lint-imports --no-cache --config examples/noteboard/.importlinter
	@TEST_DATABASE=$(DB) $(PY) -m pytest

# The chaos test's long variant (issue 13; make test runs it with 200 rounds). CHAOS_SEED=<printed seed> replays a run.
CHAOS_ROUNDS ?= 1000
chaos: setup
	@scripts/bootstrap.sh redis
	@CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(PY) -m pytest tests/realtime/test_chaos.py -q -s

# Issue 14: the django-uvicorn/reference comparisons and the second harness (bench/screen.mjs) run 3 times in a row; the
# several-workers scenario (bench/workers.py) starts its own Redis and PostgreSQL. BENCH_ARGS=--quick: small sizes;
# BENCH_ARGS="--only workers,screen": some sections only.
bench: setup
	@scripts/bootstrap.sh redis postgres
	@$(PY) -m bench.run $(BENCH_ARGS)

# Issue 13: STORM_CLIENTS watchers reconnecting at once after a node restart, with recovery and with full snapshots.
STORM_CLIENTS ?= 5000
storm: setup
	@scripts/bootstrap.sh redis
	@$(PY) -m bench.storm --clients $(STORM_CLIENTS) $(STORM_ARGS)

# Issue 13: 1,000 watchers for SOAK_SECONDS under steady writes: RSS growth and nothing lost.
SOAK_SECONDS ?= 600
soak: setup
	@scripts/bootstrap.sh redis
	@$(PY) -m bench.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

profile: setup
	@$(PY) -m bench.profile $(BENCH_ARGS)

lint: setup
	@.venv/bin/ruff check .
