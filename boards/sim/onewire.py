"""The `onewire` module frozen into the ESP32 firmware (micropython-lib drivers/onewire),
written to its public API on top of `_onewire`.

    ow = onewire.OneWire(machine.Pin(4))
    roms = ow.scan()          # 8-byte bytearrays, in search order
    ow.reset(True)            # OneWireError if nothing answers
    ow.select_rom(roms[0])    # then function commands with writebyte/readinto
"""

import _onewire as _ow


class OneWireError(Exception):
    pass


class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        self.pin = pin
        self.pin.init(pin.OPEN_DRAIN, pin.PULL_UP)

    def reset(self, required=False):
        present = _ow.reset(self.pin)
        if required and not present:
            raise OneWireError
        return present

    def readbit(self):
        return _ow.readbit(self.pin)

    def readbyte(self):
        return _ow.readbyte(self.pin)

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = _ow.readbyte(self.pin)

    def write(self, buf):
        for b in buf:
            _ow.writebyte(self.pin, b)

    def writebit(self, value):
        return _ow.writebit(self.pin, value)

    def writebyte(self, value):
        return _ow.writebyte(self.pin, value)

    def select_rom(self, rom):
        self.reset()
        self.writebyte(self.MATCH_ROM)
        self.write(rom)

    def scan(self):
        """Every ROM on the bus, by the binary-tree search of Maxim app note 187,
        in the order the ESP32's frozen onewire module finds them: at a bit
        where devices disagree, the 1 branch first."""
        roms = []
        last = None
        fork = 65  # above every bit: the first pass takes 1 at each disagreement
        for _ in range(255):  # a bound, in case a noisy bus never lets it finish
            rom, fork = self._search_pass(last, fork)
            if rom is not None:
                roms.append(rom)
                last = rom
            if not fork:
                break
        return roms

    def _search_pass(self, last, fork):
        """One pass down the tree. Bits are numbered 64 (first) down to 1. At a
        disagreement above `fork`, or below it where the last ROM had a 1, take
        1 and remember the spot; at `fork` itself take 0 (the branch left).
        Returns (rom, the lowest spot where 1 was taken: 0 when none), or
        (None, 0) when nothing answered."""
        if not self.reset():
            return None, 0
        self.writebyte(self.SEARCH_ROM)
        rom = bytearray(8)
        next_fork = 0
        n = 64
        for byte in range(8):
            for bit in range(8):
                b = self.readbit()
                if self.readbit():
                    if b:  # no device is taking part any more
                        return None, 0
                elif not b:  # both 0: devices disagree at this bit
                    had_one = last is not None and last[byte] & (1 << bit)
                    if fork > n or (had_one and fork != n):
                        b = 1
                        next_fork = n
                self.writebit(b)
                if b:
                    rom[byte] |= 1 << bit
                n -= 1
        return rom, next_fork

    def crc8(self, data):
        return _ow.crc8(data)
