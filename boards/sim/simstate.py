"""The simulated ESP32: one virtual clock and the state that does, or does not,
survive deep sleep, reset and power loss.

The fake `machine`, `time`, `network`, `esp32` and `ntptime` modules all read and
write the single `board` (made in simboard.py), so the same files serve CPython and
the MicroPython VM. Written in the subset of Python that MicroPython runs.

This module is the board's public face: the names tests, tools and the fakes
use, gathered from where they live:
  simboard    Board (what survives what) and the shared `board`, reset_world()
  simclock    halts, boots and the clock; Halt, reset causes, wake reasons
  simpins     scheduled events and pin levels
  simledger   the energy ledger by phase (PHASES)
  simsave     snapshot()/restore()
"""

from simclock import (  # noqa: F401
    TICKS_PERIOD,
    TICKS_MASK,
    TICKS_HALF,
    RTC_MEMORY_MAX,
    EPOCH_2000_UNIX,
    PWRON_RESET,
    HARD_RESET,
    WDT_RESET,
    DEEPSLEEP_RESET,
    SOFT_RESET,
    WAKE_UNDEFINED,
    EXT0_WAKE,
    EXT1_WAKE,
    TIMER_WAKE,
    ROM_RESET,
    Halt,
)
from simledger import PHASES  # noqa: F401
from simboard import Board, board, reset_world  # noqa: F401

# Load the fake clock with the board, so that even `import utime` before any
# `import time` finds the fake on the VM. (time.py takes the board from
# simboard, not from here, so this is no cycle.)
import time  # noqa: E402,F401
