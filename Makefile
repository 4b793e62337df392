# Billfold developer entry points. From a fresh checkout:
#   make run    start Postgres/Redis/RabbitMQ if needed, migrate, run every service, load demo data
#   make test   the same bootstrap, then the whole test suite
# `make help` lists every target.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# uv on PATH, else the copy that `python3 -m pip install uv` (scripts/ensure-uv.sh)
# put somewhere PATH may not reach. Deferred (=) so it is re-evaluated after
# ensure-uv.sh ran. Exported: scripts/run.sh uses the same one.
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV

# --locked, not --frozen: fail when uv.lock no longer matches the pyproject files
# (someone changed dependencies without `uv lock`) instead of silently testing an
# environment nobody declared. No fallback to a plain `uv sync`: a stale lock is a
# bug to fix in the commit, not something CI should paper over.
# --all-packages: every workspace member, including services not yet listed in the
# root project's dependencies, since the tests cover all of them.
UV_SYNC_FLAGS ?= --locked --all-packages
# The environment was just synced; `uv run` must not re-sync (and drop members).
RUN = $(UV) run --no-sync
PYTEST_ARGS ?=
MYPY_TARGETS = libs/billfold/src libs/billfold-testing/src $(wildcard services/*/src)

.PHONY: help bootstrap uv sync services run test lint fmt migrate up down screenshots

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

uv: ## install uv with pip if it is missing
	@scripts/ensure-uv.sh

sync: uv ## install the locked dependencies and every workspace package into .venv
	$(UV) sync $(UV_SYNC_FLAGS)

services: ## check Postgres, Redis and RabbitMQ answer; start local ones that are stopped
	@scripts/ensure-services.sh

bootstrap: sync services ## everything run and test need, from nothing

run: bootstrap ## migrate, start every service in the foreground, load demo data (Ctrl-C stops)
	scripts/run.sh

# pytest's exit status goes straight to make: 1 (failures) and 5 (no tests
# collected) both fail the target. Extra arguments: make test PYTEST_ARGS='-k foo'.
test: bootstrap ## run the whole test suite
	@# portal-web's browser tests drive Debian's Chromium (Playwright cannot download
	@# browsers here); install it when missing (needs root and apt-get).
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	$(RUN) pytest $(PYTEST_ARGS)

lint: sync ## ruff check, ruff format --check, mypy --strict
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy --strict $(MYPY_TARGETS)

fmt: sync ## fix what ruff can fix and format the code
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

# Only some sections: make screenshots ONLY="usage plan".
ONLY ?=
screenshots: bootstrap ## regenerate docs/screenshots/ (each section, 1280 and 360 px, light and dark)
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	$(RUN) python scripts/screenshots.py $(ONLY)

migrate: bootstrap ## apply the SQL migrations to BILLFOLD_DATABASE_URL
	$(RUN) billfold migrate

up: ## build the images and start the whole stack with docker compose
	docker compose up -d --build

down: ## stop the docker compose stack (volumes are kept)
	docker compose down
