"""A DS18B20 on the simulated 1-Wire bus, at the level of time slots (see _onewire).

    s = DS18B20(0x0000000000A1)           # 48-bit serial; family 0x28 and CRC added
    simstate.board.onewire = {4: [s]}
    s.temperature_c = 21.3                # what the next conversion measures

It speaks the ROM commands READ ROM 33h, MATCH ROM 55h, SKIP ROM CCh, SEARCH ROM
F0h and the function commands CONVERT T 44h, READ SCRATCHPAD BEh and WRITE
SCRATCHPAD 4Eh. A conversion takes tCONV max of the datasheet in virtual time;
read slots during it return 0, after it 1. The temperature register holds the
power-on 0550h (+85 degC) until the first conversion ends.

Faults (set `fault`):
  "absent"    disconnected: no presence pulse, never drives the line
  "crc"       the scratchpad goes out with one bit flipped (its CRC no longer matches)
  "stuck"     every conversion gives fault_raw, whatever the temperature
  "spike"     the next conversion gives fault_raw, then the fault clears
              (a fault_raw beyond FC90h..07D0h is an out-of-range value)
  "brownout"  the chip resets half-way through every conversion: the scratchpad
              is back at its power-on state (85 degC, TH/TL/config from EEPROM)
  "short"     holds the line low (a crushed or wet cable)
"""

import simstate
from _onewire import crc8

FAMILY = 0x28
POWER_ON_RAW = 0x0550
CONVERSION_US = (93750, 187500, 375000, 750000)  # tCONV max at 9, 10, 11, 12 bits

# where the device is in a transaction
IDLE = 0  # waits for a reset pulse
ROM_COMMAND = 1
MATCH = 2
SEARCH = 3
FUNCTION = 4
CONVERTING = 5  # answers read slots with its busy status
SENDING = 6
WRITING = 7


class DS18B20:
    def __init__(self, serial=1, rom=None):
        if rom is None:
            rom = bytearray(8)
            rom[0] = FAMILY
            for i in range(6):
                rom[1 + i] = (serial >> (8 * i)) & 0xFF
            rom[7] = crc8(rom[:7])
        self.rom = bytes(rom)
        self.rom_bits = 0
        for i in range(8):
            self.rom_bits |= self.rom[i] << (8 * i)
        self.temperature_c = 25.0
        self.fault = None
        self.fault_raw = 0
        self.eeprom = bytearray(b"\x4b\x46\x7f")  # TH, TL, config as shipped (12 bits)
        self.conversions = 0  # CONVERT T commands received
        self.power_on()

    def power_on(self):
        th, tl, cfg = self.eeprom
        # byte 6 is reserved; 0Ch is what genuine parts show at power-up
        self.scratch = bytearray([0x50, 0x05, th, tl, cfg, 0xFF, 0x0C, 0x10])
        self.conv_end = None
        self.browning_out = False
        self.state = IDLE

    def scratchpad(self):
        """Bytes 0..7 as they are now (a conversion due by now has finished)."""
        self._tick()
        return bytes(self.scratch)

    def resolution(self):
        return 9 + ((self.scratch[4] >> 5) & 3)

    def quantise(self, celsius, bits):
        """celsius as the ADC reports it: nearest step, undefined low bits zero."""
        step = 1 << (12 - bits)
        n = int((celsius * 16 / step + 0.5) // 1)
        return (n * step) & 0xFFFF

    # ------------------------------------------------------------ time
    def _tick(self):
        """Finish a conversion whose time has come (the chip runs on its own clock)."""
        if self.conv_end is None or simstate.board.world_us < self.conv_end:
            return
        self.conv_end = None
        if self.browning_out:
            self.power_on()
            return
        if self.fault == "stuck" or self.fault == "spike":
            raw = self.fault_raw & 0xFFFF
            if self.fault == "spike":
                self.fault = None
        else:
            raw = self.quantise(self.temperature_c, self.conv_bits)
        self.scratch[0] = raw & 0xFF
        self.scratch[1] = raw >> 8

    # ------------------------------------------------------------ the bus
    def ow_reset(self):
        self._tick()
        if self.fault == "absent":
            return False
        self._receive(ROM_COMMAND, 8)
        return True

    def ow_drive(self):
        self._tick()
        if self.fault == "short":
            return 0
        if self.fault == "absent":
            return 1
        s = self.state
        if s == SENDING:
            return (self.out[self.pos >> 3] >> (self.pos & 7)) & 1
        if s == SEARCH:
            bit = (self.rom_bits >> self.pos) & 1
            return (bit, bit ^ 1, 1)[self.phase]  # bit, complement, then listen
        if s == CONVERTING:
            return 0 if self.conv_end is not None else 1
        return 1

    def ow_sample(self, level):
        if self.fault == "absent":
            return
        s = self.state
        if s == SENDING:
            self.pos += 1
            if self.pos == len(self.out) * 8:
                if self.then == FUNCTION:
                    self._receive(FUNCTION, 8)
                else:
                    self.state = IDLE  # further read slots get 1s
        elif s == SEARCH:
            if self.phase < 2:
                self.phase += 1
                return
            self.phase = 0
            if level != (self.rom_bits >> self.pos) & 1:
                self.state = IDLE  # the master went the other way: drop out
                return
            self.pos += 1
            if self.pos == 64:
                self._receive(FUNCTION, 8)
        elif s in (ROM_COMMAND, MATCH, FUNCTION, WRITING):
            self.acc |= level << self.pos
            self.pos += 1
            if self.pos == self.need:
                self._received(self.acc)

    def _receive(self, state, nbits):
        self.state = state
        self.need = nbits
        self.acc = 0
        self.pos = 0

    def _send(self, data, then=IDLE):
        self.out = data
        self.pos = 0
        self.then = then
        self.state = SENDING

    def _received(self, value):
        s = self.state
        if s == ROM_COMMAND:
            if value == 0x33:  # READ ROM
                self._send(self.rom, FUNCTION)
            elif value == 0x55:
                self._receive(MATCH, 64)
            elif value == 0xCC:
                self._receive(FUNCTION, 8)
            elif value == 0xF0:
                self.state = SEARCH
                self.pos = 0
                self.phase = 0
            else:
                self.state = IDLE
        elif s == MATCH:
            if value == self.rom_bits:
                self._receive(FUNCTION, 8)
            else:
                self.state = IDLE
        elif s == FUNCTION:
            self._function(value)
        elif s == WRITING:  # TH, TL, config; only R1R0 of config can be written
            self.scratch[2] = value & 0xFF
            self.scratch[3] = (value >> 8) & 0xFF
            self.scratch[4] = ((value >> 16) & 0x60) | 0x1F
            self.state = IDLE

    def _function(self, cmd):
        if cmd == 0x44:
            self.conversions += 1
            self.conv_bits = self.resolution()
            t = CONVERSION_US[self.conv_bits - 9]
            self.browning_out = self.fault == "brownout"
            if self.browning_out:
                t //= 2
            self.conv_end = simstate.board.world_us + t
            self.state = CONVERTING
        elif cmd == 0xBE:
            data = bytearray(self.scratch)
            data.append(crc8(self.scratch))
            if self.fault == "crc":
                data[0] ^= 0x01
            self._send(data)
        elif cmd == 0x4E:
            self._receive(WRITING, 24)
        else:
            self.state = IDLE
