# superlink-async: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROTO_DIR := superlink_async/wire/protos
WIRE_DIR  := superlink_async/wire
PROTOS    := $(wildcard $(PROTO_DIR)/flwr/proto/*.proto)

.PHONY: install haproxy run test lint typecheck unit e2e proto demo clean bench bench-smoke bench-profile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The installed marker is rebuilt whenever the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,bench,uvloop]"
	touch $@

install: $(VENV)/.installed

## HAProxy, the load balancer in front of the replicas in the tests (docs/high-availability.md):
## installed from the system's packages when missing and we are root with apt-get; otherwise
## the tests that need it fail with one line saying how to install it.
haproxy:
	@command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy || \
	if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy; }; \
	else echo "HAProxy is missing (the replica tests need it): apt-get install haproxy"; fi

## Run the server with in-memory state, plaintext, default ports.
run: install
	$(BIN)/python -m superlink_async --insecure $(ARGS)

## The whole suite: lint, types, unit, service and end-to-end tests.
## pytest's status 5 means it collected no test at all: report that plainly, as a failure.
test: install haproxy lint typecheck
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: the suite is missing"; fi; \
	exit $$status

## Style, format, and the import layers of docs/architecture.md (contracts in pyproject.toml).
lint: install
	$(BIN)/ruff check superlink_async tests examples benchmarks
	$(BIN)/ruff format --check superlink_async tests examples benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

e2e: install haproxy
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

## Regenerate the committed wire modules from the .proto files.
proto: install
	rm -rf build/proto && mkdir -p build/proto
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I $(PROTO_DIR) \
		--python_out=build/proto --pyi_out=build/proto \
		--grpclib_python_out=build/proto $(PROTOS)
	$(BIN)/python -m superlink_async.wire.relocate build/proto/flwr/proto $(WIRE_DIR)

## Ours against flower-superlink 1.18.0, alternating, and ours on PostgreSQL with one and two
## replicas; rewrites docs/benchmarks.md (~42 min).
bench: install
	$(BIN)/python -m benchmarks --preset full --output docs/benchmarks.md --json build/benchmarks.json

## The same instrument at tiny sizes against our server only (~1.5 min); `make test` runs it too.
bench-smoke: install
	$(BIN)/python -m benchmarks --preset smoke --strict --output build/benchmarks-smoke.md

## One run of the full preset against our server, sampled with py-spy into build/profile/.
bench-profile: install
	$(BIN)/python -m benchmarks --preset full --runs 1 --target "superlink-async=$(BIN)/python -m superlink_async" --output build/profile/benchmarks.md --profile build/profile

## A complete local federation: our server, two real SuperNodes and a `flwr new` NumPy app.
demo: install
	$(BIN)/python examples/local_federation/run.py

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
