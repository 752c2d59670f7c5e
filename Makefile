# The two commands a newcomer needs:  `make run`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

.PHONY: run test token migrate bench bench-eddsa bench-memory bench-scale profile clean

## run: install, write .env with a random dev secret if there is none, migrate, serve on SQLite
run: $(BIN)/.installed .env
	$(BIN)/alembic upgrade head
	@echo
	@echo "  Task API on http://$(HOST):$(PORT)   docs: http://$(HOST):$(PORT)/docs"
	@echo "  Get a token:  make token user=alice    (or: $(BIN)/python devtoken.py alice)"
	@echo "  Then:         curl -H \"Authorization: Bearer \$$TOKEN\" http://$(HOST):$(PORT)/api/tasks"
	@echo
	$(BIN)/uvicorn main:app --host $(HOST) --port $(PORT) --no-access-log

## test: the whole suite, on SQLite and on PostgreSQL (TEST_DATABASE_URL)
test: $(BIN)/.dev-installed
	$(BIN)/pytest

## token: print a dev token for a user:  make token user=alice
token: $(BIN)/.installed .env
	@$(BIN)/python devtoken.py $(or $(user),dev-user)

migrate: $(BIN)/.installed
	$(BIN)/alembic upgrade head

## bench: ours vs the floor on local PostgreSQL with wrk (~5 min); prints a table, writes bench/results/latest.json
bench: $(BIN)/.dev-installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## bench-eddsa: the same, ours verifying EdDSA tokens from a local JWKS
bench-eddsa: $(BIN)/.dev-installed
	$(BIN)/python bench/run.py --auth eddsa $(BENCH_ARGS)

## bench-memory: resident memory per worker after 1,000 and after 100,000 requests
bench-memory: $(BIN)/.dev-installed
	$(BIN)/python bench/run.py --memory-only --budget 600

## bench-scale: one user with 100,000 tasks of their own and one with 100,000 in 5 lists shared with
## them (400,000 in all) on local PostgreSQL (~3-6 min): p50/p95 and indexes of every list sort and
## filter, stats and tags; writes bench/results/scale.json
bench-scale: $(BIN)/.dev-installed
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

## profile: py-spy profile of a worker under list + get-one load
profile: $(BIN)/.dev-installed
	bench/profile.sh

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(BIN)/.dev-installed: requirements-dev.txt $(BIN)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

# A random secret for local development, generated once. Never commit .env.
.env:
	@$(PYTHON) -c "import secrets; print('BETTER_AUTH_SECRET=' + secrets.token_urlsafe(48))" > .env
	@echo "Wrote .env with a random BETTER_AUTH_SECRET (use your Better Auth server's secret to accept its tokens)."

clean:
	rm -rf $(VENV) .pytest_cache tasks.db tasks.db-wal tasks.db-shm
