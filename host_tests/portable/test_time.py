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
