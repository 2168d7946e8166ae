"""Start of one boot of the virtual board (`petrel vboard`): the VM behind a pty.

Like vmboot.py, but the VM then stays at its REPL for mpremote and the tools.
The supervisor (tools/petrel/vboard.py) passes:
  PETREL_SIM_STATE, PETREL_SIM_EVENTS, PETREL_SIM_FLASH  as for vmboot.py
  PETREL_SIM_MAIN   "1": run boot.py and main.py (a hard boot); else REPL only
                    (after a soft reset from the raw REPL, as MicroPython does)
A halt (deep sleep, reset, watchdog) is reported with the board's state, and
the supervisor ends this process at once: nothing runs after it.
"""

import json
import os
import select
import sys

import simstate
from simstate import board, Halt

import machine  # noqa: F401  (loaded before / is replaced, see vmboot.py)
import time  # noqa: F401
import network  # noqa: F401
import esp32  # noqa: F401
import ntptime  # noqa: F401
import simdev  # noqa: F401
import onewire  # noqa: F401

_events = open(os.getenv("PETREL_SIM_EVENTS"), "a")


class _Host:
    def event(self, kind, data):
        if kind == "halt":
            data["state"] = board.snapshot()
        _events.write(json.dumps([kind, data]))
        _events.write("\n")
        _events.flush()


with open(os.getenv("PETREL_SIM_STATE")) as _f:
    board.restore(json.load(_f))
board.host = _Host()


def _leaving():
    # A soft reset ends this process; the chip's RTC domain goes on (RTC memory,
    # its clock): hand the board's state to the supervisor for the next VM.
    if board.halted is None:
        _Host().event("state", board.snapshot())


sys.atexit(_leaving)

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


if os.getenv("PETREL_SIM_MAIN") == "1":
    try:
        _run("boot.py")
        _run("main.py")
    except Halt:
        while True:  # the supervisor ends the process: wait for it, in real time
            select.poll().poll(1000)
    except BaseException as e:  # main.py raised: the board drops to the REPL
        if board.halted is None:
            sys.print_exception(e)
del simstate
