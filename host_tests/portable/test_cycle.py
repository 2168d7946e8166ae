# app.cycle: one wake (Wake) with a real configuration, the board's hardware on
# the simulated board and the RTC record: alarms with hysteresis, timestamps
# that keep their order, a flash that refuses, a sensor that fails. (Many wakes
# against a real broker: host_tests/host/test_wake*.py.)
import os
import machine
import simstate
import time

import clock
import eventlog
import uplink

from app import config, cycle, hardware, state, stores
from app.schedule import Schedule
from ptest import scratch_dir, sleep_and_wake
from simdev.sht4x import SHT4xModel

BOARD = {"i2c": {"0": {"scl": 22, "sda": 21}}, "sensors": {"sht4x": {"bus": 0}},
         "battery": {"pin": 35, "divider": [2, 1]}}
CHANNELS = [{"name": "t", "sensor": "sht4x.t", "scale": 10, "unit": "Cel"},
            {"name": "rh", "sensor": "sht4x.rh"},
            {"name": "v", "sensor": "battery.v", "scale": 1000}]
NOW = 1767225600  # 2026-01-01, after the firmware's build time


class Node:
    """A node's parts as ladder.run() hands them to a wake: its folder (the
    root of its flash), the configuration, the board and the RTC record."""

    def __init__(self, cfg):
        self.dir, _ = scratch_dir()
        self.sht = SHT4xModel()
        simstate.board.i2c[0] = {0x44: self.sht}
        simstate.board.analog[35] = 1505000  # 3.01 V behind the 2:1 divider
        self.cfg = config.check(cfg)
        self.hw = hardware.Hardware(BOARD)
        self.st = state.State()

    def wake(self, how=None):
        """One wake: Wake.run() (or how(w), the wake's steps) in the node's
        folder with the log captured -> (wake, what it returned, log lines)."""
        w = cycle.Wake(self.st, self.cfg, self.hw, "deepsleep", "timer", time.ticks_ms())
        lines = []
        here = os.getcwd()
        os.chdir(self.dir)
        eventlog.print = lines.append
        try:
            got = how(w) if how else w.run()
        finally:
            del eventlog.print
            os.chdir(here)
        self.st.save()
        return w, got, [eventlog.parse(line) for line in lines]

    def sleep(self, ms):
        """Deep sleep to the next wake; the RTC record is read back as a boot does."""
        sleep_and_wake(machine.deepsleep, ms)
        self.st = state.State()


def sample_only(w):
    """The wake's steps up to sample(), as run() takes them -> whether an alarm changed."""
    w._open_stores()
    w.sched = Schedule(w.cfg.sample_s, w.st.schedule())
    return w.sample()


def set_clock(unix):
    tm = time.gmtime(unix - clock.EPOCH_TO_UNIX)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))


def kept(w):
    """What the wake put in the outbox -> [(channel index, value, stamp)]."""
    out = []
    for _, t, payload in w.ob.peek(100):
        ch, v, _ = uplink.unpack_reading(payload)
        out.append((ch, v, t))
    return out


def lines(log, tag):
    return [x for x in log if x is not None and x[2] == tag]


def test_alarms_raise_and_clear_with_hysteresis_and_report_only_a_change():
    node = Node({"channels": CHANNELS,
                 "alarms": [{"channel": "t", "above": 30, "hysteresis": 2},
                            {"channel": "rh", "below": 20, "hysteresis": 5}]})
    node.sht.humidity = 50.0
    steps = [  # temperature, humidity -> changed, alarm bits (1: t high, 2: rh low)
        (25.0, 50.0, False, 0),
        (30.5, 50.0, True, 1),  # above 30: raised
        (29.0, 50.0, False, 1),  # back under 30 but not under 30 - 2: still raised, no news
        (31.0, 50.0, False, 1),  # raised already: nothing to report
        (27.5, 50.0, True, 0),  # under 28: cleared
        (29.5, 50.0, False, 0),  # not above 30 again: stays clear
        (29.5, 19.0, True, 2),  # rh below 20: raised; t unchanged
        (29.5, 24.0, False, 2),  # under 20 + 5: still raised
        (30.5, 24.0, True, 3),  # t raised, rh stays raised
        (30.5, 26.0, True, 1),  # rh above 25: cleared, t stays raised
    ]
    for i in range(len(steps)):
        t, rh, changed, bits = steps[i]
        node.sht.temperature_c, node.sht.humidity = t, rh
        w, got, log = node.wake(sample_only)
        assert got == changed, (i, t, rh)
        assert node.st.alarms == bits, (i, node.st.alarms)
        said = [x[3]["channel"] for x in lines(log, "alarm")]
        assert len(said) == (1 if changed else 0), (i, said)  # only the alarm that changed speaks
        node.sleep(300000)


def test_a_wakes_stamp_is_never_at_or_before_the_last_once_the_clock_is_known():
    node = Node({"channels": CHANNELS})
    set_clock(NOW)
    w, ms, log = node.wake()
    first = kept(w)
    assert len(first) == 3 and first[0][2] >= NOW  # unix seconds: the clock is known
    t1 = first[0][2]
    assert node.st.last_stamp == t1
    node.sleep(ms)
    set_clock(t1 - 600)  # a sync stepped the clock back by more than an interval
    w, ms, log = node.wake()
    second = [r for r in kept(w) if r not in first]
    assert len(second) == 3
    assert [r[2] for r in second] == [t1 + 1] * 3  # after the last wake's, not 10 minutes before it
    assert lines(log, "sample")[0][3]["at"] == str(t1 + 1)
    node.sleep(ms)
    w, ms, log = node.wake()  # the clock is ahead of the last stamp again: its own time
    third = [r[2] for r in kept(w) if r not in first and r not in second]
    assert len(third) == 3 and third[0] > t1 + 1 and third[0] == node.st.last_stamp


def test_readings_the_outbox_refuses_are_counted_and_the_wake_goes_on():
    node = Node({"channels": CHANNELS})
    make = stores.make

    def refuse(payload, t):
        raise OSError(28)  # ENOSPC: the flash refused the write

    def failing_flash(rtc, with_outbox=True):
        made = make(rtc, with_outbox)
        made.ob.append = refuse
        return made

    stores.make = failing_flash
    try:
        w, ms, log = node.wake()
    finally:
        stores.make = make
    assert node.st.refused == 3 and node.st.samples == 1
    refused = [x for x in lines(log, "outbox") if x[0] == "E"]
    assert [x[4].split(":")[0] for x in refused] == ["reading refused channel=%s" % c for c in ("t", "rh", "v")]
    summary = lines(log, "wake")[0][3]
    assert summary["readings"] == "0" and int(summary["sleep_ms"]) == ms > 0  # on to its sleep
    node.sleep(ms)
    w, ms, log = node.wake()  # the flash works again: the next wake keeps its readings
    assert len(kept(w)) == 3 and node.st.refused == 3


def test_a_sensor_that_raises_is_logged_and_its_channels_get_no_value():
    node = Node({"channels": CHANNELS})
    node.sht.bad_crc = True
    w, ms, log = node.wake()
    failed = lines(log, "sensor")
    assert len(failed) == 1 and failed[0][0] == "W" and "sht4x failed: CRCError" in failed[0][4]
    got = kept(w)
    assert [r[0] for r in got] == [2]  # the battery's channel only
    assert 2980 <= got[0][1] <= 3040
    shown = lines(log, "sample")[0][3]
    assert shown["t"] == "-" and shown["rh"] == "-" and shown["v"] == str(got[0][1])
    assert lines(log, "wake")[0][3]["readings"] == "1"
    node.sht.bad_crc = False  # the sensor recovers: its channels have values again
    node.sleep(ms)
    w, ms, log = node.wake()
    assert sorted(r[0] for r in kept(w)) == [0, 1, 2, 2]
    assert lines(log, "sample")[0][3]["t"] != "-"


def test_readings_past_the_outboxs_last_number_are_refused_counted_and_those_kept_stay():
    import outbox
    import rtcmem

    node = Node({"channels": CHANNELS})
    # an outbox two numbers from its end (crafted state, or 4 billion readings)
    os.mkdir(node.dir + "/" + stores.DATA)
    outbox.Outbox(node.dir + "/" + stores.OUTBOX_PATH,
                  rtc=rtcmem.Region(machine.RTC(), *state.OUTBOX)).start_at(outbox.MAX_SEQ - 1)
    w, ms, log = node.wake()
    assert [s for s, _, _ in w.ob.peek(10)] == [outbox.MAX_SEQ - 1, outbox.MAX_SEQ]  # t and rh kept
    assert node.st.exhausted == 1 and node.st.refused == 0  # v refused, not wrapped to 0
    assert "no sequence number left" in [x for x in lines(log, "outbox") if x[0] == "E"][0][4]
    assert int(lines(log, "wake")[0][3]["sleep_ms"]) == ms > 0  # on to its sleep
    node.sleep(ms)
    w, ms, log = node.wake()
    assert node.st.exhausted == 4 and len(w.ob) == 2
    from app import health

    assert health.record(node.st, w.ob.stats(), "deepsleep")["exhausted"] == 4


PSK = "ab" * 32


def uplink_node():
    """A node that uploads at every wake to a broker that is not there (the
    NTP step comes before it); its access point up, NTP telling the truth."""
    node = Node({"channels": CHANNELS, "uplink_every": 1, "wifi": {"ssid": "home"},
                 "broker": {"host": "127.0.0.1", "port": 1, "ca": "ca.der"}})
    node.cfg._secrets = {"hmac_key": "11" * 32, "wifi_psk": PSK}
    simstate.board.aps = [{"ssid": "home", "bssid": "a0b1c2d3e4f5", "channel": 6, "rssi": -61,
                           "password": PSK, "up": True}]
    return node


def test_ntp_refusals_are_counted_for_health_and_the_next_sync_takes_the_unknown_drift_bound():
    from app import health

    node = uplink_node()
    w, ms, log = node.wake()  # the first sync of this power-on: the clock set
    assert w.clk.known() and node.st.ntp_refused == 0 and node.st.synced
    node.sleep(ms)
    node.st.ppm = 90000  # a learnt drift far from this board's (0): the truth is refused
    node.st.up_next = node.st.up_fails = 0  # no backoff after the missing broker
    w, ms, log = node.wake()
    assert node.st.ntp_refused == 1 and node.st.ntp_streak == 1
    assert any("refused" in x[4] for x in lines(log, "clock"))
    assert health.record(node.st, None, "deepsleep")["ntp_refused"] == 1
    synced = node.st.synced
    node.sleep(ms)
    node.st.up_next = node.st.up_fails = 0
    w, ms, log = node.wake()  # after a refusal: the bound of an unknown drift (10 %): set
    assert node.st.ntp_refused == 1 and node.st.ntp_streak == 0 and node.st.synced > synced


def test_a_sequence_counter_past_its_last_number_fails_the_uplink_not_the_wake():
    import seqcounter

    from app import session

    class Linked:
        """A session whose link and broker are there: what the wake does with them."""
        published = []

        def __init__(self, cfg, rtc):
            self.result, self.sent, self.rssi, self.wifi_ms, self.auth_refused = None, 0, -60, 100, False
            self.inbox = []

        def await_time(self, ms):
            return False

        def open(self):
            return True

        def sync_clock(self, clk, ppm=None):
            return None

        def connect(self):
            return True

        def drain(self, ob, enc, kind=None):
            return 0

        def publish(self, topic, msg):
            Linked.published.append(topic)

        def close(self):
            self.result = "ok"

    node = uplink_node()
    make, real = stores.make, session.Session

    def exhausted_counter(rtc, with_outbox=True):
        made = make(rtc, with_outbox)
        made.counter._next = made.counter._limit = seqcounter.MAX + 1  # crafted, at its end
        made.counter._fresh = False
        return made

    stores.make, session.Session = exhausted_counter, Linked
    try:
        w, ms, log = node.wake()
    finally:
        stores.make, session.Session = make, real
    assert Linked.published == []  # nothing sealed with a repeated or wrapped number
    assert any("health record not sealed" in x[4] for x in lines(log, "uplink"))
    assert int(lines(log, "wake")[0][3]["sleep_ms"]) == ms > 0  # on to its sleep


def test_a_sensor_value_beyond_a_reading_is_dropped_counted_and_never_wrapped():
    # pack_reading stores a signed 32-bit int: a driver's value beyond it raised
    # struct.error under CPython (the wake caught only OSError) and wrapped on the VM
    from filters import RANGE

    node = Node({"channels": CHANNELS})
    read = node.hw.read
    top = (1 << 31) - 1
    values = {}

    def broken_driver(sensor):
        return values if sensor == "sht4x" else read(sensor)

    node.hw.read = broken_driver
    # t: 1/1000 Cel at scale 10 (native / scale = 100); rh: 1/1000 %RH at scale 1
    for t_raw, rh_raw, t_kept, rh_kept in (
            (top * 100, -(1 << 31) * 1000, top, -(1 << 31)),  # the edges: kept as they are
            ((top + 1) * 100, (-(1 << 31) - 1) * 1000, None, None),  # one beyond: dropped
            (1 << 80, -(1 << 80), None, None)):
        values.update({"sht4x.t": t_raw, "sht4x.rh": rh_raw})
        ranged = [node.cfg.channels[i].chain.drops[RANGE] for i in (0, 1)]
        w, ms, log = node.wake()
        this_wake = kept(w)[-w.readings:]
        node.sleep(ms)
        assert [(ch, v) for ch, v, _ in this_wake] == [(c, v) for c, v in ((0, t_kept), (1, rh_kept), (2, this_wake[-1][1]))
                                                       if v is not None]  # the wake went on: battery too
        n = 0 if t_kept is not None else 1
        assert [w.chains[i].drops[RANGE] - ranged[i] for i in (0, 1)] == [n, n]  # counted (health: fdrop)
        assert len(lines(log, "filter")) == 2 * n
