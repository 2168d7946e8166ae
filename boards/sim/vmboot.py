"""One boot of the simulated ESP32 on the MicroPython VM, for the boot runner
(tools/petrel/bootrun.py), which starts a fresh VM process per boot as a real
wake is a fresh start. See simboot.py for the environment it is given.
Runs boot.py and main.py, then reports how the boot ended."""

import sys

import simboot
from simstate import board, Halt

REPL_IDLE_US = 3 * 3600 * 1000000  # longer than any hold (2 h at most)
simboot.start()
_end = "repl"
try:
    simboot.run("boot.py")
    simboot.run("main.py")
    # at the REPL with timers armed (a maintenance hold): time passes, they run
    board.idle_at_repl(REPL_IDLE_US)
except Halt:
    _end = "halt"
except BaseException as e:  # noqa: B036  main.py raised: the ESP32 drops to the REPL
    if board.halted is None:
        sys.print_exception(e)
if board.halted is not None:
    _end = "halt"  # also a Halt that the firmware caught and swallowed
simboot.keep_flash()  # the chip keeps what was written, even if no halt came
simboot.event("end", {"how": _end, "state": board.snapshot(),
                      "wdt_deadline": board.wdt_deadline, "world_us": board.world_us})
