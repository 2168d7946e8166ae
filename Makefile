# Two commands on a fresh machine:
#   make sim    the firmware on a simulated ESP32, several wakes, serial log shown
#   make test   every test: portable ones on CPython and on the MicroPython VM, then host ones
# Both create .venv and install the pinned dependencies on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PETREL := $(VENV)/bin/petrel
STAMP  := $(VENV)/.installed

.PHONY: all venv test test-cpython test-vm test-host sim clean

all: test

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

test: test-cpython test-vm test-host

test-cpython: $(STAMP)
	@echo "== portable tests on CPython"
	$(PY) -m pytest -q host_tests/portable

test-vm: $(STAMP)
	@echo "== portable tests on the MicroPython VM"
	$(PETREL) vm test

test-host: $(STAMP)
	@echo "== host tests (tools, boot cycles on both interpreters)"
	$(PY) -m pytest -q host_tests/host

sim: $(STAMP)
	$(PETREL) sim --boots 6

clean:
	rm -rf $(VENV) build *.egg-info tools/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
