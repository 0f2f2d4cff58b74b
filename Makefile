# The two commands of the README, on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: demo test

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

demo: $(VENV)/.installed
	PYTHON=$(abspath $(PYTHON)) ./run.sh

test: $(VENV)/.installed
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest
