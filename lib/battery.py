"""Battery voltage (or any analog input behind a divider) in integer millivolts.

    bat = battery.Battery(35, divider=(1000000 + 330000, 330000))   # R top + R bottom, R bottom
    mv = bat.read_mv()

ADC.read_uv() is the ESP32's own calibrated reading of the pad, so the divider
is plain arithmetic. Ratios are integer fractions (num, den), 2 or (2, 1) for
two equal resistors, so no float reaches the heap. A board measured against a
meter can give calibration points [(pad_uv, true_mv), ...] instead: read_mv()
then interpolates between them, and beyond the ends extends the end segments.
The points already contain the divider, which is then not used.

A reading pinned at 0 or at full scale is ImpossibleValue: the node is running,
so its battery is neither 0 V nor above the range; the divider is open or shorted.
"""

import machine
from sensor import ImpossibleValue


def _div_round(a, b):
    """a / b rounded to the nearest integer (b > 0)."""
    return (2 * a + b) // (2 * b)


def interpolate(points, x):
    """Piecewise-linear y at x through sorted points [(x, y), ...]."""
    i = 1
    while i < len(points) - 1 and x > points[i][0]:
        i += 1
    x0, y0 = points[i - 1]
    x1, y1 = points[i]
    return y0 + _div_round((x - x0) * (y1 - y0), x1 - x0)


class Battery:
    def __init__(self, adc, atten=machine.ADC.ATTN_11DB, divider=(2, 1), calibration=None,
                 samples=8):
        if not isinstance(adc, machine.ADC):
            if isinstance(adc, int):
                adc = machine.Pin(adc)
            adc = machine.ADC(adc)
        adc.atten(atten)
        self.adc = adc
        if isinstance(divider, int):
            divider = (divider, 1)
        self.num, self.den = divider
        if self.num <= 0 or self.den <= 0:
            raise ValueError("divider must be positive")
        self.points = None
        if calibration is not None:
            points = sorted(calibration)
            if len(points) < 2:
                raise ValueError("calibration needs 2 points or more")
            for i in range(1, len(points)):
                if points[i][0] == points[i - 1][0]:
                    raise ValueError("two calibration points at the same reading")
            self.points = points
        if samples < 1:
            raise ValueError("samples must be 1 or more")
        self.samples = samples

    def read_uv(self):
        """Microvolts at the pad, the mean of `samples` conversions."""
        raw = self.adc.read_u16()
        if raw == 0:
            raise ImpossibleValue("ADC reads 0: divider open at the top or input shorted to ground")
        if raw == 0xFFFF:
            raise ImpossibleValue("ADC at full scale: divider open at the bottom or input too high")
        total = 0
        for _ in range(self.samples):
            total += self.adc.read_uv()
        return _div_round(total, self.samples)

    def read_mv(self):
        uv = self.read_uv()
        if self.points is not None:
            return interpolate(self.points, uv)
        return _div_round(uv * self.num, self.den * 1000)
