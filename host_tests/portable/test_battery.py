# lib/battery: divider and calibration arithmetic on the simulated ADC.
import machine
import simstate
from battery import Battery, interpolate
from ptest import raises
from sensor import ImpossibleValue

PIN = 35
# read_uv() = raw * 2450000 // 4095 at 11 dB: exact for every multiple of 70000 uV
# (2450000 / 35 = 70000, 4095 / 35 = 117), so these values go through unrounded.
UV = 1050000  # raw 1755


def pad(uv):
    simstate.board.analog[PIN] = uv


def test_equal_resistors_double_the_pad_voltage():
    pad(UV)
    for divider in (2, (2, 1)):
        bat = Battery(PIN, divider=divider)
        mv = bat.read_mv()
        assert mv == 2100 and isinstance(mv, int)


def test_resistor_pair_as_integer_fraction():
    pad(UV)
    bat = Battery(machine.Pin(PIN), divider=(1000000 + 330000, 330000))
    assert bat.read_mv() == 4232  # 1.05 V * 133/33 = 4231.8 mV


def test_attenuation_is_applied_to_a_given_adc():
    adc = machine.ADC(machine.Pin(PIN), atten=machine.ADC.ATTN_0DB)
    pad(UV)  # beyond the 0 dB range, fine at 11 dB
    bat = Battery(adc)
    assert adc.atten() == machine.ADC.ATTN_11DB
    assert bat.read_mv() == 2100


def test_calibration_points_interpolate_and_extrapolate():
    cal = [(1400000, 2810), (700000, 1400), (1050000, 2120)]  # any order
    bat = Battery(PIN, calibration=cal, divider=(3, 1))  # the points win over the divider
    for uv, mv in ((700000, 1400), (1050000, 2120), (1400000, 2810),  # on the points
                   (840000, 1688),  # 1400 + 140000 * 720 / 350000
                   (1260000, 2534),  # 2120 + 210000 * 690 / 350000
                   (560000, 1112),  # below: first segment extended
                   (1680000, 3362)):  # above: last segment extended
        pad(uv)
        assert bat.read_mv() == mv, (uv, bat.read_mv(), mv)


def test_interpolate_rounds_to_nearest():
    pts = [(0, 0), (3, 1)]
    assert [interpolate(pts, x) for x in (1, 2, -1, -2)] == [0, 1, 0, -1]  # 1/3, 2/3, -1/3, -2/3


def test_bad_calibration_and_settings_are_refused():
    raises(ValueError, Battery, PIN, calibration=[(1000000, 2000)])
    raises(ValueError, Battery, PIN, calibration=[(1000000, 2000), (1000000, 2100)])
    raises(ValueError, Battery, PIN, divider=(0, 1))
    raises(ValueError, Battery, PIN, samples=0)


class ScriptedADC(machine.ADC):
    """An ADC whose conversions return a given sequence (to see the averaging)."""

    def __init__(self, values):
        machine.ADC.__init__(self, machine.Pin(PIN))
        self.values = list(values)

    def read_uv(self):
        return self.values.pop(0)

    def read_u16(self):
        return 30000


def test_averages_n_samples():
    adc = ScriptedADC([1000000, 1100000, 1000000, 1100000, 1000001, 1000000])
    bat = Battery(adc, samples=4)
    assert bat.read_uv() == 1050000
    assert adc.values == [1000001, 1000000]  # exactly 4 taken
    bat.samples = 2
    assert bat.read_mv() == 2000  # mean 1000000.5 -> 1000001 uV -> 2000.002 mV


def test_real_adc_noise_averages_out():
    b = simstate.board
    bat = Battery(PIN, samples=4)
    pad(UV)
    t0 = b.world_us
    # the pad steps between two exact levels during the sampling
    for k in range(8):
        b.schedule(t0 + 20 + 40 * k, "analog", PIN, UV if k % 2 else UV + 70000)
    assert 2100 < bat.read_mv() < 2240  # both levels were sampled


def test_pinned_readings_are_impossible():
    bat = Battery(PIN)
    pad(0)  # open at the top, or shorted to ground
    e = raises(ImpossibleValue, bat.read_mv)
    assert "0" in str(e)
    pad(3300000)  # open at the bottom: the battery straight on the pad
    e = raises(ImpossibleValue, bat.read_mv)
    assert "full scale" in str(e)
    pad(UV)
    assert bat.read_mv() == 2100
