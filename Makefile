# Entry points for a fresh machine (each sets up .venv on first use):
#   make run      - the main job: python -m bench.run on the embedded Fashion-MNIST default -> runs/fashion-mnist/default/
#                   (installs what running needs: `pip install -e .`, no test or lint package)
#   make test     - the test suite (CPU); adds the `test` extra (pytest, hypothesis, foolbox, ART, ...)
#   make lint     - ruff and mypy (configured in pyproject.toml); adds the `lint` extra
#   make results  - regenerate the committed reference results in results/ (overwrites them; an explicit act):
#                   the quick run and the scaling sweep; results-art, results-torchrun and results-sequential
#                   for the others
#
# CPU-only PyTorch (no CUDA wheels, no triton: a much smaller .venv), on a fresh .venv:
#   make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# installs torch and torchvision from that index first; everything else comes from PyPI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_INDEX_URL ?=

.PHONY: run test lint results results-index results-art results-torchrun results-sequential results-sizes gpu-bench bench train clean-venv

# one stamp per install set: `make run` installs the package alone; `make test` / `make lint` add their extra
$(BIN)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(if $(TORCH_INDEX_URL),$(BIN)/pip install --index-url $(TORCH_INDEX_URL) torch torchvision)
	$(BIN)/pip install -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed-run
	$(BIN)/pip install -e '.[test]'
	touch $@

$(BIN)/.installed-lint: $(BIN)/.installed-run
	$(BIN)/pip install -e '.[lint]'
	touch $@

run: $(BIN)/.installed-run
	$(BIN)/python -m bench.run $(ARGS)

# the suite in one process per core (at most 4: each holds its own PyTorch); `pytest --benchmark-only`
# times the benchmarks in one process
test: $(BIN)/.installed-test
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal $(ARGS)

lint: $(BIN)/.installed-lint
	$(BIN)/ruff check .
	$(BIN)/mypy

results: $(BIN)/.installed-run
	$(BIN)/python -m bench.run --preset quick --out results/fashion-mnist/quick --overwrite --no-progress --width full column $(ARGS)
	$(BIN)/python -m bench.scaling --out results/fashion-mnist/scaling --no-progress
	$(BIN)/python -m bench.results_index results

# sequential versus fixed-n CERTIFY at cap n = 100,000 (its manifest records how long it took)
results-sequential: $(BIN)/.installed-run
	$(BIN)/python -m bench.sequential --out results/fashion-mnist/sequential --images 50 --skip 20 --no-progress
	$(BIN)/python -m bench.results_index results

# speedup versus model size, SLL layouts small..xlarge at CIFAR size; its manifest records how long it took
# one thread, about 45 min of wall time on a quiet 2-core machine (cohen at two whole batches per size, its fast
# modes as rows; TF32 is CUDA-only, so the CPU run notes it as not applicable)
results-sizes: $(BIN)/.installed-run
	$(BIN)/python -m bench.scaling --sizes default small medium large xlarge --rounds 1 --threads 1 \
	    --cohen-ns 256 512 --cohen-direct small --cohen-memory-ns 256 512 --cohen-modes tf32 bf16 compiled \
	    --out results/sizes --no-progress
	$(BIN)/python -m bench.results_index results

# one command on a CUDA machine (about 8 minutes on one H100): paper preset subset, n sweep, size sweep
gpu-bench: $(BIN)/.installed-run
	$(BIN)/python -m bench.gpu --out results/fashion-mnist/gpu $(ARGS)

# results/README.md: the index of every committed result, made from the result folders' own files
results-index: $(BIN)/.installed-run
	$(BIN)/python -m bench.results_index results

results-art: $(BIN)/.installed-test
	$(BIN)/python -m bench.art_compare --out results/fashion-mnist/art --no-progress
	$(BIN)/python -m bench.results_index results

TORCHRUN_RUN := --methods cohen fars-mc --heads ce --num-images 20 --scaling-ns --no-attack --overwrite --no-progress
results-torchrun: $(BIN)/.installed-run
	$(BIN)/python -m bench.run $(TORCHRUN_RUN) --out results/fashion-mnist/torchrun/one-process
	$(BIN)/torchrun --standalone --nproc-per-node 2 -m bench.run $(TORCHRUN_RUN) \
	    --out results/fashion-mnist/torchrun/two-processes
	$(BIN)/python -m bench.results_index results

bench: $(BIN)/.installed-test
	$(BIN)/python -m pytest --benchmark-only $(ARGS)

train: $(BIN)/.installed-run
	$(BIN)/python -m bench.train $(ARGS)

clean-venv:
	rm -rf $(VENV)
