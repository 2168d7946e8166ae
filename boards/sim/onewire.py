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
        """Every ROM on the bus, by the binary-tree search of Maxim app note 187.
        At each bit where devices disagree the search takes 0 first, so the
        order is fixed by the ROMs alone (not by the wiring)."""
        roms = []
        rom = bytearray(8)
        last_fork = -1  # highest bit where the previous pass took the 0 branch
        for _ in range(255):  # a bound, in case a noisy bus never lets it finish
            fork = self._search_pass(rom, last_fork)
            if fork is None:
                break
            roms.append(bytearray(rom))
            if fork < 0:
                break
            last_fork = fork
        return roms

    def _search_pass(self, rom, last_fork):
        """One pass down the tree, rewriting rom in place. Returns the new last
        fork (-1 when this was the last device), or None if nothing answered."""
        if not self.reset():
            return None
        self.writebyte(self.SEARCH_ROM)
        fork = -1
        for i in range(64):
            byte, mask = i >> 3, 1 << (i & 7)
            bit = self.readbit()
            complement = self.readbit()
            if bit and complement:  # no device is taking part any more
                return None
            if bit == complement:  # both 0: devices disagree at this bit
                if i < last_fork:
                    bit = 1 if rom[byte] & mask else 0  # retrace the previous path
                else:
                    bit = 1 if i == last_fork else 0  # the 1 branch of the last fork
                if not bit:
                    fork = i
            if bit:
                rom[byte] |= mask
            else:
                rom[byte] &= ~mask
            self.writebit(bit)
        if not any(rom):  # the line is held low (a short): nothing to find
            return None
        return fork

    def crc8(self, data):
        return _ow.crc8(data)
