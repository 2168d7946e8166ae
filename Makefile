# Two commands on a fresh machine:
#   make sim    the firmware on a simulated ESP32, several wakes, serial log shown
#   make test   every test: portable ones on CPython and on the MicroPython VM, then host ones
# Both create .venv and install the pinned dependencies on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PETREL := $(VENV)/bin/petrel
STAMP  := $(VENV)/.installed

.PHONY: all venv lint test test-cpython test-vm test-host test-powercut test-powercut-update fuzz-collector fuzz soak bench bench-outbox bench-filters bench-uplink bench-payload bench-collect fleet-scale sim clean

all: test

# Mosquitto (Debian's package) is the real broker of the uplink tests and make sim.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
MOSQUITTO := /usr/sbin/mosquitto
$(MOSQUITTO):
	@command -v mosquitto >/dev/null || [ -x $@ ] || { \
	  echo "installing mosquitto (Debian package)"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto; }; }

# PostgreSQL 15 (Debian's package) is the collector store's second backend: its
# tests start a throwaway server from these binaries (tools/petrel/pgserver.py).
POSTGRES := /usr/lib/postgresql/15/bin/postgres
$(POSTGRES):
	@[ -x $@ ] || { \
	  echo "installing postgresql (Debian package)"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }; }

$(STAMP): requirements.txt pyproject.toml | $(MOSQUITTO) $(POSTGRES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

test: lint test-cpython test-vm test-host

# ruff over the whole tree (rules in pyproject.toml: pyflakes, pycodestyle's
# errors, bugbear, with MicroPython's two exceptions)
lint: $(STAMP)
	@echo "== lint (ruff)"
	$(VENV)/bin/ruff check .

test-cpython: $(STAMP)
	@echo "== portable tests on CPython"
	$(PY) -m pytest -q host_tests/portable

test-vm: $(STAMP)
	@echo "== portable tests on the MicroPython VM"
	$(PETREL) vm test

# Two test files at a time, one per core (a file's tests stay together: its
# module-scoped scenarios run once): 6 minutes instead of 14.
test-host: $(STAMP)
	@echo "== host tests (tools, boot cycles on both interpreters)"
	$(PY) -m pytest -q -n 2 --dist loadfile host_tests/host

# The long campaign: the outbox cut at every program/erase position of a
# 1000-reading run with the RTC fast path, and at 2000 spread positions (plus
# the first 100) of the 18,163 without it (make test runs a fast slice).
# About 30 minutes; cutting the direct path at all 18,163 positions
# (`$(POWERCUT) -q direct 1000 all`) takes about two hours.
POWERCUT := MICROPYPATH=.frozen:$(CURDIR)/boards/sim:$(CURDIR)/lib $(VENV)/bin/micropython -X heapsize=8M host_tests/vm/powercut.py
test-powercut: $(STAMP)
	$(POWERCUT) -q rtc-reset 1000 all
	$(POWERCUT) -q rtc-power 1000 all
	$(POWERCUT) -q rtc-power 1000 all 8192
	$(POWERCUT) -q direct 1000 spread:400 8192
	$(POWERCUT) -q direct 1000 spread:2000

# The app update's campaign (issue 17): the power cut at every program/erase of
# an update's run (the chunks' writes over several wakes, the settle, the stage,
# the switch at the next boot, the confirmation, the readings between them),
# from the factory app (into slot 1) and from v5 in slot 1 (into slot 2), then
# a bigger image; after each cut the node must boot a whole, verified app, keep
# every reading and finish the update (make test runs a fast slice:
# host/test_update_powercut.py). 2328 cuts, about 11 minutes.
POWERCUT_UPDATE := MICROPYPATH=.frozen:$(CURDIR)/boards/sim:$(CURDIR)/lib:$(CURDIR)/firmware $(VENV)/bin/micropython -X heapsize=8M host_tests/vm/powercut_update.py
test-powercut-update: $(STAMP)
	$(POWERCUT_UPDATE) -q factory all
	$(POWERCUT_UPDATE) -q slot1 all
	$(POWERCUT_UPDATE) -q factory all 20000 1024

# The long wake-cycle run: a month of wakes under CPython and a week on the VM
# (littlefs), with random faults drawn from a seed (make test keeps a week on
# CPython and half a day on the VM). About 15 minutes.
soak: $(STAMP)
	$(PY) host_tests/soak.py --days 30 --interpreter cpython --seed 1
	$(PY) host_tests/soak.py --days 7 --interpreter vm --seed 2

# The collector's verifier and store fuzzed: 500,000 mutated and random messages,
# each answered (Message or Rejected) within 0.1 s, the process not growing
# (make test runs a 2,000-input slice: host/test_verify_fuzz.py). About 2 minutes.
fuzz-collector: $(STAMP)
	$(PY) host_tests/fuzz_collector.py --inputs 500000 --seed 1

# Every input the node and its tools take, fuzzed (config.json, secrets.json,
# MQTT packets, CBOR, COSE, outbox files, NTP answers, the monitor's stream,
# the downlink's messages): 100,000 mutated and random inputs a kind on CPython
# and 10,000 on the VM (the whole-node downlink kinds a quarter and a tenth),
# each answered (a valid object or the component's one error) within 1 s and a
# memory bound; escapes shown with their shortest input (make test runs a
# slice: host/test_fuzz_node.py). About 30 minutes, two workers at a time.
fuzz: $(STAMP)
	$(PY) host_tests/fuzz_node.py --inputs 100000 --vm-inputs 10000 --seed 1

# Benchmarks run on the VM without the simulated board, so `time` is the VM's clock.
bench: bench-outbox bench-filters bench-uplink bench-payload
bench-outbox: $(STAMP)
	MICROPYPATH=.frozen:$(CURDIR)/lib $(VENV)/bin/micropython bench/outbox.py
bench-filters: $(STAMP)
	MICROPYPATH=.frozen:$(CURDIR)/lib $(VENV)/bin/micropython bench/filters.py
bench-uplink: $(STAMP)
	$(PY) bench/uplink.py
bench-payload: $(STAMP)
	$(PETREL) vm run bench/payload.py

# The collector: readings stored/s (SQLite; PostgreSQL with 1, 2, 4 collectors
# in a group) and publish-to-commit p50/p99, beside the naive pattern (about 5 minutes).
bench-collect: $(STAMP)
	$(PY) bench/collect.py

# The long fleet run: petrel fleet-sim, 500 nodes x 48 h as fast as the broker
# takes them, into 2 collectors of one group on PostgreSQL; every reading stored
# exactly once, asserted from the database (a few minutes).
fleet-scale: $(STAMP)
	$(PY) bench/collect.py --fleet-scale --nodes 500 --hours 48

sim: $(STAMP)
	$(PETREL) sim --boots 48 $(if $(PUSH),--push-config-at $(PUSH)) $(if $(UPDATE),--update-at $(UPDATE))

clean:
	rm -rf $(VENV) build *.egg-info tools/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
