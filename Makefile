# ktap: the two commands people need are `make run` and `make test`.
# Everything else here exists so those two work on a machine that has
# nothing but the system Python.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint bench clean

setup: $(STAMP)

# Re-install only when the project metadata changes (idempotent).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	$(PY) -m ktapctl.cli samples/syscall_top.kp

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) bench/vm.py
	$(PY) bench/startup.py
	$(PY) bench/probes.py

clean:
	rm -rf $(VENV) build *.egg-info
