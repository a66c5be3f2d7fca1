# tlsfleet: `make demo` and `make test` each create or refresh .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tlsfleet demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The one command that regenerates the wire code; tests/test_proto_fresh.py fails when it is stale.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto \
		--python_out=proto --pyi_out=proto --grpc_python_out=proto \
		$(wildcard proto/tlsfleet/v1/*.proto)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
