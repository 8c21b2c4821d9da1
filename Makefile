# The two quick-start commands, `make run` and `make test`, each create .venv when missing and
# install the project into it; README.md explains both.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# GPU=1 adds the `gpu` extra (TensorFlow's CUDA libraries): `make run GPU=1`.
GPU ?=
comma := ,
EXTRAS := dev$(if $(filter 1,$(GPU)),$(comma)gpu)
# Installed once per change of the dependency files; the stamp file records that, one per set
# of extras, so that switching GPU=1 on installs the CUDA libraries.
INSTALLED := $(VENV)/.installed$(if $(filter 1,$(GPU)),-gpu)
# DVC stages run `python -m pipeline.<stage>`: put the venv's python first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: run test test-fast bench lint params ui clean

$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[$(EXTRAS)]"
	touch $@

run: $(INSTALLED)  ## create .venv, install, run the whole DVC pipeline
	dvc repro
	dvc metrics show

test: $(INSTALLED)  ## create .venv, install, run the test suite
	pytest

test-fast: $(INSTALLED)  ## everyday: the suite without the tests marked slow (about a minute)
	pytest -m "not slow"

bench: $(INSTALLED)  ## measure the pipeline against the seed's Keras loop: docs/benchmarks.md
	python benchmarks/bench.py

lint: $(INSTALLED)
	ruff check .
	ruff format --check .

params: $(INSTALLED)  ## regenerate params.yaml from conf/ (as `dvc exp run` does)
	python -m pipeline.config > params.yaml.tmp && mv params.yaml.tmp params.yaml

UI_PORT ?= 5000
STORE := sqlite:///$(CURDIR)/mlflow.db
# The UI without MLflow's GenAI job runners: eight processes that serve no training run.
ui: $(INSTALLED)  ## browse the runs: MLflow's UI on 127.0.0.1 (only this machine can reach it)
	@python -c 'from pipeline.tracking.search import ui_link; \
	print("The mnist runs:", ui_link("$(STORE)", $(UI_PORT)))'
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	  mlflow ui --backend-store-uri $(STORE) --host 127.0.0.1 --port $(UI_PORT)

clean:  ## remove the pipeline's outputs (not the DVC cache, not the MLflow store)
	rm -rf data models outputs multirun reports/plots
