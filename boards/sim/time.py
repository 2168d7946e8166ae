"""Fake `time`: MicroPython's time API on the simulated board's virtual clock.

ticks_ms()/ticks_us() restart at each boot and wrap at 2**30 as on the ESP32,
so wrap-around bugs show up; sleeps advance virtual time (firing timers and the
watchdog on the way); time() counts seconds since 2000-01-01 from the RTC.
"""

import sys

from simstate import board, TICKS_MASK, TICKS_HALF
import machine

if sys.implementation.name == "micropython":
    # The VM resolves `utime` to its built-in time before looking at the path;
    # registering this module under that name gives old firmware the fake too.
    sys.modules["utime"] = sys.modules["time"]


def ticks_ms():
    return board.ticks_ms()


def ticks_us():
    return board.ticks_us()


def ticks_cpu():
    # the ESP32's CPU cycle counter, at the board's clock frequency
    return (board.since_boot_us() * (board.cpu_hz // 1000000)) & TICKS_MASK


def ticks_add(ticks, delta):
    # Same bound as MicroPython: keeps ticks_diff(ticks_add(t, d), t) == d.
    if delta <= -TICKS_HALF or delta >= TICKS_HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & TICKS_MASK


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + TICKS_HALF) & TICKS_MASK) - TICKS_HALF


def sleep_ms(ms):
    if ms > 0:
        board.advance(int(ms) * 1000)
    else:
        board.alive()


def sleep_us(us):
    if us > 0:
        board.advance(int(us))
    else:
        board.alive()


def sleep(seconds):
    if seconds > 0:
        board.advance(int(seconds * 1000000))
    else:
        board.alive()


def time():
    return board.rtc_us() // 1000000


def time_ns():
    return board.rtc_us() * 1000


def gmtime(secs=None):
    if secs is None:
        secs = time()
    return machine.civil_from_seconds(int(secs))


localtime = gmtime


def mktime(t):
    return (machine.days_since_2000(t[0], t[1], t[2]) * 86400
            + t[3] * 3600 + t[4] * 60 + t[5])
