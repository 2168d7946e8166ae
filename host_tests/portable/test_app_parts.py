# The wake cycle's parts on their own: RTC state, backoff, crash log, health
# record, the board description, the sensor rail. (The whole cycle, many wakes
# at a time, is in host_tests/host/test_wake*.py.)
import machine
import simstate

from app import config, crashlog, hardware, health, session, state
from ptest import raises, scratch_dir


def uplink_config():
    return config.check({"wifi": {"ssid": "s"}, "broker": {"host": "b", "ca": "/certs/ca.der"}})


def test_state_survives_deep_sleep_and_starts_afresh_when_damaged():
    st = state.State()
    assert st.why == "empty" and st.boots == 0
    st.boots, st.crash_streak, st.ppm, st.rssi = 41, 2, -20000, -70
    st.save()
    again = state.State()
    assert again.why == "ok" and again.boots == 41 and again.crash_streak == 2
    assert again.ppm == -20000 and again.rssi == -70
    mem = bytearray(machine.RTC().memory())
    mem[20] ^= 0xFF  # one flipped byte in the record
    machine.RTC().memory(bytes(mem))
    bad = state.State()
    assert bad.why == "bad-crc" and bad.boots == 0
    # the regions of the libraries do not overlap the app's or each other
    regions = sorted((state.APP, state.OUTBOX, state.CLOCK, state.SEQ, state.FILTERS, state.WIFI))
    for a, b in zip(regions, regions[1:]):
        assert a[0] + a[1] <= b[0]
    assert regions[-1][0] + regions[-1][1] <= 2048


def test_state_fields_are_declared_and_zero_in_a_fresh_record():
    names = [name for name, _ in state.FIELDS]
    declared = [k for k in dir(state.State) if not k.startswith("_") and isinstance(getattr(state.State, k), int)]
    assert sorted(declared) == sorted(names)  # FIELDS and the class declare the same record
    st = state.State()
    assert [getattr(st, name) for name in names] == [0] * len(names)


def test_bump_saturates_at_the_fields_size():
    st = state.State()
    for name, top in (("crash_streak", 255), ("crashes", 65535), ("up_next", 2 ** 32 - 1)):
        code = [c for n, c in state.FIELDS if n == name][0]
        assert code == {255: "B", 65535: "H", 2 ** 32 - 1: "I"}[top]
        st.bump(name)
        assert getattr(st, name) == 1
        st.bump(name, top - 3)
        assert getattr(st, name) == top - 2
        st.bump(name)
        st.bump(name, 5)
        assert getattr(st, name) == top  # stays at the top, not wrapped to a small count
        st.bump(name)
        assert getattr(st, name) == top
    st.bump("refused", 0)
    assert st.refused == 0
    st.save()  # a saturated record packs: every value fits its field
    again = state.State()
    assert again.crash_streak == 255 and again.crashes == 65535 and again.up_next == 2 ** 32 - 1
    raises(AttributeError, st.bump, "crashs")  # a misspelt counter is an error, not a new attribute


def test_uplink_due_on_a_full_batch_or_an_alarm_and_never_inside_the_backoff():
    st = state.State()
    cfg = uplink_config()
    st.samples = 11
    assert not session.due(st, cfg, 1000, False)
    assert session.due(st, cfg, 1000, True)
    st.samples = 12
    assert session.due(st, cfg, 1000, False)
    waits = []
    for _ in range(12):
        session.failed(st, 1000, "test")
        waits.append(st.up_next - 1000)
        assert not session.due(st, cfg, 1000, True) or st.up_next == 1000
    assert st.up_fails == 12
    assert max(waits) <= session.BACKOFF_CAP_S
    assert session.due(st, cfg, st.up_next, False)  # the wait is over
    # an RTC that went back (power cut) does not leave the node waiting an age
    st.up_next = 10 ** 6
    assert session.due(st, cfg, 0, False)
    cfg.broker = None
    assert not session.due(st, cfg, st.up_next, True)


def test_crash_log_keeps_the_newest_whole_entries_within_its_bound():
    d, _ = scratch_dir()
    path = d + "/crash.log"
    for i in range(200):
        try:
            raise ValueError("boom %d" % i)
        except ValueError as e:
            tb = crashlog.keep(e, "boot=%d" % i, path)
    assert "boom 199" in tb
    text = crashlog.read(path)
    assert len(text) <= crashlog.LIMIT and text.startswith("--- boot=")
    assert "boom 199" in text and "boom 0\n" not in text


def test_health_record_carries_the_counters():
    st = state.State()
    st.boots, st.crashes, st.auth_fails, st.batt_mv = 7, 2, 1, 2980
    r = health.record(st, {"depth": 5, "drops": 0}, "deepsleep", rssi=-71, wifi_ms=180, filter_drops=3)
    assert r["boot"] == 7 and r["crash"] == 2 and r["auth"] == 1 and r["batt"] == 2980
    assert r["q"] == 5 and r["fdrop"] == 3 and r["rst"] == "deepsleep" and r["fw"]
    assert r["rssi"] == -71 and r["wifi"] == 180  # the session's link, passed as values
    assert health.record(st, None, "poweron")["rssi"] == 0  # no link measured
    assert health.record(st, None, "poweron")["q"] == -1  # outbox not opened (safe mode)


def test_sensor_rail_powers_the_sensor_and_is_held_off_in_sleep():
    from simdev.sht4x import SHT4xModel

    b = simstate.board
    sht = SHT4xModel()
    sht.rail = (25, 1)
    b.i2c[0] = {0x44: sht}
    hw = hardware.Hardware({"i2c": {"0": {"scl": 22, "sda": 21}}, "sensors": {"sht4x": {"bus": 0}},
                            "rails": [{"pin": 25, "on": 1, "settle_ms": 2}]})
    raises(OSError, hw.read, "sht4x")  # rail off: the chip does not answer
    t0 = b.world_us
    hw.rails(True)
    assert b.world_us - t0 >= 2000  # settle time waited
    assert hw.read("sht4x")["sht4x.t"] == 21000
    hw.rails(False)
    assert b.level(25) == 0 and 25 in b.held
    hw.rails(True)  # hold released to switch on again
    assert b.level(25) == 1
    raises(OSError, hw.read, "bme280")  # not wired on this board


def test_quantities_name_their_native_scale():
    assert hardware.quantity("sht4x.t") == (1000, "Cel")
    assert hardware.quantity("ds18b20.2.t") == (1000, "Cel")
    assert hardware.quantity("bme280.p") == (256, "Pa")
    raises(KeyError, hardware.quantity, "sht4x.co2")


def test_maintenance_pin_is_read_with_its_pull():
    b = simstate.board
    hw = hardware.Hardware({"maintenance_pin": {"pin": 0, "active": 0}})
    assert not hw.maintenance_held()  # pulled up, nobody holds it
    b.drive(0, 0)
    assert hw.maintenance_held()
    assert not hardware.Hardware({}).maintenance_held()


def test_one_bad_ds18b20_does_not_silence_the_others_on_its_bus():
    from simdev.ds18b20 import DS18B20

    a, b2 = DS18B20(0xA1), DS18B20(0xB2)
    a.temperature_c, b2.temperature_c = 21.5, 19.0
    b2.fault = "crc"
    simstate.board.onewire = {4: [a, b2]}
    hw = hardware.Hardware({"sensors": {"ds18b20": {"pin": 4}}})
    got = hw.read("ds18b20")
    ok = [k for k in got if got[k] == 21500]
    assert "ds18b20.t" in got and len(ok) == 2  # the good one, also as ds18b20.t when it is first
    assert len([k for k in got if k.startswith("ds18b20.") and k != "ds18b20.t"]) == 1


def test_alarm_pin_wake_is_armed_only_while_the_contact_is_open():
    # ext0 wakes on a level: armed while the contact is closed, it would wake
    # the chip again at once, wake after wake
    b = simstate.board
    hw = hardware.Hardware({"alarm_pin": {"pin": 33, "level": 0}})
    b.drive(33, 1)
    assert hw.arm_alarm_wake() and b.ext0 == (33, 0)
    b.ext0 = None
    b.drive(33, 0)  # still closed
    assert not hw.arm_alarm_wake() and b.ext0 is None
    assert not hardware.Hardware({}).arm_alarm_wake()
