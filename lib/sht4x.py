"""Sensirion SHT4x (SHT40/41/45) temperature and humidity sensor on I2C.

    sht = SHT4x(i2c)         # address 0x44 (0x45 and 0x46 for other variants)
    t, rh = sht.read()       # one high-precision measurement

read() returns integers:
    t   temperature in milli-degC      21500 = 21.5 degC
    rh  relative humidity in milli-%RH, clamped to 0..100000 as the data
        sheet says (the raw scale reaches -6..119 %RH)
Both are the data sheet's conversions done in integers, rounded:
    t  = -45000 + 175000 * S_T / 65535
    rh =  -6000 + 125000 * S_RH / 65535

A read sends the single-shot high-precision command (0xFD), sleeps 9 ms (the
data sheet's maximum is 8.3 ms; the chip NACKs its address while busy) and
reads T, CRC, RH, CRC. The chip then idles at its lowest power by itself.
reset() sends the soft reset (0x94), serial() reads the 32-bit serial number
(0x89).

Errors: the bus's OSError goes through (ENODEV: no answer, or still busy;
ETIMEDOUT: clock held too long). sensor.CRCError when a word's CRC-8 does not
match; sensor.ImpossibleValue when the temperature is outside -41..126 degC:
the part's -40..125 degC range plus 1 degC, so that a true reading at its edge
is kept while the raw extremes (-45 and 130 degC) are refused.
"""

import time

from micropython import const

from sensor import CRCError, ImpossibleValue

ADDRESS = const(0x44)
_MEASURE_HIGH = b"\xfd"
_SERIAL = b"\x89"
_SOFT_RESET = b"\x94"
T_MIN = const(-41000)  # operating range + 1 degC, milli-degC
T_MAX = const(126000)


def crc8(buf, start=0, end=2):
    """Sensirion CRC-8 of buf[start:end]: polynomial 0x31, init 0xFF."""
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def convert(s_t, s_rh):
    """Raw words -> (milli-degC, milli-%RH clamped to 0..100000)."""
    t = -45000 + (175000 * s_t + 32767) // 65535
    rh = -6000 + (125000 * s_rh + 32767) // 65535
    return t, min(max(rh, 0), 100000)


class SHT4x:
    def __init__(self, i2c, addr=ADDRESS):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(6)

    def _command(self, cmd, wait_ms, names):
        """Send cmd, wait, read two words -> (word0, word1), CRCs checked."""
        self.i2c.writeto(self.addr, cmd)
        time.sleep_ms(wait_ms)
        b = self._buf
        self.i2c.readfrom_into(self.addr, b)
        for i in (0, 3):
            crc = crc8(b, i, i + 2)
            if b[i + 2] != crc:
                raise CRCError("SHT4x: %s 0x%02x%02x came with CRC 0x%02x, its CRC is 0x%02x"
                               % (names[i // 3], b[i], b[i + 1], b[i + 2], crc))
        return (b[0] << 8) | b[1], (b[3] << 8) | b[4]

    def read_raw(self):
        """One high-precision measurement -> (S_T, S_RH), CRC-checked."""
        return self._command(_MEASURE_HIGH, 9, ("temperature", "humidity"))

    def read(self):
        """-> (milli-degC, milli-%RH); see the module doc."""
        s_t, s_rh = self.read_raw()
        t, rh = convert(s_t, s_rh)
        if not T_MIN <= t <= T_MAX:
            raise ImpossibleValue("SHT4x: temperature %d mdegC (raw 0x%04x) outside -41..126 degC"
                                  % (t, s_t))
        return t, rh

    def serial(self):
        """-> the 32-bit serial number."""
        # no time in the data sheet; Sensirion's own driver waits 10 ms
        hi, lo = self._command(_SERIAL, 10, ("serial number high word", "serial number low word"))
        return (hi << 16) | lo

    def reset(self):
        """Soft reset; the chip is ready again within 1 ms."""
        self.i2c.writeto(self.addr, _SOFT_RESET)
        time.sleep_ms(1)
