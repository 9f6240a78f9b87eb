# The README's two set-up commands are `make run` and `make test`; both work on a fresh
# machine with nothing started by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REDIS_URL ?= redis://127.0.0.1:6379/0
export REDIS_URL

.PHONY: run test lint install clean protos check-protos bench

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the main job: a simulated mixed fleet of 12 Jetsons on the embedded default store.
run: $(STAMP)
	$(BIN)/powerfleet simulate --fleet mixed-12 --rounds 10 --cost-as resnet18-imagenet --out runs/mixed-12

## Run the test suite against a real Redis (started here if nothing answers); two workers, the
## tests that start Flower processes one after another on one of them (tests/conftest.py).
test: $(STAMP)
	scripts/ensure-redis.sh "$(REDIS_URL)"
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

## Regenerate the committed protobuf code (powerfleet/v1/) from the schema in proto/.
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. proto/powerfleet/v1/powerfleet.proto

## Fail if the committed protobuf code differs from what `make protos` generates.
check-protos: $(STAMP)
	$(BIN)/python -m pytest -q tests/store/test_proto_stale.py
