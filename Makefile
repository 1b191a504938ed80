# Every target creates and uses the virtual environment in .venv/ itself, so each works on a fresh
# machine. torch is installed first from the CPU wheel (torch==2.13.0), before sentence-transformers
# could pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install lint test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

lint: install
	$(PY) -m ruff check semcache tests demo benchmarks training data/pairs
	$(PY) -m ruff format --check semcache tests demo benchmarks training data/pairs
	$(PY) -m mypy semcache
	$(VENV)/bin/lint-imports

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) demo/run.py --fresh

bench: install
	$(PY) benchmarks/quality.py
	$(PY) benchmarks/latency.py

clean:
	rm -rf $(VENV) .semcache-demo .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
