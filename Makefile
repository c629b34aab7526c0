# The two commands of the README: `make demo` and `make test`.
# Downloads are cached where their tools cache them: pip in ~/.cache/pip,
# Maven in ~/.m2, the stack's jars in ~/.cache/fraudstream.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The engine's hot modules compiled by mypyc (setup.py); COMPILE=0 runs the Python sources instead.
COMPILE ?= 1
ENGINE := $(VENV)/.engine-$(COMPILE)
ENGINE_SOURCES := Makefile setup.py $(wildcard topology/*.py topology/*/*.py)

INTEROP := tests/interop

.PHONY: install browser-deps interop-deps demo test lint typecheck unit integration stack-up stack-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

$(ENGINE): $(STAMP) $(ENGINE_SOURCES)
	rm -f $(VENV)/.engine-* && find topology -name '*.so' -delete
ifeq ($(COMPILE),1)
	FRAUDSTREAM_COMPILE=1 $(BIN)/python setup.py -q build_ext --inplace || { find topology -name '*.so' -delete; \
	  echo "compiling the engine failed (is gcc installed?): make $(MAKECMDGOALS) COMPILE=0 runs the Python sources" >&2; exit 1; }
	find topology -name '*.so' -exec touch {} +  # copied with their build times: now newer than the sources
endif
	touch $@

install: $(STAMP) $(ENGINE)

## Run the whole pipeline on the Docker-free local stack (Ctrl-C stops it).
demo: install
	$(BIN)/fraudstream demo

## Create the venv, install, lint, type-check and run the whole suite.
test: install browser-deps interop-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/fraudstream schemas check --offline
	$(BIN)/pytest tests/unit -n 2
ifeq ($(COMPILE),1)
	# The unit suite again on the Python sources: what COMPILE=0 and the Docker images run.
	FRAUDSTREAM_PURE_PYTHON=1 $(BIN)/pytest tests/unit -n 2
endif
	$(BIN)/pytest -m integration -n 2 --dist loadfile --durations=12

## Debian's chromium for the dashboard browser test, installed only when missing (never a downloaded browser).
browser-deps:
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

## Confluent's JavaScript serdes for the interop tests, pinned by tests/interop/package-lock.json
## (installed only when missing: offline once installed).
interop-deps: $(INTEROP)/node_modules/.package-lock.json

$(INTEROP)/node_modules/.package-lock.json: $(INTEROP)/package-lock.json
	cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -n 2

integration: install
	$(BIN)/pytest -m integration -n 2 --dist loadfile

stack-up: install
	$(BIN)/fraudstream stack up

stack-down: install
	$(BIN)/fraudstream stack down

clean:
	find topology -name '*.so' -delete
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
