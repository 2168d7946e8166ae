"""The break-in window: a way to the REPL on a node that deep-sleeps.

After a power-on or a hard reset (the EN button, or a tool pulsing EN through
the USB-UART's RTS line) main.py calls window() before the application is
imported and before any watchdog is armed. For WINDOW_MS it reads the UART
(sys.stdin) for a Ctrl-C; one arriving ends main.py at the REPL without a
wake, where mpremote and `petrel deploy` work. Timer and pin wakes never come
here: the window costs them nothing.

2000 ms: the tools reset the board and send Ctrl-C every 20 ms, so they hit
any window at all; a person pressing EN and then Ctrl-C in a terminal needs
a second or more to see the line and react. On battery a power-on is rare (a
new battery, a brownout), and 2 s at 40 mA is 0.022 mAh. A whole number of
seconds also keeps the wake's phase against the clock's whole-second NTP
time as it was without the window.

The wait is in slices of time.sleep_ms, so the simulated board counts the
window in virtual time. Ctrl-C is read as a byte (micropython.kbd_intr(-1)):
a KeyboardInterrupt raised anyway (one already pending) counts as a break-in.
"""

import sys
import time

import micropython

WINDOW_MS = 2000
SLICE_MS = 20
READS_PER_SLICE = 64  # more than a UART at 115200 baud gets in a slice (46 bytes)
CTRL_C = "\x03"


def _poller(stream):
    """A poll object on the console, or None when it cannot be polled (no
    console: a host run with stdin captured)."""
    try:
        import select

        p = select.poll()
        p.register(stream, select.POLLIN)
        return p
    except Exception:  # noqa: BLE001  no console to listen to: the window just passes
        return None


def window(ms=WINDOW_MS, stream=None, poller=None):
    """Listen for Ctrl-C for ms; True when one came (stay at the REPL).
    stream, poller: the console and a poll object on it (tests give their own)."""
    stream = stream or sys.stdin
    if ms % 1000:
        print("I %06d main: press Ctrl-C within %d.%d s for the REPL"
              % (time.ticks_ms(), ms // 1000, ms % 1000 // 100))
    else:
        print("I %06d main: press Ctrl-C within %d s for the REPL" % (time.ticks_ms(), ms // 1000))
    poller = poller or _poller(stream)
    micropython.kbd_intr(-1)
    try:
        start = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), start) < ms:
            n = 0
            while poller is not None and n < READS_PER_SLICE and poller.poll(0):
                n += 1  # a flood of noise cannot hold the window open
                c = stream.read(1)
                if not c:  # end of input (no console): stop reading, wait on
                    poller = None
                elif c == CTRL_C:
                    return _broke_in()
            time.sleep_ms(SLICE_MS)
    except KeyboardInterrupt:
        return _broke_in()
    finally:
        micropython.kbd_intr(3)
    return False


def _broke_in():
    print("I %06d main: break-in: at the REPL, no wake run, no watchdog; "
          "machine.reset() resumes" % time.ticks_ms())
    return True
