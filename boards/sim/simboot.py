"""What every boot of the simulated board on the VM does before the firmware
runs (vmboot.py for the boot runner, vboardboot.py for the virtual board):
take the board's state from the host, mount the flash folder as /, and run
boot.py / main.py as the ESP32 port does. Environment:
  PETREL_SIM_STATE   JSON file with the board snapshot to boot from
  PETREL_SIM_EVENTS  file the boot appends its events to (JSON lines)
  PETREL_SIM_FLASH   folder that is the board's flash
"""

import json
import os
import sys

from simstate import board

# Everything the firmware may import from the board must be loaded before the
# flash folder replaces / (the sim's own folder is unreachable after that).
import machine  # noqa: F401
import time  # noqa: F401
import network  # noqa: F401
import esp32  # noqa: F401
import ntptime  # noqa: F401
import simdev  # noqa: F401
import onewire  # noqa: F401
import socket  # noqa: F401  the board's lwip over host sockets

_events = open(os.getenv("PETREL_SIM_EVENTS"), "a")


def event(kind, data):
    _events.write(json.dumps([kind, data]))
    _events.write("\n")
    _events.flush()


class Host:
    """Where the board reports NVS commits and halts (with its state on a halt,
    so that whoever ends this process can carry the board on)."""

    def event(self, kind, data):
        if kind == "halt":
            data["state"] = board.snapshot()
        event(kind, data)


def start():
    with open(os.getenv("PETREL_SIM_STATE")) as f:
        board.restore(json.load(f))
    board.host = Host()
    setup = os.getenv("PETREL_SIM_SETUP")
    if setup:  # wire the device models (and faults) for this boot, as the CPython runner does
        __import__(setup).setup(board)
    os.umount("/")
    os.mount(os.VfsPosix(os.getenv("PETREL_SIM_FLASH")), "/")
    os.chdir("/")
    sys.path.clear()
    sys.path.append("")
    sys.path.append(".frozen")
    sys.path.append("/lib")


def run(name):
    """Execute a file from the flash as __main__, if it is there."""
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return
    exec(compile(src, name, "exec"), {"__name__": "__main__", "__file__": name})
