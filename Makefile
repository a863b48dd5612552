# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
DEVICE ?= cpu

.PHONY: demo test install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	# The local CPU wheel; any other torch spec pulls the CUDA build.
	$(PIP) install torch==2.13.0

$(VENV)/.installed: $(BIN)/python setup.cfg
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg
	$(PIP) install -e ".[test,ray]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# 004 Table 2 (Figure-8 and Clusters: VAE, IWAE, LIN) in quick mode: the table beside the paper's, and figures.
demo: install
	$(BIN)/pyro-vae reproduce 004_table2 --quick --device $(DEVICE) --out demo-runs

test: install-test
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

bench: install
	$(BIN)/python bench/svi_step.py

clean:
	rm -rf $(VENV) build *.egg-info
