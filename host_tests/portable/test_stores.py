# app.stores: the node's clock, sequence counter and outbox, made in one place
# for the wake cycle and safe mode; the sleep clock's drift kept on flash; the
# clock told which power-on each outbox number belongs to.
import os

import machine
import simstate

from app import stores, version
from ptest import remount, scratch_dir, sleep_and_wake


def in_node_folder(fn):
    """fn() with the current folder a fresh flash root (the stores' paths are
    relative to it, as on the board)."""
    d, _ = scratch_dir()
    here = os.getcwd()
    os.chdir(d)
    try:
        return fn()
    finally:
        os.chdir(here)


def test_safe_mode_and_the_cycle_draw_from_one_sequence():
    d, flash = scratch_dir()
    here = os.getcwd()
    os.chdir(d)
    try:
        wake = stores.make(machine.RTC())
        used = [wake.counter.next() for _ in range(5)]
        safe = stores.make(machine.RTC(), with_outbox=False)
        assert safe.ob is None  # safe mode leaves the outbox alone
        after = [safe.counter.next() for _ in range(100)][-1]  # past a reserved block (k=64)
        b = simstate.board
        b.schedule(b.world_us + 1000, "power_cut")  # RTC memory goes: the flash reservation stays
        sleep_and_wake(machine.deepsleep, 10000)
        assert machine.reset_cause() == machine.PWRON_RESET
        remount(d, flash)
        os.chdir(d)  # on the VM unmounting the current folder's filesystem leaves it
        again = stores.make(machine.RTC()).counter.next()
    finally:
        os.chdir(here)
    assert after > used[-1] and again > after, (used, after, again)  # never a number twice, whoever sends


def test_a_new_counter_starts_above_the_seconds_since_the_build_once_the_clock_is_known():
    def run():
        machine.RTC().datetime((2027, 6, 1, 1, 12, 0, 0, 0))  # well after the build
        node = stores.make(machine.RTC())
        assert node.clk.known()
        return node.clk.unix(), node.counter.next()

    now, n = in_node_folder(run)
    assert now - version.BUILD_UNIX - 5 <= n <= now - version.BUILD_UNIX + 5


def test_the_drift_is_rewritten_only_when_it_moved_by_more_than_a_step():
    def run():
        stores.make(machine.RTC())  # the data folder, as every wake makes it
        got = [stores.load_drift()]  # nothing kept: 0
        for ppm in (5000, 5000 + stores.DRIFT_STEP, 5000 + stores.DRIFT_STEP + 1, 0):
            stores.keep_drift(ppm)
            got.append(stores.load_drift())
        with open(stores.DRIFT_PATH, "w") as f:
            f.write("garbage")
        got.append(stores.load_drift())
        return got

    assert in_node_folder(run) == [0, 5000, 5000, 5000 + stores.DRIFT_STEP + 1,
                                   5000 + stores.DRIFT_STEP + 1, 0]


def test_a_readings_number_tells_its_power_on_so_none_is_misdated_after_a_power_cut():
    import time

    import clock

    d, flash = scratch_dir()
    here = os.getcwd()
    os.chdir(d)
    b = simstate.board

    def ntp():
        return b.true_rtc_us() // 1000000

    def cut():
        b.schedule(b.world_us + 1000, "power_cut")
        sleep_and_wake(machine.deepsleep, 10000)
        remount(d, flash)
        os.chdir(d)
        return stores.make(machine.RTC())

    try:
        node = stores.make(machine.RTC())
        time.sleep(3000)
        a = node.ob.append(b"a", node.clk.stamp())  # never dated: its power-on never learnt the time
        node.ob.flush()  # on flash: it outlives the cut
        node = cut()
        time.sleep(600)
        b_seq = node.ob.append(b"b", node.clk.stamp())
        b_true = ntp() + clock.EPOCH_TO_UNIX
        time.sleep(600)
        assert node.clk.sync(ntp)  # this power-on learns the time, then loses the link
        c_seq = node.ob.append(b"c", node.clk.stamp())
        node.ob.flush()
        node = cut()
        time.sleep(60)
        d_seq = node.ob.append(b"d", node.clk.stamp())
        got = dict((seq, node.clk.senml_time(t, seq)) for seq, t, _ in node.ob.peek(10))
    finally:
        os.chdir(here)
    assert sorted(got) == [a, b_seq, c_seq, d_seq], got
    assert got[a] is None  # not +2400 s, not dated with a later power-on's offset
    assert abs(got[b_seq] - b_true) <= 1  # its power-on's offset, kept on flash
    assert got[c_seq] >= clock.RELATIVE  # taken with the clock known
    assert got[d_seq] == 0  # this power-on, clock unknown: relative


def test_a_new_outbox_does_not_number_from_one_again():
    # the collector stores a reading once per (device, channel, number): after
    # an erase the node must not hand out its old numbers again
    def first_number():
        ob = stores.make(machine.RTC()).ob
        return ob.append(b"\x00" * 6, 1), ob

    a, ob = in_node_folder(first_number)
    b, _ = in_node_folder(first_number)  # the flash erased: a new outbox
    assert a > 1 and b > 1 and a != b and max(a, b) < 2 ** 30 + 2
    assert ob.append(b"\x00" * 6, 2) == a + 1  # then one after another
