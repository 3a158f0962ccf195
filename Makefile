# The README's two commands are `make lab` and `make test`; the other targets are the steps they share.
# Every step is idempotent: a second run skips what is already done.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: setup data lab test test-portability train transfer export serve serve-proxy serving-benchmark precision-benchmark benchmark ablation load-test attack fuzz conditions exercises grade hosted notebooks figures references lock check-lock clean

## setup: create .venv (Python 3.11-3.13; CI tests 3.11) and install the pinned requirements and this repo's modules
setup: $(INSTALLED)

$(INSTALLED): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' || \
		{ echo "error: Python 3.11, 3.12 or 3.13 is needed; '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Install one or run: make PYTHON=/path/to/python3.12"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==25.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

## data: build datasets/{train,test}_signs.h5 (digits 0-5) and datasets/digits_6_9/ (source: $$SIGNS_SOURCE, datasets/*.zip, or a download)
data: setup
	$(BIN)/python -m signs_dataset
	$(BIN)/python -m signs_dataset --digits 6-9

## lab: set up, prepare the data and open JupyterLab at the repository root on the README, rendered (jupyterlab/overrides.json:
## Markdown opens as a preview); as root, common in containers, with --allow-root; LAB_ARGS="--no-browser --port 8890" etc.
lab: data
	$(BIN)/jupyter lab --LabApp.app_settings_dir=$(CURDIR)/jupyterlab --LabApp.default_url=/lab/tree/README.md \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## test: set up, prepare the data, then the unit tests and every notebook under nbval
test: data
	$(BIN)/python -m pytest

## test-portability: replay the notebooks under nbval with two other numeric back-ends, as on other CPUs
## (oneDNN limited to AVX2 kernels; oneDNN off). NOTEBOOKS="notebooks/01_identity_block.ipynb ..." for fewer.
## Without oneDNN, chapter 04's training cell takes over 30 minutes on 2 cores (the cell limit, in pyproject.toml, is an hour).
BACKENDS ?= ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=0
NOTEBOOKS ?= notebooks
test-portability: data
	@for backend in $(BACKENDS); do \
		echo "== nbval with $$backend: $(NOTEBOOKS)"; \
		env $$backend $(BIN)/python -m pytest $(NOTEBOOKS) || exit 1; \
	done

## train: train ResNet50 with the default recipe into runs/default-seed0/ (pass ARGS="--seed 1 --epochs 10" etc.)
train: data
	$(BIN)/python -m resnets_train $(ARGS)

## transfer: reuse the trained model for digits 6-9 (new head, then stage 5 fine-tuned) -> runs/transfer-6to9/ (ARGS="--base imagenet" etc.)
transfer: data
	@test -f runs/default-seed0/model.keras || $(BIN)/python -m resnets_train
	$(BIN)/python -m resnets_transfer train $(ARGS)

## serve: serve the trained model on http://localhost:5000 with Waitress (python api.py; ARGS="--port 8000" etc.)
serve: setup
	$(BIN)/python api.py $(ARGS)

## serve-proxy: the production set-up on this machine: nginx on http://127.0.0.1:8080 in front of api.py (python proxy.py; needs nginx)
serve-proxy: setup
	$(BIN)/python proxy.py $(ARGS)

## export: the trained model as a SavedModel for TF Serving -> runs/serving/resnets/<next version>/ (python -m resnets_export)
export: setup
	@test -f runs/default-seed0/model.keras || $(BIN)/python -m resnets_train
	$(BIN)/python -m resnets_export $(ARGS)

## serving-benchmark: the export against predict_image on the test photos, and photos/s for 1-64 photos per call -> runs/serving_benchmark/
serving-benchmark: data
	@test -f runs/default-seed0/model.keras || $(BIN)/python -m resnets_train
	$(BIN)/python tools/serving_benchmark.py $(ARGS)

## precision-benchmark: seconds per epoch, float32 against mixed_bfloat16 (about 5 minutes) -> runs/precision_benchmark/
precision-benchmark: data
	$(BIN)/python tools/precision_benchmark.py $(ARGS)

## benchmark: default recipe against the course's, seed 0, 25 epochs each (about 25 minutes) -> runs/benchmark/
benchmark: data
	$(BIN)/python tools/benchmark_training.py $(ARGS)

## ablation: the default recipe with one choice undone at a time (about 80 minutes; docs/results.md's table: ARGS="--recipe plain-walls --epochs 20") -> runs/ablation/
ablation: data
	$(BIN)/python tools/ablation.py $(ARGS)

## load-test: latency and throughput of the service with 1, 4 and 16 clients -> runs/load_test/
load-test: data
	$(BIN)/python tools/load_test.py $(ARGS)

## attack: slow clients and costly uploads against the service alone and behind nginx, 30 s each -> runs/attack/
attack: data
	@test -f runs/default-seed0/model.keras || $(BIN)/python -m resnets_train
	$(BIN)/python tools/attack.py $(ARGS)

## fuzz: 100,000 mutated images through prepare_image, then 20,000 raw HTTP requests to the service -> runs/fuzz/
fuzz: setup
	$(BIN)/python tools/fuzz.py images $(ARGS)
	$(BIN)/python tools/fuzz.py http $(ARGS)

## conditions: the trained networks on the test photos taken differently (backgrounds, tilt, light, ...) -> runs/conditions/
conditions: data
	$(BIN)/python tools/conditions_benchmark.py $(ARGS)

## exercises: write the student notebooks exercises/*.ipynb from the solved chapters (commit the result)
exercises: setup
	$(BIN)/python -m classroom exercises

## grade: grade submitted notebooks, each in a bubblewrap sandbox, e.g. make grade SUBMISSIONS=~/class/submissions -> runs/grades/grades.md
grade: setup
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder-or-notebook [ARGS='--cell-timeout 120 --variant-seed 7 --jobs 2']"; exit 2; }
	$(BIN)/python -m classroom grade "$(SUBMISSIONS)" $(ARGS)

## hosted: write the Colab/Kaggle badges and each chapter's hosted set-up from pyproject.toml's Repository address, then the student notebooks
hosted: setup
	$(BIN)/python -m hosted write
	$(BIN)/python -m classroom exercises

## notebooks: execute every notebook in order, in place, stopping at the first error
notebooks: data
	$(BIN)/python tools/run_notebooks.py notebooks/[0-9]*.ipynb

## figures: redraw the diagrams in images/
figures: setup
	$(BIN)/python images/make_figures.py

## references: recompute the stored outputs the exercise checks compare against (review the diff!)
references: setup
	$(BIN)/python -m resnets_checks --write-references

## lock: re-resolve requirements.in into requirements.txt in a scratch environment (then run: make check-lock)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet pip==25.3 && .lock-venv/bin/python -m pip install --quiet -r requirements.in
	{ echo "# Generated by \`make lock\` from requirements.in: every package pinned, so notebook outputs stay stable."; \
	  echo "# Resolved with Python 3.11 on Linux x86-64; resolves for 3.11-3.13 on Linux, macOS and Windows too"; \
	  echo "# (tools/check_lock.py). Do not edit by hand."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude pip | sort -f; } > requirements.txt
	rm -rf .lock-venv

## check-lock: does requirements.txt resolve from wheels for Linux x86-64/aarch64, macOS arm64 and Windows x Python 3.11-3.13? (needs PyPI) -> runs/check_lock/
check-lock: setup
	$(BIN)/python tools/check_lock.py $(ARGS)

## clean: remove the virtual environment and built data (the source archive and Keras cache stay)
clean:
	rm -rf $(VENV) datasets/*.h5 datasets/digits_6_9 .pytest_cache
