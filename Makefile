# The two commands a newcomer needs: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MLFLOW_DISABLE_TELEMETRY = true
export PYTHONDONTWRITEBYTECODE = 1
UI_PORT ?= 3000

.PHONY: setup browser postgres demo test test-fast ui bench evaluate clean

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --requirement requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --editable .
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: setup
	$(BIN)/qa-assets demo

# The browser test drives Debian's chromium; install it when this machine lets us (root with apt-get).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed and cannot be installed here: the browser test will skip"; fi; }

# The production-profile test starts a throwaway PostgreSQL server from Debian's packages; install them likewise.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "postgresql is not installed and cannot be installed here: the Postgres test will skip"; fi; }

test: setup browser postgres
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not integration and not evaluation"

ui: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT)

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --requirement requirements-bench.txt
	touch $@

bench: setup $(VENV)/.bench-installed
	$(BIN)/qa-assets bench all

evaluate: setup
	$(BIN)/qa-assets evaluate all

clean:
	rm -rf $(VENV) .dagster_home data build *.egg-info
