# The README's commands: `make run` (demo on http://127.0.0.1:8000/a/demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENDOR := static/vendor
NPM := node_modules/.package-lock.json

.PHONY: setup run test lint typecheck unit bench clean

setup: $(BIN)/avatar-bff $(VENDOR)/.stamp chromium

$(BIN)/avatar-bff: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

run: setup
	$(BIN)/avatar-bff serve --demo

unit: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	npm run lint

typecheck: setup
	$(BIN)/mypy

test: setup
	$(BIN)/pytest -q
	$(BIN)/lint-imports
	npm run lint
	npm test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/simulator_load.py

clean:
	rm -rf $(VENV) node_modules $(VENDOR)
