# Two set-up commands do everything: `make run` (main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# `airflow standalone` and task subprocesses look up `airflow` on PATH.
export PATH := $(BIN):$(PATH)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install data run test test-fast lint clean lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Default data: Fashion-MNIST from Debian (MNIST's IDX format), installed when missing.
data:
	@if [ ! -f $(FASHION_MNIST) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq dataset-fashion-mnist || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	  else \
	    echo "Fashion-MNIST missing: install Debian package dataset-fashion-mnist," \
	         "or run: mlp run mnist --source DIR_WITH_IDX_FILES"; exit 1; \
	  fi; \
	fi

run: install data
	$(BIN)/mlp run mnist --variant cnn

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf var .pytest_cache .ruff_cache

# Re-resolve and freeze the full dependency set after changing pyproject.toml.
lock:
	rm -rf /tmp/mlp-lock && $(PYTHON) -m venv /tmp/mlp-lock
	/tmp/mlp-lock/bin/pip install --quiet -e '.[dev]'
	(echo "# Full resolved set for Python 3.11 (pip freeze of a clean install of pyproject.toml [dev])."; \
	 echo "# Regenerate: make lock"; \
	 /tmp/mlp-lock/bin/pip freeze --exclude-editable | grep -v '^mlp==') > constraints.txt
