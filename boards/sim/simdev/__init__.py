"""Register-level models of the chips on the simulated board's buses.

A driver under test talks bytes to these models through the fake machine.I2C,
so the driver's protocol code runs for real. Every model can be told to fail
the way parts fail on a bench:
  fault = "nack"     the chip does not acknowledge its address (OSError ENODEV)
  stretch_us = N     the chip holds SCL low N microseconds (past the bus
                     timeout: OSError ETIMEDOUT)
  corrupt = fn       fn(bytes) -> bytes mangles what the chip sends back
  rail = (pin, level) the chip is powered only while the board drives that pin
                     to that level (a switched sensor rail): unpowered, it NACKs

Models: bme280.BME280Model, sht4x.SHT4xModel (I2C), ds18b20 (1-Wire, slot
level, on board.onewire[pin] through the fake _onewire module).
"""


class I2CDevice:
    def __init__(self):
        self.fault = None
        self.stretch_us = 0
        self.corrupt = None
        self.rail = None

    def powered(self):
        if self.rail is None:
            return True
        from simstate import board

        return board.level(self.rail[0]) == self.rail[1]

    def i2c_write(self, data):
        """Bytes the controller wrote after our address."""

    def i2c_read(self, n):
        """n bytes to send back to the controller."""
        return b"\xff" * n

    def read_bytes(self, n):
        data = bytes(self.i2c_read(n))
        if self.corrupt is not None:
            data = bytes(self.corrupt(data))
        return data


class RegisterDevice(I2CDevice):
    """A chip with 8-bit register addresses and an auto-incrementing pointer:
    a write sets the pointer then fills registers; a read streams from it."""

    def __init__(self, size=256):
        I2CDevice.__init__(self)
        self.regs = bytearray(size)
        self.ptr = 0

    def i2c_write(self, data):
        if not data:
            return
        self.ptr = data[0]
        for b in data[1:]:
            self.write_reg(self.ptr, b)
            self.ptr = (self.ptr + 1) % len(self.regs)

    def i2c_read(self, n):
        out = bytearray(n)
        for i in range(n):
            out[i] = self.read_reg(self.ptr)
            self.ptr = (self.ptr + 1) % len(self.regs)
        return out

    def write_reg(self, reg, value):
        self.regs[reg] = value

    def read_reg(self, reg):
        return self.regs[reg]


def flip_bits(mask=0x01):
    """A corrupt= function that flips bits in every byte (a noisy bus)."""

    def corrupt(data):
        return bytes(b ^ mask for b in data)

    return corrupt
