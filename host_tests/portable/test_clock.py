# lib/clock: NTP with a floor, relative stamps before the clock is known, and
# every reading dated right or undated across power cuts.
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
    late = [ntp() + 5 * 86400, ntp() + 5 * 86400]  # a consistent liar, just after a sync
    c.sync(lambda: late.pop(0))
    assert abs(c.unix() - TRUE_NOW) < 5 and c.refused == 3  # the RTC says seconds have gone by


def test_unix_ms_is_the_rtc_in_unix_milliseconds():
    # 2026-01-01 00:00:00 UTC set on the RTC (the ESP32 counts from 2000)
    machine.RTC().datetime((2026, 1, 1, 3, 0, 0, 0, 0))
    time.sleep_ms(1500)
    ms = clock.unix_ms()
    assert 1767225600000 + 1500 <= ms < 1767225600000 + 1600
    assert ms // 1000 == clock.Clock(BUILD).unix()


def true_unix():
    return ntp() + clock.EPOCH_TO_UNIX


def power_cut(path):
    """The battery out and back: RTC time and memory gone, flash kept ->
    the clock a boot makes then."""
    simstate.board.power_on()
    return clock.Clock(BUILD, region(), path + "/clock")


def writes():
    """Count the files the clock opens for writing (its flash writes)."""
    n = [0]

    def counting(name, mode="r"):
        if "w" in mode:
            n[0] += 1
        return open(name, mode)

    clock.open = counting
    return n


def test_a_power_cut_before_the_sync_leaves_the_earlier_readings_undated():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    c.begin(1)
    time.sleep(5000)
    old = c.stamp()  # RTC 5000 s after the first power-on
    c = power_cut(path)
    c.begin(40)  # the outbox's next number after the cut
    time.sleep(100)
    new = c.stamp()
    time.sleep(10)
    # not t = +4900 (the future), not 5000 s late after the sync: undated
    assert c.senml_time(old, 1) is None and c.senml_time(old, 39) is None
    assert c.senml_time(new, 40) == -10  # this power-on, clock unknown: relative
    assert c.senml_time(new) == -10  # no number: this power-on
    assert c.sync(ntp)
    assert abs(c.senml_time(new, 40) - (true_unix() - 10)) <= 1  # dated on the node
    assert c.senml_time(old, 1) is None
    c = power_cut(path)  # and still after one more power-on
    c.begin(60)
    assert c.senml_time(old, 1) is None
    assert c.senml_time(new, 40) is not None


def test_an_earlier_power_on_that_learnt_its_offset_still_dates_its_readings():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    c.begin(7)
    time.sleep(600)
    early = c.stamp()  # before the sync
    taken = true_unix()
    time.sleep(600)
    assert c.sync(ntp)
    later = c.stamp()  # after it: Unix time already
    c = power_cut(path)
    c.begin(20)
    assert not c.known()
    assert abs(c.senml_time(early, 7) - taken) <= 1  # the old power-on's offset, from flash
    assert c.senml_time(later, 8) == later
    assert c.senml_time(early, 6) is None  # a number before the history: no power-on known
    time.sleep(30)
    assert c.senml_time(c.stamp(), 20) == 0  # this power-on's: relative, taken now


def test_a_stamp_that_cannot_be_of_this_power_on_is_undated_not_misdated():
    c = clock.Clock(BUILD, region())
    c.begin(1)
    time.sleep(100)
    assert c.senml_time(5000, 3) is None  # 4900 s in this RTC's future
    assert c.senml_time(50, 3) == -50


def test_the_history_keeps_the_last_power_ons_only():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    stamps = []
    for k in range(clock.HISTORY):  # power-ons that each learnt the clock
        c.begin(100 * k + 1)
        time.sleep(60)
        stamps.append((c.stamp(), 100 * k + 1, true_unix()))
        time.sleep(60)
        assert c.sync(ntp)
        c = power_cut(path)
    c.begin(100 * clock.HISTORY + 1)  # this one makes HISTORY: the first is forgotten
    dated = [c.senml_time(s, seq) for s, seq, _ in stamps]
    assert dated[0] is None, dated
    for k in range(1, clock.HISTORY):
        assert abs(dated[k] - stamps[k][2]) <= 1, (k, dated)


def test_flash_is_written_at_a_power_on_and_at_its_sync_not_at_every_wake():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    n = writes()
    try:
        c.begin(1)
        assert n[0] == 1  # the power-on's first number
        for _ in range(5):  # wakes of the same power-on, clock unknown
            time.sleep(300)
            c = clock.Clock(BUILD, region(), path + "/clock")
            c.begin(2)
            c.stamp()
        assert n[0] == 1
        assert c.sync(ntp)
        assert n[0] == 2  # its offset (and the known-good time)
        for _ in range(5):  # wakes, each with a sync: RTC memory only
            time.sleep(300)
            c = clock.Clock(BUILD, region(), path + "/clock")
            c.begin(3)
            assert c.sync(ntp)
        assert n[0] == 2
    finally:
        del clock.open


def test_a_failed_write_is_tried_again_at_the_next_wake():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/nowhere/clock")  # no such folder: writes fail
    c.begin(1)
    assert not c.kept and c.first == 1
    c = clock.Clock(BUILD, region(), path + "/nowhere/clock")
    assert c.first == 1 and not c.kept  # RTC memory remembers it is owed
    import os

    os.mkdir(path + "/nowhere")
    c.begin(5)
    assert c.kept and c.first == 1
    c = power_cut(path + "/nowhere")
    c.begin(9)
    assert [p[0] for p in c.earlier] == [1]


def test_a_damaged_or_old_file_gives_what_it_can():
    path, flash = scratch_dir()
    import struct

    with open(path + "/clock", "wb") as f:  # the format before the history: the time alone
        f.write(struct.pack("<II", TRUE_NOW, TRUE_NOW ^ 0x5A5A5A5A))
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.floor == TRUE_NOW and c.earlier == []
    c.begin(1)
    assert c.sync(ntp)
    with open(path + "/clock", "rb") as f:
        raw = bytearray(f.read())
    raw[6] ^= 1  # a flipped bit: the CRC refuses the file
    with open(path + "/clock", "wb") as f:
        f.write(raw)
    c = power_cut(path)
    assert c.floor == BUILD and c.earlier == []
    c.begin(2)
    assert c.senml_time(100, 1) is None  # no history: undated


YEAR = 365 * 86400


def deep_sleep(s):
    try:
        machine.deepsleep(s * 1000)
    except simstate.Halt as h:
        simstate.board.after_halt(h)


def at(unix):
    """An NTP answer (port's epoch) saying unix."""
    return lambda: unix - clock.EPOCH_TO_UNIX


def test_forged_answers_decades_ahead_are_refused_once_the_rtc_has_run_since_a_sync():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.sync(ntp) and c.refused == 0
    deep_sleep(3600)
    c = clock.Clock(BUILD, region(), path + "/clock")  # the next wake
    for ppm in (None, 20000):  # drift unknown, learnt
        c.sync(at(TRUE_NOW + 20 * YEAR), ppm)  # answered twice, as a forger does
    assert c.refused == 2
    assert abs(c.unix() - (TRUE_NOW + 3600)) <= 2  # the clock did not move
    simstate.board.power_on()
    assert clock.Clock(BUILD, region(), path + "/clock").floor < TRUE_NOW + YEAR  # nor the floor on flash
    assert c.sync(ntp) and c.refused == 2


def test_small_true_corrections_are_accepted_within_the_learnt_drift_and_refused_beyond_it():
    simstate.board.sleep_drift_ppm = 20000  # the RTC falls 2 % behind in deep sleep
    c = clock.Clock(BUILD, region())
    assert c.sync(ntp)
    deep_sleep(3600)  # 72 s behind
    c = clock.Clock(BUILD, region())
    assert abs(ntp() + clock.EPOCH_TO_UNIX - c.unix() - 72) <= 1
    c.sync(ntp, -20000)  # a learnt drift of the wrong sign: 144 s off its prediction, bound 23 s
    assert c.refused == 1 and c.unix() < ntp() + clock.EPOCH_TO_UNIX - 60
    assert c.sync(ntp, 20000) and c.refused == 1  # the drift it learnt: set
    assert abs(c.unix() - (ntp() + clock.EPOCH_TO_UNIX)) <= 1
    deep_sleep(3600)
    c = clock.Clock(BUILD, region())
    assert c.sync(ntp) and c.refused == 0  # drift not learnt: 72 s is within 10 % of an hour
    assert abs(c.unix() - (ntp() + clock.EPOCH_TO_UNIX)) <= 1


def test_the_drift_bound_edge():
    c = clock.Clock(BUILD, region())
    assert c.sync(at(TRUE_NOW))
    deep_sleep(100000)  # no drift on the board: the RTC says 100000 s went by
    for ppm, bound in ((None, 10000 + clock.SLACK_S), (10000, 500 + clock.SLACK_S)):
        c = clock.Clock(BUILD, region())
        now = c.unix()
        drift = (now - c.floor) * (ppm or 0) // 1000000  # what the learnt drift predicts: 1000 s
        n = c.refused
        c.sync(at(now + drift + bound + 2), ppm)  # beyond (a second of margin for the RTC's own tick)
        c.sync(at(now + drift - bound - 2), ppm)
        assert c.refused == n + 2 and c.unix() - now <= 1
        assert c.sync(at(now + drift + bound - 1), ppm)  # inside: set
        assert c.refused == n + 2 and abs(c.unix() - (now + drift + bound)) <= 2
        deep_sleep(100000)


def test_after_a_power_on_there_is_no_elapsed_time_and_the_first_sync_keeps_the_old_rules():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.sync(ntp)
    simstate.board.power_on()  # the RTC restarts at 2000: how long it was off, nothing says
    time.sleep(90 * 86400)  # off for three months
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert not c.known()
    assert c.sync(ntp) and c.refused == 0  # 90 days past the floor: accepted (two agreeing answers)
    assert abs(c.unix() - (TRUE_NOW + 90 * 86400)) <= 2


def test_a_node_that_slept_ten_days_is_bounded_by_what_its_rtc_measured():
    simstate.board.sleep_drift_ppm = 20000
    c = clock.Clock(BUILD, region())
    assert c.sync(ntp)
    deep_sleep(10 * 86400)  # the RTC falls 4.8 h behind
    c = clock.Clock(BUILD, region())
    c.sync(at(c.unix() + 3 * 86400))  # 3 days: more than 10 % of what the RTC counted
    c.sync(at(c.unix() + YEAR))
    assert c.refused == 2
    assert c.sync(ntp, 20000) and c.refused == 2  # the true time, by the learnt drift
    assert abs(c.unix() - (ntp() + clock.EPOCH_TO_UNIX)) <= 1


def test_a_power_on_learning_its_offset_after_2038_keeps_and_uses_it():
    path, flash = scratch_dir()
    y2040 = 2208988800  # 2040-01-01: unix - RTC seconds above 2**31
    c = clock.Clock(BUILD, region(), path + "/clock")
    c.begin(10)
    t0 = c.stamp()  # relative: seconds since power-on
    assert c.sync(at(y2040))
    dated = c.senml_time(t0, 10)
    assert abs(dated - y2040) <= 1
    c = clock.Clock(BUILD, region(), path + "/clock")  # from RTC memory
    assert c.senml_time(t0, 10) == dated
    simstate.board.power_on()
    c = clock.Clock(BUILD, region(), path + "/clock")  # an earlier power-on now, from flash
    c.begin(20)
    assert c.senml_time(t0, 10) == dated


def test_a_kept_time_beyond_build_plus_30_years_is_ignored_not_a_floor_for_good():
    import struct
    from binascii import crc32

    path, flash = scratch_dir()
    body = struct.pack("<IB", 4000000000, 0)  # 2096: a crafted (CRC-valid) known-good time
    with open(path + "/clock", "wb") as f:
        f.write(body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.floor == BUILD
    assert c.sync(ntp) and c.refused == 0  # the true time is still taken
    assert abs(c.unix() - TRUE_NOW) < 5


def answers(*seq):
    """An ntp_time giving these answers (Unix seconds, or anything) in turn."""
    it = iter(seq)

    def ntp_time():
        a = next(it)
        return a - clock.EPOCH_TO_UNIX if isinstance(a, int) else a

    return ntp_time


def test_an_answer_that_is_not_an_int_is_refused_and_counted_never_raised():
    # ntptime gives an int; a broken one gave inf/NaN/floats, which escaped
    # sync (OverflowError, ValueError) at %d, at the drift check and at gmtime
    path, flash = scratch_dir()
    odd = (float("inf"), float("-inf"), float("nan"), TRUE_NOW + 0.5, 1e300, -1e300, None, "1767225600")
    for synced in (False, True):
        c = clock.Clock(BUILD, region(), path + "/clock")
        if synced:
            assert c.sync(ntp)
            deep_sleep(3600)
            c = clock.Clock(BUILD, region(), path + "/clock")
        now, floor = c.unix(), c.floor
        for a in odd:
            for second in (TRUE_NOW, float("nan")):
                n = c.refused
                assert c.sync(answers(a, second)) is synced
                assert c.refused == n + 1
        assert c.floor == floor and c.unix() - now <= 1  # neither the clock nor the floor moved
        assert c.sync(ntp)  # the true time is still taken


def test_a_nan_first_answer_does_not_let_an_unbounded_second_answer_through():
    # NaN passed every bound (each comparison False), then abs(t2 - nan) > 5
    # was False too: the second answer set the clock and the floor unchecked
    path, flash = scratch_dir()
    for second in (0, 4102444800, 1 << 32, 10 ** 30):  # 1970, 2100, 2106, far beyond
        c = clock.Clock(BUILD, region(), path + "/clock")
        assert not c.sync(answers(float("nan"), second))
        assert c.floor == BUILD and not c.known()
    simstate.board.power_on()
    assert clock.Clock(BUILD, region(), path + "/clock").floor == BUILD  # nothing went to flash


def test_the_second_answer_is_held_to_the_same_bounds_as_the_first():
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.sync(at(TRUE_NOW))
    simstate.board.power_on()  # the floor TRUE_NOW is kept on flash, the RTC restarts
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.floor == TRUE_NOW
    # the first answer is on the floor, the second agrees within 5 s but lies below it
    assert not c.sync(answers(TRUE_NOW, TRUE_NOW - 3)) and c.refused == 1
    assert c.floor == TRUE_NOW and not c.known()
    top = BUILD + clock.MAX_AHEAD  # and at the other end: 30 years from build time
    assert not c.sync(answers(top, top + 3)) and c.refused == 2
    assert c.floor == TRUE_NOW


def test_huge_integer_answers_are_refused_not_printed_whole():
    c = clock.Clock(BUILD, region())
    for a in (10 ** 30, -(10 ** 30), 1 << 64, 10 ** 400):
        n = c.refused
        assert not c.sync(answers(a, a))
        assert c.refused == n + 1
    assert c.floor == BUILD
    assert "beyond 64 bits" in clock._shown(10 ** 400) and clock._shown(-5) == "-5"


# ------------------------------------------------------ authenticated time
def true_ms():
    return TRUE_NOW * 1000 + (simstate.board.true_rtc_us() // 1000 - (TRUE_NOW - clock.EPOCH_TO_UNIX) * 1000)


def test_authenticated_time_undoes_a_forged_power_on_sync_and_lowers_the_floor():
    # after a power-on two agreeing forged answers set the clock 20 years
    # ahead (nothing to compare them with); the fleet side's authenticated
    # time then puts it back, floor and flash included, and dates this
    # power-on's relative readings right
    path, flash = scratch_dir()
    c = clock.Clock(BUILD, region(), path + "/clock")
    c.begin(1)
    t0 = c.stamp()  # relative
    time.sleep(60)
    ahead = 20 * 365 * 86400
    assert c.sync(lambda: ntp() + ahead)
    assert c.unix() > TRUE_NOW + ahead - 100 and c.floor > TRUE_NOW + ahead - 100
    c.sync(ntp)  # the true time is now "below the floor": refused
    assert c.refused == 1 and c.unix() > TRUE_NOW + ahead - 100
    now = true_ms()
    assert c.trusted(now - 20, now + 80)  # answered within 100 ms of the request
    assert abs(c.unix() - now // 1000) <= 1 and c.floor <= now // 1000
    assert c.unc == 1  # 50 ms either side, in whole seconds, rounded up
    assert abs(c.senml_time(t0) - (now // 1000 - 60)) <= 1  # the forged offset undone
    simstate.board.power_on()  # the forged floor on flash was rewritten: true time taken again
    c = clock.Clock(BUILD, region(), path + "/clock")
    assert c.floor < TRUE_NOW + ahead - 100
    assert c.sync(ntp)


def test_ntp_may_refine_within_the_authenticated_interval_and_not_past_it():
    c = clock.Clock(BUILD, region())
    now = true_ms()
    assert c.trusted(now - 30000, now + 30000)  # a wide answer: +-30 s
    assert c.unc == 31
    time.sleep(10)
    assert c.sync(lambda: ntp() + 20)  # 20 s off the RTC, inside the interval: a refinement
    refused = c.refused
    c.sync(lambda: ntp() + 3600)  # an hour off: beyond the interval and the drift, refused
    assert c.refused == refused + 1
    assert abs(c.unix() - (ntp() + clock.EPOCH_TO_UNIX + 20)) <= 1


def test_a_known_clock_inside_the_interval_is_not_stepped():
    c = clock.Clock(BUILD, region())
    assert c.sync(ntp)
    before = c.unix()
    now = true_ms()
    assert c.trusted(now - 2000, now + 2000)
    assert abs(c.unix() - before) <= 1 and c.unc == 3


def test_an_authenticated_time_outside_the_bounds_is_refused():
    c = clock.Clock(BUILD, region())
    assert not c.trusted((BUILD - 10) * 1000, BUILD * 1000)  # before the build
    assert not c.trusted((BUILD + clock.MAX_AHEAD + 10) * 1000, (BUILD + clock.MAX_AHEAD + 20) * 1000)
    assert not c.trusted(TRUE_NOW * 1000, TRUE_NOW * 1000 - 1)  # an empty interval
    assert not c.trusted(1.5, 2.5)
    assert not c.known() and c.unc == -1
