"""One boot of the simulated ESP32 on the MicroPython VM.

The host's boot runner starts a fresh VM process per boot (as a real wake is a
fresh start) with:
  PETREL_SIM_STATE   JSON file with the board snapshot to boot from
  PETREL_SIM_EVENTS  file this boot appends its events to (JSON lines)
  PETREL_SIM_FLASH   folder that is the board's flash, mounted as /
  PETREL_SIM_SETUP   optional module whose setup(board) wires devices
Then it runs boot.py and main.py from the flash as the ESP32 port does, and
reports how the boot ended.
"""

import json
import os
import sys

import simstate
from simstate import board, Halt

# Everything the firmware may import from the board must be loaded before the
# flash folder replaces / (the sim's own folder is unreachable after that).
import machine  # noqa: F401
import time  # noqa: F401
import utime  # noqa: F401
import network  # noqa: F401
import esp32  # noqa: F401
import ntptime  # noqa: F401
import simdev  # noqa: F401

_events = open(os.getenv("PETREL_SIM_EVENTS"), "a")


class _Host:
    def event(self, kind, data):
        _events.write(json.dumps([kind, data]))
        _events.write("\n")
        _events.flush()


with open(os.getenv("PETREL_SIM_STATE")) as f:
    board.restore(json.load(f))
board.host = _Host()
_setup = os.getenv("PETREL_SIM_SETUP")
if _setup:
    __import__(_setup).setup(board)

os.umount("/")
os.mount(os.VfsPosix(os.getenv("PETREL_SIM_FLASH")), "/")
os.chdir("/")
sys.path.clear()
sys.path.append("")
sys.path.append(".frozen")
sys.path.append("/lib")


def _run(name):
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return
    exec(compile(src, name, "exec"), {"__name__": "__main__", "__file__": name})


_end = "repl"
try:
    _run("boot.py")
    _run("main.py")
except Halt:
    _end = "halt"
except BaseException as e:  # noqa: B036  main.py raised: the ESP32 drops to the REPL
    if board.halted is not None:
        _end = "halt"  # a Halt that firmware caught and wrapped
    else:
        sys.print_exception(e)
if board.halted is not None:
    _end = "halt"
_Host().event("end", {"how": _end, "state": board.snapshot(),
                      "wdt_deadline": board.wdt_deadline, "world_us": board.world_us})
_events.close()
del simstate
