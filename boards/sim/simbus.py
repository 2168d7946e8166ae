"""The buses of the fake `machine`: I2C and SPI to the device models of the
simulated board (boards/sim/simdev), re-exported by machine.py.

A transfer takes bus time (9 clocks a byte on I2C, 8 on SPI). A missing or
NACKing I2C device raises OSError(ENODEV); one that stretches the clock past
the bus timeout raises OSError(ETIMEDOUT). An SPI transfer reaches the model
whose chip-select pin is low; with none selected MISO reads 0xFF.
"""

import errno

from simstate import board


# ------------------------------------------------------------------ I2C
class I2C:
    """Hardware I2C. Devices are models on board.i2c[bus][addr] (see simdev)."""

    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        board.alive()
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % id)
        self.id = id
        self.freq = freq
        self.timeout_us = timeout

    def init(self, scl=None, sda=None, freq=400000, timeout=50000):
        self.freq = freq
        self.timeout_us = timeout

    def _dev(self, addr, nbytes):
        board.alive()
        # address byte + payload, 9 clocks each
        board.advance((nbytes + 1) * 9 * 1000000 // self.freq + 1)
        dev = board.i2c.get(self.id, {}).get(addr)
        if dev is None or dev.fault == "nack" or not dev.powered():
            raise OSError(errno.ENODEV)
        if dev.stretch_us:
            if dev.stretch_us > self.timeout_us:
                board.advance(self.timeout_us)
                raise OSError(errno.ETIMEDOUT)
            board.advance(dev.stretch_us)
        return dev

    def scan(self):
        board.alive()
        found = []
        for addr in range(0x08, 0x78):
            dev = board.i2c.get(self.id, {}).get(addr)
            if dev is not None and dev.fault != "nack":
                found.append(addr)
        board.advance(112 * 9 * 1000000 // self.freq)
        return found

    def writeto(self, addr, buf, stop=True):
        dev = self._dev(addr, len(buf))
        dev.i2c_write(bytes(buf))
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(b) for b in vector)
        return self.writeto(addr, data, stop)

    def readfrom(self, addr, nbytes, stop=True):
        dev = self._dev(addr, nbytes)
        return dev.read_bytes(nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        for i in range(len(buf)):
            buf[i] = data[i]

    def _memaddr(self, memaddr, addrsize):
        n = addrsize // 8
        return bytes((memaddr >> (8 * (n - 1 - i))) & 0xFF for i in range(n))

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        dev = self._dev(addr, nbytes + addrsize // 8 + 1)
        dev.i2c_write(self._memaddr(memaddr, addrsize))
        return dev.read_bytes(nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        data = self.readfrom_mem(addr, memaddr, len(buf), addrsize)
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        dev = self._dev(addr, len(buf) + addrsize // 8)
        dev.i2c_write(self._memaddr(memaddr, addrsize) + bytes(buf))


SoftI2C = I2C


# ------------------------------------------------------------------ SPI
class SPI:
    """SPI bus. The selected device is the model whose CS pin is driven low."""

    MSB = 0
    LSB = 1

    def __init__(self, id=1, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        board.alive()
        self.id = id
        self.baudrate = baudrate

    def init(self, baudrate=1000000, **kw):
        self.baudrate = baudrate

    def deinit(self):
        pass

    def _xfer(self, out):
        board.alive()
        board.advance(len(out) * 8 * 1000000 // self.baudrate + 1)
        for cs in board.spi.get(self.id, {}):
            if board.level(cs) == 0:
                return bytes(board.spi[self.id][cs].transfer(bytes(out)))
        return b"\xff" * len(out)  # nobody selected: MISO floats high

    def write(self, buf):
        self._xfer(buf)

    def read(self, nbytes, write=0):
        return self._xfer(bytes([write]) * nbytes)

    def readinto(self, buf, write=0):
        data = self.read(len(buf), write)
        for i in range(len(buf)):
            buf[i] = data[i]

    def write_readinto(self, out, inbuf):
        data = self._xfer(out)
        for i in range(len(inbuf)):
            inbuf[i] = data[i]


SoftSPI = SPI
