# lib/bme280 against the data sheet's numbers and the register-level model.
import errno

import machine
import simdev
import simstate
from ptest import raises

import bme280
from sensor import ImpossibleValue
from simdev.bme280 import BME280Model

# BMP280 data sheet, section 3.12 (same T and P formulas as the BME280)
EXAMPLE_T = (27504, 26435, -1000)
EXAMPLE_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
EXAMPLE_H = (75, 362, 0, 315, 50, 30)  # a real BME280's humidity trimming
CAL = EXAMPLE_T + EXAMPLE_P + EXAMPLE_H


def bus():
    return machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))


def wired(**settings):
    model = BME280Model()
    simstate.board.i2c[0] = {0x76: model}
    return model, bme280.BME280(bus(), **settings)


# The data sheet's double-precision formulas (section 8.1), as a cross-check
# written apart from both the driver and the model.
def t_double(adc_t, cal):
    var1 = (adc_t / 16384.0 - cal[0] / 1024.0) * cal[1]
    var2 = (adc_t / 131072.0 - cal[0] / 8192.0) * (adc_t / 131072.0 - cal[0] / 8192.0) * cal[2]
    return (var1 + var2) / 5120.0, int(var1 + var2)


def p_double(adc_p, t_fine, cal):
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * cal[8] / 32768.0
    var2 = var2 + var1 * cal[7] * 2.0
    var2 = var2 / 4.0 + cal[6] * 65536.0
    var1 = (cal[5] * var1 * var1 / 524288.0 + cal[4] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * cal[3]
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = cal[11] * p * p / 2147483648.0
    var2 = p * cal[10] / 32768.0
    return p + (var1 + var2 + cal[9]) / 16.0


def h_double(adc_h, t_fine, cal):
    h1, h2, h3, h4, h5, h6 = cal[12:18]
    v = t_fine - 76800.0
    v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
    v = v * (1.0 - h1 * v / 524288.0)
    return min(max(v, 0.0), 100.0)


# ------------------------------------------------------------ compensation
def test_datasheet_temperature_example():
    t, t_fine = bme280.temperature(519888, CAL)
    assert (t, t_fine) == (2508, 128422)  # 25.08 degC
    td, t_fine_d = t_double(519888, CAL)
    assert abs(td - 25.08) < 0.005 and t_fine_d == 128422


def test_datasheet_pressure_example():
    p = bme280.pressure(415148, 128422, CAL)
    # 100653.25 Pa; the data sheet's 32-bit formula gives 100653 Pa, its double
    # formula 100653.27 Pa. The same C code compiled with gcc returns 25767233.
    assert p == 25767233
    assert p >> 8 == 100653
    assert abs(p / 256 - p_double(415148, 128422, CAL)) < 0.05
    # the data sheet's table carries t_fine unrounded (128422.29) to 100653.27 Pa
    t_fine_exact = t_double(519888, CAL)[0] * 5120.0
    assert abs(p_double(415148, t_fine_exact, CAL) - 100653.27) < 0.005


def test_humidity_matches_the_double_formula():
    # values from the data sheet's C code compiled with gcc, at t_fine 128422
    assert bme280.humidity(30000, 128422, CAL) == 55588
    assert bme280.humidity(33482, 128422, CAL) == 75366
    assert bme280.humidity(20000, 128422, CAL) == 0  # clamped, as in C
    assert bme280.humidity(45000, 128422, CAL) == 102400
    for adc_t in (400000, 519888, 600000):
        t_fine = bme280.temperature(adc_t, CAL)[1]
        for adc_h in (21000, 25000, 30000, 35000, 38000):
            h = bme280.humidity(adc_h, t_fine, CAL)
            assert abs(h / 1024 - h_double(adc_h, t_fine, CAL)) < 0.02


def test_measurement_time_is_the_datasheet_maximum():
    # 1.25 + 2.3 osrs_t [+ 2.3 osrs_p + 0.575] [+ 2.3 osrs_h + 0.575] ms, rounded up
    assert bme280.max_measurement_ms(1, 1, 1) == 10  # 9.3
    assert bme280.max_measurement_ms(1, 0, 0) == 4  # 3.55
    assert bme280.max_measurement_ms(2, 16, 1) == 47  # 46.1
    assert bme280.max_measurement_ms(16, 16, 16) == 113  # 112.8


# ------------------------------------------------------------ with the model
def test_reads_the_trimming_registers():
    model, bme = wired()
    assert bme.cal == CAL


def test_h4_h5_nibble_packing_and_signs():
    # H4 and H5 share 0xE5 and are 12-bit signed; H2, H6 are signed, H1, H3 not
    cal = EXAMPLE_T + EXAMPLE_P + (255, -300, 200, -1234, -7, -128)
    model = BME280Model(trimming=cal)
    assert model.regs[0xE4:0xE7] == bytearray(b"\xb2\x9e\xff")  # 0xB2E, 0xFF9
    simstate.board.i2c[0] = {0x76: model}
    assert bme280.BME280(bus()).cal == cal


def test_round_trip_over_the_operating_range():
    model, bme = wired()
    fine = bme280.BME280(bus(), osrs_t=16, osrs_p=16, osrs_h=16)
    for c in range(-40, 86, 15):
        for hpa in range(300, 1101, 200):
            for rh in range(0, 101, 25):
                model.temperature_c, model.pressure_pa, model.humidity = c, hpa * 100, rh
                t, p, h = bme.read()
                assert t == c * 100, (c, t)  # 16 bits at x1: 0.005 degC
                assert abs(p / 256 - hpa * 100) < 2.62, (c, hpa, p)  # x1: 2.62 Pa
                assert abs(h / 1024 - rh) < 0.02, (c, rh, h)
                t, p, h = fine.read()
                assert t == c * 100
                assert abs(p / 256 - hpa * 100) < 0.5  # x16: 0.16 Pa + formula
                assert abs(h / 1024 - rh) < 0.02


def test_read_float():
    model, bme = wired()
    model.temperature_c, model.pressure_pa, model.humidity = 21.5, 101325, 45.0
    t, p, h = bme.read_float()
    assert abs(t - 21.5) < 0.01 and abs(p - 101325) < 2.62 and abs(h - 45.0) < 0.02


def test_settings_reach_the_registers():
    model, bme = wired(osrs_t=2, osrs_p=16, osrs_h=4, iir=8)
    bme.read()
    assert model.regs[0xF2] == 0b011  # x4
    assert model.osrs_h_active == 0b011  # latched by the ctrl_meas write after it
    assert model.regs[0xF4] == (0b010 << 5) | (0b101 << 2)  # x2, x16, sleep again
    assert model.regs[0xF5] == 0b011 << 2  # filter 8


def test_humidity_setting_is_written_before_ctrl_meas():
    # in the other order the fresh chip would skip humidity (0x8000, ~71 %RH)
    model, bme = wired()
    model.humidity = 30.0
    assert abs(bme.read()[2] / 1024 - 30.0) < 0.02


def test_model_ctrl_hum_waits_for_ctrl_meas_and_writes_are_pairs():
    model = BME280Model()
    simstate.board.i2c[0] = {0x76: model}
    i2c = bus()
    assert i2c.readfrom_mem(0x76, 0xF7, 8) == b"\x80\x00\x00\x80\x00\x00\x80\x00"
    i2c.writeto_mem(0x76, 0xF2, b"\x05")
    assert model.osrs_h_active == 0
    i2c.writeto_mem(0x76, 0xF4, b"\x24\x10")  # no auto-increment: 0xF5 untouched
    assert model.osrs_h_active == 5 and model.regs[0xF5] == 0
    i2c.writeto(0x76, b"\xf5\x10\xf4\x24")  # pairs
    assert model.regs[0xF5] == 0x10 and model.regs[0xF4] == 0x24


def test_skipped_channels_read_none():
    model, bme = wired(osrs_p=0, osrs_h=0)
    assert bme.wait_ms == 4
    t, p, h = bme.read()
    assert p is None and h is None and t == 2100
    assert model.regs[0xF7:0xFA] == bytearray(b"\x80\x00\x00")  # the chip skipped it


def test_bad_settings_are_refused():
    i2c = bus()
    raises(ValueError, bme280.BME280, i2c, osrs_t=0)
    raises(ValueError, bme280.BME280, i2c, osrs_p=3)
    raises(ValueError, bme280.BME280, i2c, iir=1)


def test_read_waits_the_maximum_time_and_leaves_the_chip_asleep():
    b = simstate.board
    for settings, ms in (({}, 10), ({"osrs_t": 16, "osrs_p": 16, "osrs_h": 16}, 113)):
        model, bme = wired(**settings)
        t0 = b.world_us
        bme.read()
        elapsed = b.world_us - t0
        assert ms * 1000 <= elapsed < ms * 1000 + 1000, elapsed  # + two bus transfers
        assert model.conversions == 1
        assert model.mode == 0  # forced mode ends in sleep


def test_iir_filter_smooths_successive_readings():
    model, bme = wired(iir=16)
    model.temperature_c = 20.0
    assert bme.read()[0] == 2000
    model.temperature_c = 30.0
    t = bme.read()[0]
    assert 2055 < t < 2070  # a sixteenth of the step


def test_soft_reset():
    model, bme = wired(osrs_h=2)
    bme.read()
    bme.reset()
    assert model.resets == 1
    assert model.regs[0xF2] == 0 and model.regs[0xF4] == 0 and model.osrs_h_active == 0
    assert bme.read()[2] is not None  # settings are written again at each read


# ------------------------------------------------------------ faults
def test_wrong_chip_id():
    model = BME280Model()
    model.regs[0xD0] = 0x58
    simstate.board.i2c[0] = {0x76: model}
    e = raises(ImpossibleValue, bme280.BME280, bus())
    assert "0x58" in str(e) and "BMP280" in str(e)


def test_corrupted_chip_id_at_init():
    model = BME280Model()
    model.corrupt = simdev.flip_bits(0x01)
    simstate.board.i2c[0] = {0x76: model}
    assert "chip id 0x61" in str(raises(ImpossibleValue, bme280.BME280, bus()))


def test_corrupted_data_is_detected():
    model, bme = wired()
    model.corrupt = simdev.flip_bits(0x01)  # sets bits the chip always reads as 0
    assert "xlsb" in str(raises(ImpossibleValue, bme.read))


def test_bus_stuck_high_or_low():
    model, bme = wired()
    for byte in (0x00, 0xFF):
        model.corrupt = lambda data, byte=byte: bytes((byte,)) * len(data)
        assert "all 0x%02x" % byte in str(raises(ImpossibleValue, bme.read))


def test_blank_trimming_registers():
    model = BME280Model()
    model.corrupt = lambda data: data if len(data) == 1 else bytes(len(data))
    simstate.board.i2c[0] = {0x76: model}
    assert "trimming" in str(raises(ImpossibleValue, bme280.BME280, bus()))


def test_nack_raises_enodev():
    model = BME280Model()
    model.fault = "nack"
    simstate.board.i2c[0] = {0x76: model}
    assert raises(OSError, bme280.BME280, bus()).args[0] == errno.ENODEV
    model.fault = None
    bme = bme280.BME280(bus())
    model.fault = "nack"
    assert raises(OSError, bme.read).args[0] == errno.ENODEV


def test_clock_stretch():
    model, bme = wired()
    model.stretch_us = 20000  # within the 50 ms bus timeout: slow but fine
    assert bme.read()[0] == 2100
    model.stretch_us = 80000
    assert raises(OSError, bme.read).args[0] == errno.ETIMEDOUT


def test_no_conversion_reads_reset_values():
    model, bme = wired()
    model.brownout = True  # the chip resets as the conversion starts
    assert "reset values" in str(raises(ImpossibleValue, bme.read))
    assert model.mode == 0
    model.brownout = False
    assert bme.read()[0] == 2100


def test_one_channel_at_its_reset_value_is_a_reading():
    # 0x80000 alone is a real temperature (about 26.6 degC), not "no data"
    model, bme = wired()

    def temperature_0x80000(data):
        return data[:7] + b"\x80\x00\x00" + data[10:] if len(data) == 12 else data

    model.corrupt = temperature_0x80000
    t, p, h = bme.read()
    assert t == bme280.temperature(0x80000, CAL)[0] and 2600 < t < 2700


def test_still_measuring_after_the_maximum_time():
    model, bme = wired()
    model.delay_us = 5000
    assert "still measuring" in str(raises(ImpossibleValue, bme.read))


def test_out_of_range_raw_values():
    model, bme = wired()
    model.out_of_range = True
    assert "temperature" in str(raises(ImpossibleValue, bme.read))
    model.out_of_range = False
    model.temperature_c = 95.0
    assert "95.00 degC" in str(raises(ImpossibleValue, bme.read))
    model.temperature_c, model.pressure_pa = 21.0, 20000
    assert "pressure" in str(raises(ImpossibleValue, bme.read))
    model.pressure_pa, model.humidity = 101325, 115.0
    assert "humidity" in str(raises(ImpossibleValue, bme.read))
    model.humidity = 103.0  # just past 100: clamped, as the data sheet does
    assert bme.read()[2] == 102400


def test_stuck_model_returns_the_same_value():
    model, bme = wired()
    first = bme.read()
    model.stuck = True
    model.temperature_c, model.pressure_pa, model.humidity = 30.0, 90000, 80.0
    assert bme.read() == first
    assert model.conversions == 2


def test_spike_is_one_reading():
    model, bme = wired()
    model.spike = (40.0, 0, 0)
    assert bme.read()[0] == 6100
    assert bme.read()[0] == 2100
