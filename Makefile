VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install lint test test-slow bench demo docs

install:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,reference]'
	$(PY) -m pip install --quiet --no-deps curvlinops-for-pytorch backpack-for-pytorch
	$(PY) -m pip install --quiet torch==2.13.0 einops einconv linear_operator opt-einsum tqdm unfoldNd

lint:
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/mypy

test:
	$(PY) -m pytest -q

test-slow:
	$(PY) -m pytest -q -m slow

bench:
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,rounds

demo:
	$(PY) examples/demo_trace.py

# The documentation site into build/site/ (the docs extra; the build executes the tutorials, ~2 min).
docs:
	$(PY) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
