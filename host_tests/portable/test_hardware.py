# app.hardware: the board description (/board.json): sensors on their switched
# rail, native scales, the maintenance and alarm pins.
# (The whole cycle, many wakes at a time, is in host_tests/host/test_wake*.py.)
import simstate

from app import hardware
from ptest import raises


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
