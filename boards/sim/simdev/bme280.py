"""Register-level model of the Bosch BME280 (temperature, pressure, humidity).

A test sets the physical values and the model produces the raw ADC values the
chip would, through its own trimming registers:

    bme = BME280Model()
    bme.temperature_c, bme.pressure_pa, bme.humidity = 21.5, 101325, 45.0
    simstate.board.i2c[0] = {0x76: bme}

As on the chip: writes are (register, value) pairs (no auto-increment), reads
stream from an auto-incrementing pointer; ctrl_hum takes effect on the next
ctrl_meas write; a forced-mode write starts one conversion, "measuring" (status
bit 3) is set for the typical conversion time in virtual time, the data
registers change when it ends and the mode bits return to sleep (00); a
skipped channel, and every channel before the first conversion, reads its
reset value (0x80000, humidity 0x8000); without the IIR filter the resolution
is 16 bits at x1 oversampling up to 20 bits at x16 (20 bits with the filter);
0xB6 to 0xE0 resets. Normal mode (11) is not modelled beyond one conversion:
the mode bits stay 11, enough to show that the chip was left awake. The NVM
copy after a reset (status bit 0) is not modelled.

Raw values come from inverting the data sheet's floating-point compensation by
bisection, so the driver's integer code is checked against other code.

Faults, besides simdev's fault/stretch_us/corrupt:
  stuck = True         conversions keep producing the last raw sample
  spike = (dt_c, dp_pa, dh)   the next conversion only reads this far off
  out_of_range = True  conversions produce 0xFFFFF (T, P) and 0xFFFF (H)
  brownout = True      starting a conversion resets the chip (weak supply)
  delay_us = N         conversions take N us longer than typical
"""

import struct

import simdev
from simstate import board

CHIP_ID = 0x60
# T and P: the BMP280 data sheet's worked example (section 3.12); H: a real
# BME280 (0xA1 = 0x4B, 0xE1..0xE7 = 6A 01 00 13 2B 03 1E).
TRIMMING = (27504, 26435, -1000,
            36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
            75, 362, 0, 315, 50, 30)
_OSRS = (0, 1, 2, 4, 8, 16, 16, 16)  # register code -> oversampling
_IIR = (1, 2, 4, 8, 16, 16, 16, 16)  # register code -> filter coefficient


class BME280Model(simdev.RegisterDevice):
    def __init__(self, trimming=TRIMMING):
        simdev.RegisterDevice.__init__(self)
        self.cal = tuple(trimming)
        self.temperature_c = 21.0
        self.pressure_pa = 101325.0
        self.humidity = 45.0
        self.stuck = False
        self.spike = None
        self.out_of_range = False
        self.brownout = False
        self.delay_us = 0
        self.conversions = 0  # conversions started
        self.resets = 0  # soft resets and brown-outs
        c = self.cal
        self.regs[0xD0] = CHIP_ID
        struct.pack_into("<HhhHhhhhhhhh", self.regs, 0x88, *c[:12])
        self.regs[0xA1] = c[12]
        h4, h5 = c[15] & 0xFFF, c[16] & 0xFFF  # 12-bit two's complement
        struct.pack_into("<hBBBBb", self.regs, 0xE1, c[13], c[14],
                         h4 >> 4, ((h5 & 0x0F) << 4) | (h4 & 0x0F), h5 >> 4, c[17])
        self._reset()

    def _reset(self):
        for r in range(0xF2, 0xFF):
            self.regs[r] = 0
        self.regs[0xF7] = self.regs[0xFA] = self.regs[0xFD] = 0x80
        self.osrs_h_active = 0  # ctrl_hum as latched by the last ctrl_meas write
        self._pending = None  # raw (t, p, h) of the conversion under way
        self._done_us = 0
        self._filtered = None  # IIR filter memory (raw t, p)
        self._last = None

    # ------------------------------------------------------------ bus side
    def i2c_write(self, data):
        self._update()
        if len(data) % 2:
            self.ptr = data[-1]  # a lone register address sets the read pointer
        for i in range(0, len(data) - 1, 2):
            self.write_reg(data[i], data[i + 1])

    def i2c_read(self, n):
        self._update()
        return simdev.RegisterDevice.i2c_read(self, n)

    def write_reg(self, reg, value):
        if reg == 0xE0:
            if value == 0xB6:
                self.resets += 1
                self._reset()
        elif reg == 0xF2:
            self.regs[0xF2] = value & 0x07
        elif reg == 0xF5:
            self.regs[0xF5] = value & 0xFD
        elif reg == 0xF4:
            self.regs[0xF4] = value
            self.osrs_h_active = self.regs[0xF2]
            if value & 0x03:
                self._start()
        # the rest is read-only

    def read_reg(self, reg):
        if reg == 0xF3:
            return 0x08 if self._pending is not None else 0
        return self.regs[reg]

    @property
    def mode(self):
        """0 sleep, 1 or 2 forced, 3 normal (as ctrl_meas reads now)."""
        self._update()
        return self.regs[0xF4] & 0x03

    # ------------------------------------------------------------ conversions
    def measurement_us(self):
        """The data sheet's typical conversion time (appendix B)."""
        m = self.regs[0xF4]
        t, p, h = _OSRS[m >> 5], _OSRS[(m >> 2) & 7], _OSRS[self.osrs_h_active]
        us = 1000 + 2000 * t + self.delay_us
        if p:
            us += 2000 * p + 500
        if h:
            us += 2000 * h + 500
        return us

    def _start(self):
        self.conversions += 1
        if self.brownout:
            self.resets += 1
            self._reset()
            return
        self._pending = self._convert()
        self._done_us = board.world_us + self.measurement_us()

    def _update(self):
        if self._pending is None or board.world_us < self._done_us:
            return
        t, p, h = self._last = self._pending
        self._pending = None
        self.regs[0xF7:0xFF] = bytes((p >> 12, (p >> 4) & 0xFF, (p & 0x0F) << 4,
                                      t >> 12, (t >> 4) & 0xFF, (t & 0x0F) << 4,
                                      h >> 8, h & 0xFF))
        if self.regs[0xF4] & 0x03 != 0x03:
            self.regs[0xF4] &= 0xFC  # forced mode: back to sleep

    def _convert(self):
        m = self.regs[0xF4]
        ot, op, oh = m >> 5, (m >> 2) & 7, self.osrs_h_active
        if self.out_of_range:
            return (0xFFFFF, 0xFFFFF if op else 0x80000, 0xFFFF if oh else 0x8000)
        if self.stuck and self._last is not None:
            return self._last
        temp, pres, hum = self.temperature_c, self.pressure_pa, self.humidity
        if self.spike is not None:
            temp, pres, hum = temp + self.spike[0], pres + self.spike[1], hum + self.spike[2]
            self.spike = None
        coeff = _IIR[(self.regs[0xF5] >> 2) & 7]
        t = _invert(lambda r: self._t_double(r)[0], temp, 0xFFFFF, True)
        if coeff == 1:  # no filter: 16 bits at x1 ... 20 bits at x16
            t = _quantise(t, ot)
        t_fine = self._t_double(t)[1]
        p = _invert(lambda r: self._p_double(r, t_fine), pres, 0xFFFFF, False)
        h = _invert(lambda r: self._h_double(r, t_fine), hum, 0xFFFF, True)
        if coeff == 1:
            p = _quantise(p, op)
        elif self._filtered is not None:
            t = (self._filtered[0] * (coeff - 1) + t) // coeff
            p = (self._filtered[1] * (coeff - 1) + p) // coeff
        self._filtered = (t, p)
        return (t if ot else 0x80000, p if op else 0x80000, h if oh else 0x8000)

    # The data sheet's double-precision compensation (section 8.1).
    def _t_double(self, adc_t):
        t1, t2, t3 = self.cal[0:3]
        var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
        x = adc_t / 131072.0 - t1 / 8192.0
        var2 = x * x * t3
        return (var1 + var2) / 5120.0, int(var1 + var2)

    def _p_double(self, adc_p, t_fine):
        p1, p2, p3, p4, p5, p6, p7, p8, p9 = self.cal[3:12]
        var1 = t_fine / 2.0 - 64000.0
        var2 = var1 * var1 * p6 / 32768.0
        var2 = var2 + var1 * p5 * 2.0
        var2 = var2 / 4.0 + p4 * 65536.0
        var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
        var1 = (1.0 + var1 / 32768.0) * p1
        p = 1048576.0 - adc_p
        p = (p - var2 / 4096.0) * 6250.0 / var1
        var1 = p9 * p * p / 2147483648.0
        var2 = p * p8 / 32768.0
        return p + (var1 + var2 + p7) / 16.0

    def _h_double(self, adc_h, t_fine):
        h1, h2, h3, h4, h5, h6 = self.cal[12:18]
        v = t_fine - 76800.0
        v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * (
            h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
        return v * (1.0 - h1 * v / 524288.0)  # unclamped: the inversion needs it monotonic


def _invert(f, target, top, rising):
    """The raw value in 0..top whose f(raw) is nearest to target (f monotonic)."""
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi) // 2
        if (f(mid) < target) == rising:
            lo = mid + 1
        else:
            hi = mid
    if lo > 0 and abs(f(lo - 1) - target) <= abs(f(lo) - target):
        lo -= 1
    return lo


def _quantise(raw, code):
    """A 20-bit raw value at the resolution of oversampling code 1..5 (16..20 bits)."""
    step = 1 << (5 - min(max(code, 1), 5))
    return min((raw + step // 2) // step * step, 0x100000 - step)
