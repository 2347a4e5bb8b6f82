# Development tasks. Every target uses `python` from the active environment, so activate the
# project venv first (`source .venv/bin/activate`) or pass PYTHON=path/to/python.

PYTHON ?= python
SPHINXOPTS ?= -W --keep-going

.PHONY: help lint format test test-slow docs docs-clean bench

help:
	@echo "make lint       ruff check + ruff format --check"
	@echo "make format     ruff format + ruff check --fix (rewrites files)"
	@echo "make test       the fast tests: pytest -m \"not slow\""
	@echo "make test-slow  the slow tests only: pytest -m slow"
	@echo "make docs       the documentation, warnings as errors, into docs/_build/html"
	@echo "make bench      the benchmarks in benchmarks/"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

test:
	$(PYTHON) -m pytest -m "not slow"

test-slow:
	$(PYTHON) -m pytest -m slow --dist loadscope

docs:
	$(PYTHON) -m sphinx $(SPHINXOPTS) -b html docs docs/_build/html

docs-clean:
	rm -rf docs/_build docs/api.md docs/notebooks

bench:
	$(PYTHON) benchmarks/fit_speed.py
	$(PYTHON) benchmarks/forecast_speed.py
	$(PYTHON) benchmarks/breaks_speed.py
	$(PYTHON) benchmarks/design_speed.py
