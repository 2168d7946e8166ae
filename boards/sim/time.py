"""Fake `time`: MicroPython's time API on the simulated board's virtual clock.

ticks_ms()/ticks_us() restart at each boot and wrap at 2**30 as on the ESP32,
so wrap-around bugs show up; sleeps advance virtual time (firing timers and the
watchdog on the way); time() counts seconds since 2000-01-01 from the RTC.
"""

import sys

# the board from simboard, not simstate: simstate loads this module
from simboard import board
from simclock import TICKS_MASK, TICKS_HALF

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


# ------------------------------------------------------------------ calendar
# Seconds since 2000-01-01 and back, also for machine.RTC.datetime().
_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _days_since_2000(year, month, day):
    days = (year - 2000) * 365 + (year - 1997) // 4 - (year - 1901) // 100 + (year - 1601) // 400
    days += _DAYS_BEFORE_MONTH[month - 1] + day - 1
    if month > 2 and _leap(year):
        days += 1
    return days


def gmtime(secs=None):
    """Seconds since 2000-01-01 -> (year, month, mday, hour, min, sec, weekday, yday)."""
    if secs is None:
        secs = time()
    days, rem = divmod(int(secs), 86400)
    weekday = (days + 5) % 7  # 2000-01-01 was a Saturday; Monday is 0
    year = 2000 + days // 366
    while _days_since_2000(year + 1, 1, 1) <= days:
        year += 1
    yday = days - _days_since_2000(year, 1, 1)
    month = 12
    while _days_since_2000(year, month, 1) > days:
        month -= 1
    mday = days - _days_since_2000(year, month, 1) + 1
    return (year, month, mday, rem // 3600, (rem // 60) % 60, rem % 60, weekday, yday + 1)


localtime = gmtime


def mktime(t):
    return (_days_since_2000(t[0], t[1], t[2]) * 86400
            + t[3] * 3600 + t[4] * 60 + t[5])
