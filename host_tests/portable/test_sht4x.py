# lib/sht4x against the data sheet's numbers and the command-level model.
import errno
import time

import machine
import simdev
import simstate
from ptest import raises

import sht4x
from sensor import CRCError, ImpossibleValue
from simdev.sht4x import SHT4xModel, crc8 as model_crc8


def bus():
    return machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))


def wired():
    model = SHT4xModel()
    simstate.board.i2c[0] = {0x44: model}
    return model, sht4x.SHT4x(bus())


def test_crc_datasheet_example():
    assert sht4x.crc8(b"\xbe\xef") == 0x92
    assert sht4x.crc8(b"\x00\xbe\xef", 1, 3) == 0x92
    assert model_crc8(b"\xbe\xef") == 0x92


def test_conversion_formulas():
    assert sht4x.convert(0, 0) == (-45000, 0)  # -6 %RH clamped
    assert sht4x.convert(65535, 65535) == (130000, 100000)  # 119 %RH clamped
    assert sht4x.convert(26214, 0x8000) == (25000, 56501)  # 0.4 * 175 - 45; 56500.95
    for s in (1, 1000, 12345, 30000, 50000, 65534):
        t, rh = sht4x.convert(s, s)
        assert abs(t - (-45 + 175.0 * s / 65535) * 1000) <= 0.5
        assert abs(rh - min(max((-6 + 125.0 * s / 65535) * 1000, 0), 100000)) <= 0.5


def test_round_trip_over_the_operating_range():
    model, sht = wired()
    for c in range(-40, 126, 15):
        for rh in range(0, 101, 10):
            model.temperature_c, model.humidity = c, rh
            t, h = sht.read()
            assert abs(t - c * 1000) <= 2, (c, t)  # 1 LSB = 2.7 mdegC
            assert abs(h - rh * 1000) <= 1, (rh, h)  # 1 LSB = 1.9 m%RH


def test_humidity_is_clamped_to_0_100():
    model, sht = wired()
    model.humidity = 110.0
    assert sht.read()[1] == 100000
    model.humidity = -3.0
    assert sht.read()[1] == 0


def test_read_waits_9_ms_with_one_command_then_idles():
    b = simstate.board
    model, sht = wired()
    t0 = b.world_us
    sht.read()
    elapsed = b.world_us - t0
    assert 9000 <= elapsed < 9000 + 1000, elapsed
    assert model.commands == [0xFD] and model.measurements == 1
    assert not model.busy
    assert raises(OSError, bus().readfrom, 0x44, 6).args[0] == errno.ENODEV  # nothing pending


def test_model_nacks_while_measuring():
    model = SHT4xModel()
    simstate.board.i2c[0] = {0x44: model}
    i2c = bus()
    i2c.writeto(0x44, b"\xfd")
    time.sleep_ms(8)
    assert raises(OSError, i2c.readfrom, 0x44, 6).args[0] == errno.ENODEV
    time.sleep_ms(1)
    data = i2c.readfrom(0x44, 6)
    assert model_crc8(data[0:2]) == data[2] and model_crc8(data[3:5]) == data[5]
    assert raises(OSError, i2c.writeto, 0x44, b"\x00").args[0] == errno.ENODEV  # unknown


def test_soft_reset():
    model, sht = wired()
    sht.reset()
    assert model.commands == [0x94] and model.resets == 1
    assert not model.busy
    assert sht.read()[0] == 21000


def test_serial_number():
    model, sht = wired()
    model.serial = 0x12345678
    assert sht.serial() == 0x12345678
    model.bad_crc = True
    assert "serial" in str(raises(CRCError, sht.serial))


def test_bad_crc_is_a_crc_error():
    model, sht = wired()
    model.bad_crc = True
    e = raises(CRCError, sht.read)
    assert "SHT4x" in str(e) and "CRC" in str(e)


def test_corrupted_bytes_are_a_crc_error():
    model, sht = wired()
    model.corrupt = simdev.flip_bits(0x01)
    raises(CRCError, sht.read)
    model.corrupt = lambda data: b"\xff" * len(data)  # bus stuck high
    raises(CRCError, sht.read)
    model.corrupt = lambda data: bytes(len(data))  # bus stuck low
    raises(CRCError, sht.read)


def test_nack_raises_enodev():
    model, sht = wired()
    model.fault = "nack"
    assert raises(OSError, sht.read).args[0] == errno.ENODEV
    simstate.board.i2c[0] = {}
    assert raises(OSError, sht.read).args[0] == errno.ENODEV


def test_clock_stretch():
    model, sht = wired()
    model.stretch_us = 20000  # within the 50 ms bus timeout: slow but fine
    t, rh = sht.read()
    assert abs(t - 21000) <= 2 and abs(rh - 45000) <= 1
    model.stretch_us = 80000
    assert raises(OSError, sht.read).args[0] == errno.ETIMEDOUT


def test_out_of_range_raw_values():
    model, sht = wired()
    model.out_of_range = True  # 0xFFFF: 130 degC, with valid CRCs
    assert "130000 mdegC" in str(raises(ImpossibleValue, sht.read))
    model.out_of_range = False
    model.temperature_c = -42.0
    assert "outside -41..126" in str(raises(ImpossibleValue, sht.read))
    model.temperature_c = -40.5  # past the range, within the part's accuracy
    assert abs(sht.read()[0] + 40500) <= 2


def test_stuck_model_returns_the_same_value():
    model, sht = wired()
    first = sht.read()
    model.stuck = True
    model.temperature_c, model.humidity = 30.0, 80.0
    assert sht.read() == first
    assert model.measurements == 2


def test_spike_is_one_reading():
    model, sht = wired()
    model.spike = (40.0, 0)
    assert abs(sht.read()[0] - 61000) <= 2
    assert abs(sht.read()[0] - 21000) <= 2
