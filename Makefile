# The README's commands: `make run` (demo on http://127.0.0.1:8000/a/demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENDOR := static/vendor
NPM := node_modules/.package-lock.json

.PHONY: setup run cluster test lint typecheck unit bench clean lock chromium wrk nginx

setup: $(BIN)/avatar-bff $(VENDOR)/.stamp chromium nginx

# The pinned, hash-checked dependencies (dev + simulator extras), then the project itself, editable.
$(BIN)/avatar-bff: pyproject.toml requirements/dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(NPM): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

$(VENDOR)/.stamp: $(NPM) scripts/copy-vendor-assets.sh
	sh scripts/copy-vendor-assets.sh

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium espeak-ng >/dev/null; }
	@command -v espeak-ng >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null || echo "espeak-ng unavailable: the simulator will play tones"; }

# wrk loads the hosted page in bench/page.py (a Debian package, like Chromium above).
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

# nginx balances `make cluster` and is the relay's yardstick in bench/relay.py (a Debian package, like wrk;
# its service is not started).
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }

run: setup
	$(BIN)/avatar-bff serve --demo

# Two instances on PostgreSQL and Redis behind nginx on 127.0.0.1:8080 (deploy/README.md); Ctrl-C stops all.
cluster: setup
	$(BIN)/python -m deploy.cluster

unit: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	npm run lint
	$(BIN)/hadolint Dockerfile

typecheck: setup
	$(BIN)/mypy

test: setup
	$(BIN)/pytest -q
	$(BIN)/lint-imports
	npm run lint
	$(BIN)/hadolint Dockerfile
	npm test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup wrk nginx
	$(BIN)/python bench/page.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/simulator_load.py
	$(BIN)/python bench/cluster_load.py

# Regenerate requirements/*.lock from pyproject.toml with pip-tools (in a venv of its own), on Python 3.11.
# Pins already in the locks are kept: `make lock LOCK_ARGS=--upgrade` moves everything to the newest releases.
LOCK_TOOLS := .venv-lock
# The dev extra names the project itself (`avatar-bff[simulator]`): only its dependencies are pinned, and
# `--unsafe-package` keeps the project out of the lock (it is installed editable, or as a wheel, on its own).
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	--unsafe-package avatar-bff
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet pip-tools; }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) \
		--output-file requirements/main.lock pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) \
		--extra dev --constraint requirements/main.lock --output-file requirements/dev.lock pyproject.toml

clean:
	rm -rf $(VENV) node_modules $(VENDOR)
