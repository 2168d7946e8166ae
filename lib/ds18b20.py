"""DS18B20 temperature sensors on a 1-Wire bus.

    ow = onewire.OneWire(machine.Pin(4))
    ds = ds18b20.DS18B20(ow)
    roms = ds.scan()
    ds.convert()                 # every sensor at once (SKIP ROM), waits tCONV
    t = ds.read(roms[0])         # 21313 = 21.313 degC

Temperatures are integers in milli-degC: floats live on the heap on the ESP32
port and the filters downstream work on ints. The sensor counts 1/16 degC
(62.5 mdegC), so odd counts are rounded half away from zero (+25.0625 -> 25063).

What read() raises, so the caller can count each reason:
- OSError(ENODEV): no presence pulse, or the scratchpad reads all FFh. Nobody
  drove the line, as when the sensor addressed by MATCH ROM has left a bus where
  others still answer the reset: a missing device, like a missing I2C address.
  (A real scratchpad is never all FFh: config bit 7 reads 0, byte 7 is 10h.)
- OSError(EIO): the scratchpad reads all 00h, whose CRC is 0: the line is held low.
- CRCError: the scratchpad's CRC-8 does not match its bytes.
- ImpossibleValue: below -55 or above +125 degC; the sensor is at a higher
  resolution than the driver waited for (its conversion had not finished); or
  the power-on value 85 degC that is not confirmed (below).

The 85 degC rule. The temperature register powers up at 0550h (+85 degC) and
keeps it until a conversion completes, so 85 usually means "no conversion" (none
was started, the wait was cut short, or the sensor browned out and reset while
converting). A real 85 degC is possible, so read() confirms it: it converts that
sensor once more, with TL (a user byte) changed by one bit for the duration. A
sensor that resets reloads TL from its EEPROM, so the marker tells a reset from a
real 85. 85 is returned only if the second conversion gives 85 again and the
marker survived; TL is then put back. Otherwise ImpossibleValue; the second
conversion's result stays in the sensor, so read() again returns it at once.
read(rom, trust_85=True) skips the check.

The resolution is one per bus (set_resolution): convert() waits tCONV for it.
It is written to the scratchpad only, not to EEPROM (no wear, no 10 ms strong
pull-up): a sensor that loses power comes back at its EEPROM resolution, and the
85 check above writes the driver's resolution back. Externally powered sensors
only: parasite power needs a strong pull-up during conversion.
"""

import errno
import time

from micropython import const
from sensor import CRCError, ImpossibleValue

FAMILY = const(0x28)
_SKIP_ROM = const(0xCC)
_MATCH_ROM = const(0x55)
_CONVERT_T = const(0x44)
_READ_SCRATCHPAD = const(0xBE)
_WRITE_SCRATCHPAD = const(0x4E)
_POWER_ON_RAW = const(0x0550)  # +85 degC
_MIN_RAW = const(-880)  # -55 degC in 1/16 degC
_MAX_RAW = const(2000)  # +125 degC
_CONVERSION_MS = (94, 188, 375, 750)  # tCONV max at 9..12 bits: 93.75, 187.5, 375, 750 ms
_ALL_FF = b"\xff" * 9
_ALL_00 = b"\x00" * 9


def _signed(raw):
    return raw - 0x10000 if raw & 0x8000 else raw


def mdegc(raw):
    """The 16-bit temperature register (two's complement, 1/16 degC) in milli-degC."""
    raw = _signed(raw)
    m = (abs(raw) * 125 + 1) >> 1  # raw * 62.5, half away from zero
    return -m if raw < 0 else m


def _config(bits):
    return ((bits - 9) << 5) | 0x1F  # R1R0 in bits 6..5; the low five read 1


class DS18B20:
    def __init__(self, ow):
        self.ow = ow
        self.bits = 12  # the factory setting and the longest wait: safe until told
        self._buf = bytearray(9)

    def scan(self):
        """ROMs of the DS18B20s on the bus (family 28h, ROM CRC good), in search order."""
        crc8 = self.ow.crc8
        return [rom for rom in self.ow.scan() if rom[0] == FAMILY and crc8(rom) == 0]

    def set_resolution(self, bits, roms=None):
        """9..12 bits on the given sensors (default: all found by scan()),
        keeping their TH/TL; read back to check it took, as the datasheet advises
        (OSError EIO if it did not)."""
        if bits < 9 or bits > 12:
            raise ValueError("resolution is 9..12 bits")
        cfg = _config(bits)
        if roms is None:
            roms = self.scan()
        for rom in roms:
            sp = self._scratchpad(rom)
            th, tl = sp[2], sp[3]
            self._write_scratchpad(rom, th, tl, cfg)
            sp = self._scratchpad(rom)
            if sp[2] != th or sp[3] != tl or (sp[4] & 0x60) != (cfg & 0x60):
                raise OSError(errno.EIO)
        self.bits = bits

    def convert(self, rom=None):
        """Start a conversion on one sensor, or on all (rom=None), and wait for it."""
        self._select(rom)
        self.ow.writebyte(_CONVERT_T)
        time.sleep_ms(_CONVERSION_MS[self.bits - 9])

    def read(self, rom=None, trust_85=False):
        """The last conversion of the sensor with this ROM (None: the only sensor
        on the bus), in milli-degC. See the module notes for what it raises."""
        sp = self._scratchpad(rom)
        raw = sp[0] | (sp[1] << 8)
        if raw == _POWER_ON_RAW and not trust_85:
            return self._confirm_85(rom, sp[2], sp[3])
        bits = 9 + ((sp[4] >> 5) & 3)
        if bits > self.bits:
            msg = "sensor at %d bits, waited for %d: conversion not done"
            raise ImpossibleValue(msg % (bits, self.bits))
        raw &= 0xFFFF << (12 - bits)  # low bits are undefined below 12 bits
        if not _MIN_RAW <= _signed(raw) <= _MAX_RAW:
            raise ImpossibleValue("%d mdegC is outside -55..+125 degC" % mdegc(raw))
        return mdegc(raw)

    def _confirm_85(self, rom, th, tl):
        cfg = _config(self.bits)
        self._write_scratchpad(rom, th, tl ^ 1, cfg)
        self.convert(rom)
        sp = self._scratchpad(rom)
        raw = sp[0] | (sp[1] << 8)
        marker_kept = sp[3] == tl ^ 1
        self._write_scratchpad(rom, th, tl, cfg)
        if not marker_kept:
            raise ImpossibleValue("85 degC power-on value: sensor reset while converting")
        if raw != _POWER_ON_RAW:
            raise ImpossibleValue("85 degC power-on value: no conversion had completed (now done)")
        return 85000

    def _select(self, rom):
        if not self.ow.reset():
            raise OSError(errno.ENODEV)
        if rom is None:
            self.ow.writebyte(_SKIP_ROM)
        else:
            self.ow.writebyte(_MATCH_ROM)
            self.ow.write(rom)

    def _scratchpad(self, rom):
        """All nine bytes, checked. Reading them all leaves the sensor idle."""
        self._select(rom)
        self.ow.writebyte(_READ_SCRATCHPAD)
        sp = self._buf
        self.ow.readinto(sp)
        if sp == _ALL_FF:
            raise OSError(errno.ENODEV)
        if sp == _ALL_00:
            raise OSError(errno.EIO)
        if self.ow.crc8(sp):
            raise CRCError("DS18B20 scratchpad CRC mismatch")
        return sp

    def _write_scratchpad(self, rom, th, tl, cfg):
        self._select(rom)
        self.ow.writebyte(_WRITE_SCRATCHPAD)
        self.ow.writebyte(th)
        self.ow.writebyte(tl)
        self.ow.writebyte(cfg)
