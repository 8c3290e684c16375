# Two entry points for a fresh machine (each sets up .venv on first use):
#   make run    - the main job: python -m bench.run on the embedded Fashion-MNIST default
#   make test   - the test suite (CPU)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench train clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/python -m bench.run $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m pytest --benchmark-only $(ARGS)

train: $(BIN)/.installed
	$(BIN)/python -m bench.train $(ARGS)

clean-venv:
	rm -rf $(VENV)
