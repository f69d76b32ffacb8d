# servable — developer commands. `make serve` and `make test` work on a fresh machine:
# each creates the virtual environment (.venv) from requirements.lock when missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: serve test test-fast protos bench bench-quick image-test lint clean browser-deps

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# requirements.lock: what the server runs on (also what the Docker image installs);
	# requirements-dev.lock: test and tooling packages.
	$(PIP) install -q -r requirements.lock -r requirements-dev.lock
	# The official client, used by the tests; --no-deps keeps the full tensorflow wheel out.
	$(PIP) install -q --no-deps tensorflow-serving-api==2.21.0
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

## Start the server. With no ARGS it serves the built-in half_plus_two demo model on
## gRPC :8500 and REST :8501. Example: make serve ARGS="--model_name=m --model_base_path=/models/m"
serve: $(STAMP)
	$(PY) -m servable.server $(ARGS)

## Run the whole test suite (what CI runs).
test: $(STAMP) browser-deps
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

## Everything but the slow end-to-end tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not browser" $(ARGS)

## Headless chromium for the web app test (Debian package); skipped quietly when apt is unavailable.
browser-deps:
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && (apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1)) || echo "chromium not installed: browser tests will be skipped")

## Regenerate servable/_proto from protos/ (gencode for protobuf 6.31.1, runs on 6.31.1 to 7.x).
protos:
	test -x .venv-protos/bin/python || $(PYTHON) -m venv .venv-protos
	.venv-protos/bin/pip install -q grpcio-tools==1.74.0
	.venv-protos/bin/python tools/gen_protos.py

bench: $(STAMP)
	$(PY) -m benchmarks run $(ARGS)

bench-quick: $(STAMP)
	$(PY) -m benchmarks run --quick $(ARGS)

image-test: $(STAMP)
	bash deploy/image_test.sh

clean:
	rm -rf $(VENV) .venv-protos build dist *.egg-info
