# The fake `time`: ticks wrap at 2**30 as on the ESP32, sleeps advance virtual time.
import time

import machine
import simstate
from ptest import raises

PERIOD = 1 << 30


def boot_near_wrap(ms_before_wrap):
    b = simstate.board
    b.start_ticks_ms = PERIOD - ms_before_wrap
    b.start_ticks_us = PERIOD - ms_before_wrap * 1000
    b.power_on()
    return b


def test_ticks_start_near_zero_at_each_boot():
    assert time.ticks_ms() < 5
    time.sleep_ms(1500)
    assert 1500 <= time.ticks_ms() < 1505


def test_ticks_ms_wraps_at_2_pow_30():
    boot_near_wrap(5)
    t0 = time.ticks_ms()
    assert t0 >= PERIOD - 5
    time.sleep_ms(10)
    t1 = time.ticks_ms()
    assert t1 < 10  # wrapped: numerically smaller
    assert t1 < t0
    assert time.ticks_diff(t1, t0) == 10
    assert time.ticks_diff(t0, t1) == -10


def test_ticks_us_wraps_at_2_pow_30():
    boot_near_wrap(1)
    t0 = time.ticks_us()
    time.sleep_us(2500)
    t1 = time.ticks_us()
    assert t1 < t0
    assert 2500 <= time.ticks_diff(t1, t0) <= 2502


def test_ticks_add_wraps_and_is_inverse_of_diff():
    t = PERIOD - 3
    assert time.ticks_add(t, 5) == 2
    assert time.ticks_add(2, -5) == PERIOD - 3
    for delta in (1, -1, 12345, -(PERIOD // 2) + 1, PERIOD // 2 - 1):
        assert time.ticks_diff(time.ticks_add(t, delta), t) == delta


def test_ticks_add_rejects_intervals_diff_cannot_represent():
    raises(OverflowError, time.ticks_add, 0, PERIOD // 2)
    raises(OverflowError, time.ticks_add, 0, -(PERIOD // 2))


def test_deadline_loop_across_wrap_ends_on_time():
    boot_near_wrap(50)
    deadline = time.ticks_add(time.ticks_ms(), 200)
    loops = 0
    while time.ticks_diff(deadline, time.ticks_ms()) > 0:
        time.sleep_ms(10)
        loops += 1
    assert 19 <= loops <= 21


def test_polling_the_clock_lets_time_pass():
    # a busy-wait on ticks must end: every clock read costs virtual time
    t0 = time.ticks_us()
    while time.ticks_diff(time.ticks_us(), t0) < 1000:
        pass
    assert time.ticks_diff(time.ticks_us(), t0) >= 1000


def test_sleep_advances_virtual_time_only():
    b = simstate.board
    w0 = b.world_us
    time.sleep(2)
    time.sleep_ms(250)
    time.sleep_us(30)
    assert 2250030 <= b.world_us - w0 <= 2250040


def test_epoch_is_2000_and_gmtime_matches_calendar():
    assert time.gmtime(0)[:8] == (2000, 1, 1, 0, 0, 0, 5, 1)  # a Saturday
    # 2024-02-29 12:34:56 is a Thursday, day 60 of a leap year
    secs = 24 * 365 * 86400 + 6 * 86400 + 59 * 86400 + 12 * 3600 + 34 * 60 + 56
    assert time.gmtime(secs) == (2024, 2, 29, 12, 34, 56, 3, 60)
    assert time.mktime(time.gmtime(secs)) == secs
    for s in (86399, 86400, 31535999, 31622400, 788918400, 1700000000):
        assert time.mktime(time.gmtime(s)) == s


def test_rtc_datetime_drives_time():
    rtc = machine.RTC()
    rtc.datetime((2026, 3, 1, 6, 8, 30, 0, 0))
    t = time.time()
    assert time.gmtime(t)[:6] == (2026, 3, 1, 8, 30, 0)
    time.sleep(90)
    assert time.time() - t == 90
    dt = rtc.datetime()
    assert dt[:7] == (2026, 3, 1, 6, 8, 31, 30)


def test_utime_is_the_same_fake():
    import utime

    assert utime.ticks_diff(5, PERIOD - 5) == 10
    b = simstate.board
    w0 = b.world_us
    utime.sleep_ms(7)
    assert b.world_us - w0 >= 7000


def test_ticks_cpu_counts_cpu_cycles():
    machine.freq(160000000)
    c0 = time.ticks_cpu()
    time.sleep_us(10)
    assert 1600 <= time.ticks_diff(time.ticks_cpu(), c0) <= 1800  # 160 cycles a microsecond


# ---------------------------------------------------------------- calendar (the port's timeutils)
E2000 = 946684800  # seconds from 1970-01-01 to the port's epoch


def _walk_days(first_year, last_year):
    # an independent calendar: a day at a time, the Gregorian leap rule
    y, m, d, wday, yday = first_year, 1, 1, 3, 1  # 1970-01-01 was a Thursday
    while y <= last_year:
        yield (y, m, d, wday, yday)
        leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
        dim = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m - 1]
        d, wday, yday = d + 1, (wday + 1) % 7, yday + 1
        if d > dim:
            d, m = 1, m + 1
            if m > 12:
                m, y, yday = 1, y + 1, 1


def test_every_day_from_1970_to_1999_both_ways():
    day = -E2000 // 86400
    for y, m, d, wday, yday in _walk_days(1970, 1999):
        secs = day * 86400 + 45296  # 12:34:56
        assert time.gmtime(secs) == (y, m, d, 12, 34, 56, wday, yday), (secs, time.gmtime(secs))
        assert time.localtime(secs) == time.gmtime(secs)
        assert time.mktime((y, m, d, 12, 34, 56, wday, yday)) == secs
        day += 1
    assert time.gmtime(-31622400)[:3] == (1998, 12, 31)
    assert time.gmtime(-E2000) == (1970, 1, 1, 0, 0, 0, 3, 1)


def test_dates_up_to_2099_and_the_ends_of_the_range():
    assert time.gmtime(time.mktime((2099, 12, 31, 23, 59, 59, 0, 0))) == (2099, 12, 31, 23, 59, 59, 3, 365)
    assert time.mktime((2038, 1, 19, 3, 14, 8, 0, 0)) == 2147483648 - E2000  # past 2**31 since 1970
    # the port counts 32-bit unsigned seconds since 1970: outside, it wraps (no exception)
    # (and, counting 2100 as a leap year, a day short of the true 2106-02-07)
    assert time.gmtime(-E2000 - 1)[:6] == (2106, 2, 6, 6, 28, 15)
    assert time.mktime((1969, 12, 31, 23, 59, 59, 0, 0)) == (1 << 32) - 1 - E2000


def test_mktime_normalises_like_the_port():
    def ymdhms(t):
        return time.gmtime(time.mktime(t))[:6]

    assert ymdhms((2024, 0, 1, 0, 0, 0, 0, 0)) == (2023, 12, 1, 0, 0, 0)  # month 0: December before
    assert ymdhms((2024, 13, 1, 0, 0, 0, 0, 0)) == (2025, 1, 1, 0, 0, 0)  # month 13: next January
    assert ymdhms((2024, -11, 1, 0, 0, 0, 0, 0)) == (2023, 1, 1, 0, 0, 0)
    assert ymdhms((2024, -12, 1, 0, 0, 0, 0, 0)) == (2022, 12, 1, 0, 0, 0)
    assert ymdhms((2023, 2, 29, 0, 0, 0, 0, 0)) == (2023, 3, 1, 0, 0, 0)
    assert ymdhms((2024, 3, 0, 0, 0, 0, 0, 0)) == (2024, 2, 29, 0, 0, 0)  # day 0: the last of the month before
    assert ymdhms((2024, 1, 1, 0, 0, -1, 0, 0)) == (2023, 12, 31, 23, 59, 59)
    assert ymdhms((2024, 1, 1, 25, 61, 61, 0, 0)) == (2024, 1, 2, 2, 2, 1)
    assert ymdhms((1990, 1, 1 + 10000, 0, 0, 0, 0, 0)) == (2017, 5, 19, 0, 0, 0)
    assert time.mktime([2024, 1, 1, 0, 0, 0, 0, 0, 0]) == time.mktime((2024, 1, 1, 0, 0, 0, 0, 0))  # 9 items, a list


def test_mktime_needs_a_tuple_of_8_or_9():
    for t in ((2024, 1, 1, 0, 0, 0), (2024, 1, 1, 0, 0, 0, 0), (2024, 1, 1, 0, 0, 0, 0, 0, 0, 0)):
        e = raises(TypeError, time.mktime, t)
        assert e.args[0] == "mktime needs a tuple of length 8 or 9"


def test_sleep_of_a_float_rounds_down_to_whole_milliseconds():
    b = simstate.board
    for secs, ms in ((0.0015, 1), (0.0009, 0), (0.001, 1), (0.25, 250), (1.9999, 1999), (3, 3000)):
        w0 = b.world_us
        time.sleep(secs)
        assert b.world_us - w0 == ms * 1000, (secs, b.world_us - w0)


def test_rtc_datetime_takes_exactly_8_items_and_init_has_the_hour_at_3():
    rtc = machine.RTC()
    raises(ValueError, rtc.datetime, (2026, 3, 1, 6, 8, 30, 0))
    rtc.init((2026, 3, 1, 8, 30, 15, 0, 0))  # (y, m, d, h, min, s, ?, us) on the port
    assert time.gmtime(time.time())[:6] == (2026, 3, 1, 8, 30, 15)
