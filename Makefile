# mediaflow — `make run` brings everything up and runs a real job; `make test` runs the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: help deps run stop observe test chaos lint bench diagnose docs proto canary

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

deps: ## install what is missing: uv, Python packages, nginx, PostgreSQL, RabbitMQ, promtool, Chromium, npm (axe-core for the browser tests), wrk, ffmpeg
	@command -v uv >/dev/null || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@missing=""; \
	  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	  command -v pg_ctlcluster >/dev/null || missing="$$missing postgresql"; \
	  command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	  command -v promtool >/dev/null || missing="$$missing prometheus"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  command -v wrk >/dev/null || missing="$$missing wrk"; \
	  command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	  command -v npm >/dev/null || missing="$$missing npm"; \
	  if [ -n "$$missing" ]; then echo "installing:$$missing"; $(SUDO) apt-get update -qq && $(APT_INSTALL) $$missing; fi
	@$(UV) sync --quiet --frozen
	@# The browser tests' JavaScript (axe-core), pinned by tests/browser/package-lock.json.
	@[ tests/browser/node_modules/.package-lock.json -nt tests/browser/package-lock.json ] || \
	  npm ci --prefix tests/browser --no-audit --no-fund --silent

run: deps ## start everything (idempotent) and run a real job end to end
	@$(UV) run --frozen python -m devstack demo

stop: ## stop what `make run` (and `make observe`) started
	@$(UV) run --frozen python -m devstack down

observe: deps ## a local Prometheus on 127.0.0.1:9090 scraping `make run`'s stack, with the chart's alert rules
	@$(UV) run --frozen python -m devstack.observe

test: deps lint ## ruff and mypy, then unit, integration and end-to-end tests against real services
	@$(UV) run --frozen pytest --durations=15

chaos: deps ## the chaos tests, longer and larger than in `make test` (CHAOS_SCALE, default 3)
	@CHAOS_SCALE=$${CHAOS_SCALE:-3} $(UV) run --frozen pytest tests/chaos -s -rA

lint: deps ## ruff (check and format) and mypy --strict
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy

bench: deps ## every benchmark against its baseline from the same run, one table (bench/all.py)
	@$(UV) run --frozen python bench/all.py

diagnose: deps ## check a running stack: config agreement, clocks, cookies, sessions end to end
	@$(UV) run --frozen mediaflow diagnose

docs: deps ## refresh the README's configuration table and the chart README's values table
	@$(UV) run --frozen python -m devstack.config_doc --write README.md
	@$(UV) run --frozen python -m devstack.chart_doc --write deploy/helm/mediaflow/README.md

proto: deps ## regenerate the message contracts from proto/
	@$(UV) run --frozen python -m mediaflow_libs.protogen

canary: ## live platforms (needs the internet, never in CI): which extractors work today on a running stack
	@$(UV) run --frozen python -m devstack.canary
