"""Start of one boot of the virtual board (`petrel vboard`): the VM behind a pty.

Like vmboot.py, but the VM then stays at its REPL for mpremote and the tools.
Besides simboot.py's environment, PETREL_SIM_MAIN "1" runs boot.py and main.py
(a hard boot); otherwise REPL only, as after a soft reset from the raw REPL.
A halt (deep sleep, reset, watchdog) is reported with the board's state, and
the supervisor ends this process at once: nothing runs after it.
PETREL_SIM_AWAKE_SCALE (real seconds per virtual second, 0: none): the
firmware's sleeps also wait in real time, so that what it times while awake
(the break-in window after a reset) is there for a tool on the pty to reach.
"""

import os
import select
import sys

import simboot
from simstate import board, Halt

simboot.start()

_scale = float(os.getenv("PETREL_SIM_AWAKE_SCALE") or 0)
if _scale > 0:
    import time

    _poller = select.poll()  # nothing registered: poll(ms) is a plain real-time wait

    def _paced(sleep, per_ms):
        def paced(n):
            ms = int(n * per_ms * _scale)
            if ms > 0:
                _poller.poll(ms)
            sleep(n)

        return paced

    time.sleep_ms = _paced(time.sleep_ms, 1)
    time.sleep_us = _paced(time.sleep_us, 0.001)
    time.sleep = _paced(time.sleep, 1000)


def _leaving():
    # A soft reset ends this process; the chip's RTC domain goes on (RTC memory,
    # its clock): hand the board's state to the supervisor for the next VM.
    if board.halted is None:
        simboot.event("state", board.snapshot())


sys.atexit(_leaving)

if os.getenv("PETREL_SIM_MAIN") == "1":
    try:
        simboot.run("boot.py")
        simboot.run("main.py")
    except Halt:
        while True:  # the supervisor ends the process: wait for it, in real time
            select.poll().poll(1000)
    except BaseException as e:  # main.py raised: the board drops to the REPL
        if board.halted is None:
            sys.print_exception(e)
