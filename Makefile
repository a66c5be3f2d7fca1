# tlsfleet: `make demo` and `make test` each create or refresh .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tlsfleet demo

# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE): pytest then keeps its
# assertion-rewritten test modules (rewriting them all takes some 5 s a run), and every agent and CLI process
# a test starts reads tlsfleet compiled instead of compiling it again.
# The whole suite is the unit tests on UNIT_WORKERS workers, then the rest (agent processes, the lab, timers,
# namespaces, the browser, PostgreSQL) one at a time, as their timings assume.
test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory typecheck
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -m "$(UNIT_TESTS)" -q -n $(UNIT_WORKERS)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -m "not ($(UNIT_TESTS))"

# The unit tests alone: no lab, no agent processes, no browser, no database server. They wait on sockets and
# subprocesses as much as they compute, so three workers on two cores keep them under 30 s, also in a fresh
# clone (cold, on this 2-core machine: 27.5 s on two workers, 23.7 s on three).
UNIT_TESTS := not e2e and not root and not browser and not slow and not postgres
UNIT_WORKERS := 3
test-fast: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -m "$(UNIT_TESTS)" -q -n $(UNIT_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy on the package as installed (the package-dir mapping hides the source tree's layout from it).
typecheck: $(STAMP)
	rm -rf build/typecheck
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --target build/typecheck .
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml --python-executable ../../$(BIN)/python -p tlsfleet

# The one command that regenerates the wire code; tests/test_proto_fresh.py fails when it is stale.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto \
		--python_out=proto --pyi_out=proto --grpc_python_out=proto \
		$(wildcard proto/tlsfleet/v1/*.proto)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
