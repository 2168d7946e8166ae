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


def test_a_drifting_sleep_clock_is_learnt_and_wakes_come_back_on_the_grid():
    b = simstate.board
    b.sleep_drift_ppm = 30000  # the RC timer sleeps 3 % long
    state = {}
    offsets = []
    for i in range(12):
        s = schedule.Schedule(300, state)  # a new boot: only RTC-kept state survives
        now_ms = true_ms()
        if i:
            s.measured(now_ms)  # the wake, timed by NTP
        ms = s.sleep_ms(now_ms)
        try:
            machine.deepsleep(ms)
        except simstate.Halt as h:
            b.after_halt(h)
        offsets.append(true_ms() % 300000)  # how far past the grid point we woke
    late = [min(o, 300000 - o) for o in offsets]
    assert late[0] > 8000  # uncorrected: 3 % of 300 s is 9 s late
    assert max(late[-4:]) < 100  # learnt: within 0.1 s of the grid (9 s, 4.3 s, 2.2 s ... 5 ms)
    assert 25000 < state["ppm"] < 35000


def test_nonsense_measurements_do_not_move_the_estimate():
    state = {}
    s = schedule.Schedule(300, state)
    s.sleep_ms(1767225600 * 1000)
    assert s.measured(1767225600 * 1000 + 300000 + 60000) == 60000  # 20 % late: not drift
    assert state["ppm"] == 0
    assert s.measured(1767226000 * 1000) is None  # measured once per sleep
