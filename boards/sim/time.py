"""Fake `time`: MicroPython's time API on the simulated board's virtual clock.

ticks_ms()/ticks_us() restart at each boot and wrap at 2**30 as on the ESP32,
so wrap-around bugs show up; sleeps advance virtual time (firing timers and the
watchdog on the way); time() counts seconds since 2000-01-01 from the RTC.
"""

import struct
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
    # The port: mp_hal_delay_ms((mp_uint_t)(1000 * mp_obj_get_float(s))) in
    # single-precision floats, so a fraction of a millisecond is dropped.
    ms = int(_f32(_f32(seconds) * 1000))
    if ms > 0:
        board.advance(ms * 1000)
    else:
        board.alive()


def _f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def time():
    return board.rtc_us() // 1000000


def time_ns():
    return board.rtc_us() * 1000


# ------------------------------------------------------------------ calendar
# shared/timeutils/timeutils.c as the ESP32 port builds it: 32-bit unsigned
# seconds since 1970 and a leap year every 4 years, so dates are right from
# 1970 to 2099 and wrap outside (as on the chip), never an exception.
_M32 = 0xFFFFFFFF
_EPOCH_1970 = 946684800  # seconds from 1970-01-01 to the port's epoch, 2000-01-01
_DAYS_BEFORE = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365)
_FROM_MARCH = (31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 29)
_DAYS_4Y = 365 * 4 + 1


def _mdays(year, month):
    n = _DAYS_BEFORE[month] - _DAYS_BEFORE[month - 1]
    return n + 1 if month == 2 and year % 4 == 0 else n


def _yday(year, month, mday):
    n = _DAYS_BEFORE[month - 1] + mday
    return n + 1 if month >= 3 and year % 4 == 0 else n


def _int(v):
    if not isinstance(v, int):  # mp_obj_get_int: no floats
        raise TypeError("can't convert %s to int" % type(v).__name__)
    return v


def gmtime(secs=None):
    """Seconds since 2000-01-01 -> (year, month, mday, hour, min, sec, weekday, yday)."""
    if secs is None:
        secs = time()
    s = (int(secs) + _EPOCH_1970) & _M32
    days, s = divmod(s, 86400)
    wday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    days += 365 + 366 - (31 + 29)  # counted from 1968-03-01, after a leap day
    q = days // _DAYS_4Y
    days -= q * _DAYS_4Y
    years = min(days // 365, 3)
    days -= years * 365
    year = 1968 + years + 4 * q
    month = 0
    while _FROM_MARCH[month] <= days:
        days -= _FROM_MARCH[month]
        month += 1
    month += 2
    if month >= 12:
        month -= 12
        year += 1
    month += 1
    return (year, month, days + 1, s // 3600, s // 60 % 60, s % 60, wday, _yday(year, month, days + 1))


localtime = gmtime


def mktime(t):
    """The inverse of gmtime(), normalising out-of-range fields as the port does
    (month 0 is December of the year before, day 0 the last of the month before)."""
    if len(t) < 8 or len(t) > 9:
        raise TypeError("mktime needs a tuple of length 8 or 9")
    year, month, mday = _int(t[0]), _int(t[1]), _int(t[2])
    hours, minutes, seconds = _int(t[3]), _int(t[4]), _int(t[5])
    minutes += seconds // 60
    seconds %= 60
    hours += minutes // 60
    minutes %= 60
    mday += hours // 24
    hours %= 24
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    # 48 months are 1461 days from any month on: skip whole ones for huge days
    if mday < 1:
        k = (28 - mday) // _DAYS_4Y
        mday += k * _DAYS_4Y
        year -= 4 * k
    elif mday > _DAYS_4Y:
        k = (mday - 1) // _DAYS_4Y
        mday -= k * _DAYS_4Y
        year += 4 * k
    while mday < 1:
        month -= 1
        if month == 0:
            month = 12
            year -= 1
        mday += _mdays(year, month)
    while mday > _mdays(year, month):
        mday -= _mdays(year, month)
        month += 1
        if month == 13:
            month = 1
            year += 1
    return seconds_since_2000(year, month, mday, hours, minutes, seconds)


def seconds_since_2000(year, month, mday, hour, minute, second):
    """timeutils_seconds_since_2000: no normalisation, 32-bit unsigned sums (what
    machine.RTC.datetime() sets the clock with)."""
    days = (year - 1970) * 365 + ((year - 1969) & _M32) // 4 + _yday(year, month, mday) - 1
    return ((days * 86400 + hour * 3600 + minute * 60 + second) & _M32) - _EPOCH_1970
