"""Bosch BME280 temperature, pressure and humidity sensor on I2C.

    bme = BME280(i2c)        # address 0x76 (SDO to GND), 0x77 with SDO high
    t, p, h = bme.read()     # one forced measurement; the chip then sleeps again

read() returns integers, the data sheet's own fixed-point outputs:
    t  temperature in 0.01 degC              2508     = 25.08 degC
    p  pressure in Pa * 256 (Q24.8)          25767233 = 100653.25 Pa, None if skipped
    h  relative humidity in %RH * 1024 (Q22.10)  47445 = 46.333 %RH, None if skipped
read_float() gives the same in degC, Pa and %RH.

Every read writes the settings and starts one forced-mode conversion, waits the
data sheet's maximum conversion time for those settings (appendix B), and
reads status and data in one transfer. In forced mode the chip goes back to
sleep by itself once the conversion is done (0.1 uA).

Oversampling of each channel is 0 (skipped), 1, 2, 4, 8 or 16; temperature
cannot be skipped, as pressure and humidity are compensated with it. The IIR
filter coefficient is 0 (off), 2, 4, 8 or 16. The defaults (x1, no filter)
are the data sheet's "weather monitoring" settings.

Errors: the bus's OSError goes through (ENODEV: no answer, ETIMEDOUT: clock
held too long). sensor.ImpossibleValue, with a message saying what was wrong:
  - the chip id is not 0x60 (another chip, or a corrupted transfer);
  - the data bytes are all 0x00 or all 0xFF (a bus stuck low or high);
  - the chip is still measuring after the maximum time (stale data);
  - temperature, pressure (and humidity) hold their reset values 0x80000 and
    0x8000: no conversion took place (a brown-out reset, for instance). One
    channel alone at that value is a legitimate reading (0x80000 is about
    27 degC on a typical part), so all enabled channels must show it;
  - bits 3..0 of a xlsb register are set (the chip always reads them as 0);
  - temperature outside -45..90 degC, pressure outside 250..1150 hPa or
    humidity outside -10..110 %RH: the part's operating range (-40..85 degC,
    300..1100 hPa, 0..100 %RH) with a margin, so that a true reading at its
    edge is kept. Humidity just past 0..100 is clamped, as the data sheet does.
A value that is stuck, or a single spike, is not the driver's to judge.
"""

import struct
import time

from micropython import const

from sensor import ImpossibleValue

ADDRESS = const(0x76)
CHIP_ID = const(0x60)
_REG_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_FORCED = const(0x01)
_MEASURING = const(0x08)
_NO_DATA_TP = const(0x80000)  # reset value of the temperature and pressure registers
_NO_DATA_H = const(0x8000)  # ... and of the humidity registers

OVERSAMPLING = (0, 1, 2, 4, 8, 16)  # index = register code
IIR = (0, 2, 4, 8, 16)

# Plausible readings: the operating range with a margin (see the module doc)
T_MIN = const(-4500)  # 0.01 degC
T_MAX = const(9000)
P_MIN = const(25000 * 256)  # Pa * 256
P_MAX = const(115000 * 256)
H_MIN = const(-10 * 1024)  # %RH * 1024
H_MAX = const(110 * 1024)

_ZEROS = bytes(12)
_ONES = b"\xff" * 12


def max_measurement_ms(osrs_t, osrs_p, osrs_h):
    """The data sheet's maximum conversion time (appendix B), rounded up to ms."""
    us = 1250 + 2300 * osrs_t
    if osrs_p:
        us += 2300 * osrs_p + 575
    if osrs_h:
        us += 2300 * osrs_h + 575
    return (us + 999) // 1000


def _code(value, allowed, what):
    if value not in allowed:
        raise ValueError("BME280: %s must be one of %s, not %r" % (what, allowed, value))
    return allowed.index(value)


# The data sheet's integer compensation (section 4.2.3). cal holds the trimming
# values in data sheet order: T1 T2 T3 P1..P9 H1..H6.
def temperature(adc_t, cal):
    """-> (temperature in 0.01 degC, t_fine) (BME280_compensate_T_int32)."""
    t1 = cal[0]
    var1 = (((adc_t >> 3) - (t1 << 1)) * cal[1]) >> 11
    x = (adc_t >> 4) - t1
    var2 = (((x * x) >> 12) * cal[2]) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def pressure(adc_p, t_fine, cal):
    """-> pressure in Pa * 256 (BME280_compensate_P_int64)."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * cal[8]
    var2 += (var1 * cal[7]) << 17
    var2 += cal[6] << 35
    var1 = ((var1 * var1 * cal[5]) >> 8) + ((var1 * cal[4]) << 12)
    var1 = (((1 << 47) + var1) * cal[3]) >> 33
    if var1 == 0:
        return 0  # as the data sheet: avoids a division by zero
    p = 1048576 - adc_p
    # // floors where C truncates: they differ only for a negative numerator,
    # that is for raw values far outside the pressure range (refused anyway)
    p = ((p << 31) - var2) * 3125 // var1
    var1 = (cal[11] * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal[10] * p) >> 19
    return ((p + var1 + var2) >> 8) + (cal[9] << 4)


def humidity(adc_h, t_fine, cal, clamp=True):
    """-> relative humidity in %RH * 1024 (bme280_compensate_H_int32);
    clamp=False skips the final clamp to 0..100 %RH."""
    h1, h2, h3, h4, h5, h6 = cal[12:18]
    v = t_fine - 76800
    v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * (
        ((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14
    )
    v -= ((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4
    if clamp:
        v = min(max(v, 0), 419430400)
    return v >> 12


class BME280:
    def __init__(self, i2c, addr=ADDRESS, osrs_t=1, osrs_p=1, osrs_h=1, iir=0):
        if osrs_t == 0:
            raise ValueError("BME280: temperature cannot be skipped: pressure and humidity need it")
        t = _code(osrs_t, OVERSAMPLING, "osrs_t")
        p = _code(osrs_p, OVERSAMPLING, "osrs_p")
        h = _code(osrs_h, OVERSAMPLING, "osrs_h")
        f = _code(iir, IIR, "iir")
        self.i2c = i2c
        self.addr = addr
        self.pressure_on = osrs_p != 0
        self.humidity_on = osrs_h != 0
        self.wait_ms = max_measurement_ms(osrs_t, osrs_p, osrs_h)
        # One write of (register, value) pairs: the BME280 does not auto-increment
        # on writes, and ctrl_hum only takes effect on the ctrl_meas write after it.
        self._start = bytes((_REG_CTRL_HUM, h, _REG_CONFIG, f << 2,
                             _REG_CTRL_MEAS, (t << 5) | (p << 2) | _FORCED))
        self._buf = bytearray(12)  # 0xF3..0xFE: status, ctrl_meas, config, -, data
        chip = i2c.readfrom_mem(addr, _REG_ID, 1)[0]
        if chip != CHIP_ID:
            raise ImpossibleValue("BME280: chip id 0x%02x at 0xD0, expected 0x60%s"
                                  % (chip, " (0x58 is a BMP280)" if chip == 0x58 else ""))
        self.cal = self._read_trimming()

    def _read_trimming(self):
        tp = self.i2c.readfrom_mem(self.addr, 0x88, 26)
        hb = self.i2c.readfrom_mem(self.addr, 0xE1, 7)
        if tp == bytes(26) or tp == b"\xff" * 26:
            raise ImpossibleValue("BME280: trimming registers 0x88..0xA1 all 0x%02x" % tp[0])
        h2, h3, e4, e5, e6, h6 = struct.unpack("<hBbBbb", hb)
        # H4 and H5 are 12-bit signed values sharing register 0xE5
        h4 = (e4 << 4) | (e5 & 0x0F)
        h5 = (e6 << 4) | (e5 >> 4)
        return struct.unpack("<HhhHhhhhhhhh", tp[:24]) + (tp[25], h2, h3, h4, h5, h6)

    def reset(self):
        """Soft reset: the full power-on sequence; the chip then sleeps with
        its default settings (which the next read() writes again)."""
        self.i2c.writeto(self.addr, bytes((_REG_RESET, 0xB6)))
        time.sleep_ms(2)  # start-up time

    def read_raw(self):
        """One forced conversion -> (adc_t, adc_p, adc_h), checked."""
        self.i2c.writeto(self.addr, self._start)
        time.sleep_ms(self.wait_ms)
        b = self._buf
        self.i2c.readfrom_mem_into(self.addr, _REG_STATUS, b)
        if b == _ZEROS or b == _ONES:
            raise ImpossibleValue("BME280: status and data read all 0x%02x (bus stuck?)" % b[0])
        if b[0] & _MEASURING:
            raise ImpossibleValue("BME280: still measuring %d ms after the start, the data "
                                  "sheet's maximum: stale data" % self.wait_ms)
        adc_p = (b[4] << 12) | (b[5] << 4) | (b[6] >> 4)
        adc_t = (b[7] << 12) | (b[8] << 4) | (b[9] >> 4)
        adc_h = (b[10] << 8) | b[11]
        if (adc_t == _NO_DATA_TP and (adc_p == _NO_DATA_TP or not self.pressure_on)
                and (adc_h == _NO_DATA_H or not self.humidity_on)):
            raise ImpossibleValue("BME280: data registers hold their reset values: "
                                  "no conversion took place")
        if (b[6] | b[9]) & 0x0F:
            raise ImpossibleValue("BME280: xlsb bits 3..0 read 0x%x, 0x%x (always 0 on the chip)"
                                  % (b[6] & 0x0F, b[9] & 0x0F))
        return adc_t, adc_p, adc_h

    def read(self):
        """-> (0.01 degC, Pa * 256 or None, %RH * 1024 or None); see the module doc."""
        adc_t, adc_p, adc_h = self.read_raw()
        cal = self.cal
        t, t_fine = temperature(adc_t, cal)
        if not T_MIN <= t <= T_MAX:
            raise ImpossibleValue("BME280: temperature %.2f degC (raw 0x%05x) outside -45..90 degC"
                                  % (t / 100, adc_t))
        p = h = None
        if self.pressure_on:
            p = pressure(adc_p, t_fine, cal)
            if not P_MIN <= p <= P_MAX:
                raise ImpossibleValue("BME280: pressure %.2f hPa (raw 0x%05x) outside 250..1150 hPa"
                                      % (p / 25600, adc_p))
        if self.humidity_on:
            h = humidity(adc_h, t_fine, cal, clamp=False)
            if not H_MIN <= h <= H_MAX:
                raise ImpossibleValue("BME280: humidity %.1f %%RH (raw 0x%04x) outside "
                                      "-10..110 %%RH" % (h / 1024, adc_h))
            h = min(max(h, 0), 102400)
        return t, p, h

    def read_float(self):
        """-> (degC, Pa or None, %RH or None), for people; allocates floats."""
        t, p, h = self.read()
        return t / 100, None if p is None else p / 256, None if h is None else h / 1024
