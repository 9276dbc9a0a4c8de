# Two entry points: `make demo` (the main job) and `make test`. Both create
# .venv if it is missing and install the package with everything it needs.
# `make docs` executes the notebooks (fast mode) and renders them to docs/notebooks/*.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test docs install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) -m jaxeit.cli demo

test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -n 2 -q

docs: $(STAMP)
	$(PY) docs/render_notebooks.py $(DOCS_ARGS)   # DOCS_ARGS=--full: the notebooks' full sizes

bench: $(STAMP)
	MPLBACKEND=Agg $(PY) benchmarks/forward.py

clean:
	rm -rf $(VENV) .pytest_cache
