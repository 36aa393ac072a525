# Jeffrey OS dream infrastructure. `make run` starts everything; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lock run dev test test-chaos dashboards promtool alertmanager train-emotion eval-emotion eval-dreams bench bench-scale bench-quality bench-profile bench-dream test-unit test-integration test-e2e lint format token migrate compose-config clean

help: ## Show the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/bootstrap.sh
	@touch $(STAMP)

venv: $(STAMP) ## Create/update .venv

lock: $(STAMP) ## Regenerate constraints.txt (pinned Python packages; LOCK_UPGRADE=1 resolves afresh)
	VENV=$(VENV) scripts/lock.sh

run: $(STAMP) ## Start the embedded stack: Redis, SQLite, api, worker, beat, flower (Ctrl-C stops)
	$(BIN)/jeffrey stack up

dev: $(STAMP) ## Same as run, with API and workers reloading on code changes
	$(BIN)/jeffrey stack up --reload

test: $(STAMP) lint ## Lint, then the whole suite: unit (incl. promtool, amtool), integration, e2e, chaos
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## Only the unit tests
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: $(STAMP) ## Only the integration tests (real Redis, database, workers)
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-e2e: $(STAMP) ## Only the end-to-end tests (the embedded stack over HTTP)
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

test-chaos: $(STAMP) ## Only the chaos suite (failure injection; about 5 minutes)
	$(BIN)/pytest -m chaos $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

token: $(STAMP) ## Mint an admin token for USER_ID (default admin) with the secret in .env or var/
	@$(BIN)/jeffrey token create --user $${USER_ID:-admin} --scope admin --scope memories

migrate: $(STAMP) ## Apply database migrations to DATABASE_URL
	$(BIN)/jeffrey migrate

train-emotion: $(STAMP) ## Retrain the emotion model on GoEmotions (DATA=path) and rewrite the artefact
	$(BIN)/pip install --quiet -e ".[dev,train]"
	$(BIN)/python scripts/train_emotion.py --data $${DATA:-../shared/datasets/goemotions}

eval-emotion: $(STAMP) ## Evaluate the committed emotion model (GoEmotions test, French set, speed, RSS)
	$(BIN)/python scripts/eval_emotion.py --data $${DATA:-../shared/datasets/goemotions}

bench-dream: $(STAMP) ## Dream consolidation benchmark (N = 1,000 and 10,000): memories/s, ARI, quality, B
	$(BIN)/python scripts/bench_dream.py

eval-dreams: $(STAMP) ## Dream grouping on real text (Banking77 test, diaries, frames, random): docs/dream-eval.json
	$(BIN)/python scripts/eval_dreams.py

bench: $(STAMP) ## Gateway, queue, annotation, consolidation vs same-run baselines (needs wrk; < 15 min): bench/results, docs/performance.md
	$(BIN)/python -m bench.gateway $(if $(BENCH_BEFORE),--before $(BENCH_BEFORE))
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.report

bench-scale: $(STAMP) ## Worker processes 1/2/4, consolidation 1k/10k/100k (10 users), Redis ops/s + PG connections at peak, RSS of api/worker/beat/flower (PostgreSQL; ~10 min): bench/results/scale.json, docs/performance.md
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.report

bench-quality: bench-dream eval-emotion eval-dreams ## The dream and emotion quality benchmarks

bench-profile: $(STAMP) ## Flame graph of the memory POST under load (py-spy): docs/performance/memory-post-sqlite.svg
	$(BIN)/pip install --quiet py-spy
	$(BIN)/python -m bench.profile_post

compose-config: $(STAMP) ## Validate compose.yaml with a real Compose v2 implementation
	$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")') -f compose.yaml --env-file .env.example config --quiet && echo compose.yaml is valid

clean: ## Remove the venv and caches (keeps var/, your data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

dashboards: $(STAMP) ## Regenerate the Grafana dashboards from monitoring/grafana/build_dashboards.py
	$(BIN)/python monitoring/grafana/build_dashboards.py

promtool: ## Check the Prometheus config and alert rules, and run the alert unit tests (needs promtool)
	cd monitoring/prometheus && promtool check config prometheus.yml && promtool check rules rules/*.yml && promtool test rules tests/*.test.yml

alertmanager: $(STAMP) ## Render and check the Alertmanager configs and their routing tests (needs amtool)
	$(BIN)/pytest -q tests/unit/test_monitoring.py -k "alertmanager or routes or inhibitions or render"
