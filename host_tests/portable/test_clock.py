# lib/clock: NTP with a floor, relative stamps before the clock is known.
import machine
import simstate
import time

import clock
import rtcmem
from ptest import scratch_dir

BUILD = 1764000000  # 2025-11-24: the firmware's build time
TRUE_NOW = 1767225600  # what NTP says (simstate.Board.true_unix_at_start)


def region():
    return rtcmem.Region(machine.RTC(), 1536, 64)


def ntp():
    return simstate.board.true_rtc_us() // 1000000  # seconds in the port's epoch (2000)


def test_unknown_clock_stamps_relative_then_sync_dates_them():
    c = clock.Clock(BUILD, region())
    assert not c.known()
    t0 = c.stamp()
    assert t0 < clock.RELATIVE
    time.sleep(600)
    assert c.senml_time(t0) == -600  # ten minutes ago, relative
    assert c.sync(ntp)
    assert c.known() and abs(c.unix() - (TRUE_NOW + 600)) <= 1
    assert abs(c.senml_time(t0) - TRUE_NOW) <= 1  # the early reading now has a date
    assert c.stamp() >= TRUE_NOW


def test_ntp_below_the_floor_is_refused():
    c = clock.Clock(BUILD, region())
    assert not c.sync(lambda: 100)  # 2000-01-01 00:01:40: a forged or broken answer
    assert not c.known()
    assert c.sync(ntp)
    before = c.unix()
    c.sync(lambda: (BUILD + 10) - clock.EPOCH_TO_UNIX)  # above build time, below last good
    assert c.unix() >= before


def test_known_through_deep_sleep_unknown_after_power_loss():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    c.sync(ntp)
    try:
        machine.deepsleep(60000)
    except simstate.Halt as h:
        simstate.board.after_halt(h)
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.known()
    simstate.board.power_on()  # RTC back at 2000-01-01
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert not c.known()
    assert c.floor >= TRUE_NOW  # the last known-good time survived on flash
    assert not c.sync(lambda: (BUILD + 10) - clock.EPOCH_TO_UNIX)
    assert c.sync(ntp)


def test_one_forged_answer_cannot_move_the_clock_for_good():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    year_2100 = 4102444800 - clock.EPOCH_TO_UNIX
    assert not c.sync(lambda: year_2100)  # beyond build + 30 years
    answers = [ntp() + 10 * 86400, ntp()]  # a forged step, then the truth
    assert not c.sync(lambda: answers.pop(0))  # the two disagree: refused
    assert not c.known() and c.floor == BUILD
    assert c.sync(ntp)  # two agreeing answers
    assert abs(c.unix() - TRUE_NOW) < 5
    late = [ntp() + 5 * 86400, ntp() + 5 * 86400]  # a consistent liar still needs two answers
    assert c.sync(lambda: late.pop(0))


def test_unix_ms_is_the_rtc_in_unix_milliseconds():
    # 2026-01-01 00:00:00 UTC set on the RTC (the ESP32 counts from 2000)
    machine.RTC().datetime((2026, 1, 1, 3, 0, 0, 0, 0))
    time.sleep_ms(1500)
    ms = clock.unix_ms()
    assert 1767225600000 + 1500 <= ms < 1767225600000 + 1600
    assert ms // 1000 == clock.Clock(BUILD).unix()
