# firmware/app/schedule: wakes on the wall-clock grid, drift of the sleep clock learnt.
import machine
import simstate

from app import schedule


def true_ms():
    b = simstate.board
    return b.true_unix_at_start * 1000 + b.world_us // 1000


def test_the_grid_is_aligned_to_the_wall_clock():
    s = schedule.Schedule(300)
    assert s.next_slot(1767225600 + 10) == 1767225600 + 300  # :00 -> :05
    assert s.sleep_ms((1767225600 + 10) * 1000 + 250) == 289750
    assert s.sleep_ms((1767225600 + 299) * 1000) == 301000  # too close to :05: the :10 slot
    assert s.sleep_ms(123000, known=False) == 300000  # no wall clock: the interval


def rtc_ms():
    return simstate.board.rtc_us() // 1000 + 946684800000  # the RTC's idea, in unix ms


def ntp_sync():
    """Set the RTC from the true time, as clock.sync does with NTP."""
    b = simstate.board
    b.set_rtc_us((b.true_unix_at_start - 946684800) * 1000000 + b.world_us)


def test_a_drifting_sleep_clock_is_learnt_from_hourly_syncs_and_wakes_stay_on_the_grid():
    b = simstate.board
    b.sleep_drift_ppm = 30000  # the RC timer sleeps 3 % long: the RTC falls behind
    ntp_sync()
    state = {}
    late = []
    for i in range(12 * 8):  # eight hours, NTP only at every 12th wake (the uplink)
        s = schedule.Schedule(300, state)  # a new boot: only RTC-kept state survives
        if i % 12 == 0:
            before = rtc_ms()
            ntp_sync()
            s.synced(before, rtc_ms())
        ms = s.sleep_ms(rtc_ms())
        try:
            machine.deepsleep(ms)
        except simstate.Halt as h:
            b.after_halt(h)
        o = true_ms() % 300000  # how far past the grid point we woke
        late.append(min(o, 300000 - o))
    assert late[0] > 8000  # uncorrected: 3 % of 300 s is 9 s late
    assert max(late[-24:]) < 100, late[-24:]  # learnt: within 0.1 s, syncs or not
    assert 29000 < state["ppm"] < 31000


def test_nonsense_and_short_measurements_do_not_move_the_estimate():
    state = {}
    s = schedule.Schedule(300, state)
    t = 1767225600 * 1000
    assert s.synced(t, t) is None  # the first sync: nothing to compare with
    assert s.synced(t + 60000, t + 61000) is None and state["ppm"] == 0  # a minute: too short
    assert s.synced(t + 3600000, t + 3600000 + 600000) is None  # 17 % in an hour: not drift
    assert state["ppm"] == 0
    assert s.synced(t + 7200000 + 600000, t + 7200000 + 600000 + 36000) == 36000  # 1 %
    assert state["ppm"] == 10000  # far from the estimate: taken as measured
    t1 = t + 7200000 + 600000 + 36000  # the last sync
    s.synced(t1 + 3600000, t1 + 3600000 + 39600)  # 1.1 % this hour
    assert state["ppm"] == 10500  # near it: half way
