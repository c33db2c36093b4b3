# Two commands do all the set-up: `make fit` and `make test` (each creates .venv on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA_DIR ?= data
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: install fit test test-fast tensorboard bench gpu-check clean

install: $(STAMP)  ## create .venv and install the package with its pinned dependencies

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

fit: install  ## train (default: speedrun); pass flags with ARGS="--model lenet --max-epochs 5", the data folder with DATA_DIR=
	$(BIN)/python -m cifar10.fit $(if $(findstring --data-dir,$(ARGS)),,--data-dir $(DATA_DIR)) $(ARGS)

test: install  ## the whole test suite, slow tests included (what CI runs)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install  ## skip tests marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

tensorboard: install  ## dashboards for every run under lightning_logs/
	$(BIN)/tensorboard --logdir lightning_logs

bench: install  ## data pipeline and Lightning-loop benchmarks on DATA_DIR
	$(BIN)/python -m cifar10.bench data --preset crop-flip --data-dir $(DATA_DIR)
	$(BIN)/python -m cifar10.bench data --preset heavy --data-dir $(DATA_DIR)
	$(BIN)/python -m cifar10.bench loop --model lenet --data-dir $(DATA_DIR)

# No .venv here: it runs with the Python that already has torch and Lightning (PY=...), offline, on a
# prepared DATA_DIR. One group a command: GROUP=speedrun, fits, tests, tools (--list: their minutes).
PY ?= python3
GROUP ?=
gpu-check:  ## the whole GPU path (fits, compile, DDP, evaluate/predict/export, benchmarks), one GROUP at a time
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m cifar10.gpu_check --data-dir $(DATA_DIR) $(if $(GROUP),--group $(GROUP)) $(ARGS)

clean:  ## remove caches (keeps .venv, data and lightning_logs)
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
