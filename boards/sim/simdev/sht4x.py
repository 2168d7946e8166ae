"""Command-level model of the Sensirion SHT4x temperature and humidity sensor.

    sht = SHT4xModel()
    sht.temperature_c, sht.humidity = 21.5, 45.0
    simstate.board.i2c[0] = {0x44: sht}

As on the chip: a measurement command (0xFD high, 0xF6 medium, 0xE0 low
precision) keeps the chip busy for the data sheet's maximum time (8.3, 4.5,
1.6 ms) in virtual time, during which it NACKs its address (OSError ENODEV,
as a missing device); then one read returns T msb, T lsb, CRC, RH msb, RH lsb,
CRC (CRC-8, polynomial 0x31, init 0xFF). A read with nothing to send, or an
unknown command (the heater commands are not modelled), is NACKed too. 0x89
returns the serial number as two words with CRCs, 0x94 resets (busy 1 ms).

What a test can look at: busy, measurements, resets, commands (every command
byte received, in order).

Faults, besides simdev's fault/stretch_us/corrupt:
  bad_crc = True       the CRC bytes sent are wrong (the data is right)
  stuck = True         measurements keep returning the last raw words
  spike = (dt_c, dh)   the next measurement only reads this far off
  out_of_range = True  measurements return 0xFFFF, 0xFFFF (130 degC, 119 %RH)
"""

import errno

import simdev
from simstate import board

MEASURE_US = {0xFD: 8300, 0xF6: 4500, 0xE0: 1600}  # data sheet maxima
RESET_US = 1000
SERIAL_US = 1000  # not in the data sheet


def crc8(data):
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class SHT4xModel(simdev.I2CDevice):
    def __init__(self, serial=0x0B5E4A27):
        simdev.I2CDevice.__init__(self)
        self.serial = serial
        self.temperature_c = 21.0
        self.humidity = 45.0
        self.bad_crc = False
        self.stuck = False
        self.spike = None
        self.out_of_range = False
        self.measurements = 0
        self.resets = 0
        self.commands = []  # every command byte received, in order
        self._busy_until = 0
        self._out = None  # the response waiting to be read
        self._last = None  # raw (S_T, S_RH) of the last measurement

    @property
    def busy(self):
        return board.world_us < self._busy_until

    def _ack(self):
        if self.busy:
            raise OSError(errno.ENODEV)  # busy: the address is NACKed

    def i2c_write(self, data):
        self._ack()
        if len(data) != 1:
            raise OSError(errno.ENODEV)  # every command is one byte
        cmd = data[0]
        self.commands.append(cmd)
        if cmd in MEASURE_US:
            self.measurements += 1
            self._out = self._words(self._measure())
            self._busy_until = board.world_us + MEASURE_US[cmd]
        elif cmd == 0x89:
            self._out = self._words((self.serial >> 16, self.serial & 0xFFFF))
            self._busy_until = board.world_us + SERIAL_US
        elif cmd == 0x94:
            self.resets += 1
            self._out = None
            self._busy_until = board.world_us + RESET_US
        else:
            raise OSError(errno.ENODEV)

    def i2c_read(self, n):
        self._ack()
        if self._out is None:
            raise OSError(errno.ENODEV)  # nothing to send
        out, self._out = self._out, None
        return (out + b"\xff" * n)[:n]

    def _measure(self):
        if self.out_of_range:
            return (0xFFFF, 0xFFFF)
        if self.stuck and self._last is not None:
            return self._last
        t, rh = self.temperature_c, self.humidity
        if self.spike is not None:
            t, rh = t + self.spike[0], rh + self.spike[1]
            self.spike = None
        self._last = (_raw((t + 45.0) / 175.0), _raw((rh + 6.0) / 125.0))
        return self._last

    def _words(self, words):
        out = bytearray()
        for w in words:
            pair = bytes((w >> 8, w & 0xFF))
            out += pair + bytes((crc8(pair) ^ (0xFF if self.bad_crc else 0),))
        return bytes(out)


def _raw(fraction):
    return min(max(int(fraction * 65535 + 0.5), 0), 65535)
