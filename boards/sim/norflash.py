"""A NOR flash chip model: the block device under the simulated board's
filesystem (esp32.Partition uses it, and tests mount vfs.VfsLfs2 on it).

NOR rules: an erase sets a 4 KiB sector to 0xFF; a program can only clear bits.
It counts what wears the chip (erases, programs, bytes programmed) and can be
told to lose power at its N-th program or erase: that operation is left half
done (a torn program, a half-erased sector) and every later access fails until
revive(), as a chip whose supply died would.

Speaks MicroPython's extended block-device protocol:
readblocks(n, buf, off), writeblocks(n, buf, off), ioctl(op, arg).
"""

import errno
import struct

SECTOR = 4096
IMAGE_MAGIC = b"PNF1"
_HEAD = "<4sIIIII"  # magic, blocks, programs, erases, bytes programmed, sectors stored


class NorFlash:
    def __init__(self, blocks, block_size=SECTOR):
        self.blocks = blocks
        self.block_size = block_size
        self.sectors = {}  # sector number -> bytearray; absent sectors read 0xFF
        self.reads = 0
        self.programs = 0
        self.erases = 0
        self.bytes_programmed = 0
        self.cut_at = None  # the op count (programs + erases) at which power dies
        self.dead = False
        self.epoch = 0  # bumped at each revive: old block_device() ports stay dead

    # ----------------------------------------------------------- image file
    def save(self, f):
        """The chip's contents and wear counters to a host file (a path, or a
        binary file open for writing), so the next boot's VM process finds the
        flash as this one left it. Only sectors ever programmed are stored (an
        erased sector reads 0xFF); their count is in the header, so an older,
        longer image under it does not matter."""
        if isinstance(f, str):
            with open(f, "wb") as g:
                return self.save(g)
        f.seek(0)
        f.write(struct.pack(_HEAD, IMAGE_MAGIC, self.blocks, self.programs, self.erases,
                            self.bytes_programmed, len(self.sectors)))
        for sec in sorted(self.sectors):
            f.write(struct.pack("<I", sec))
            f.write(self.sectors[sec])
        f.flush()

    @classmethod
    def load(cls, f, block_size=SECTOR):
        if isinstance(f, str):
            with open(f, "rb") as g:
                return cls.load(g, block_size)
        f.seek(0)
        magic, blocks, programs, erases, nbytes, n = struct.unpack(_HEAD, f.read(struct.calcsize(_HEAD)))
        if magic != IMAGE_MAGIC:
            raise ValueError("not a flash image")
        chip = cls(blocks, block_size)
        chip.programs, chip.erases, chip.bytes_programmed = programs, erases, nbytes
        for _ in range(n):
            sec = struct.unpack("<I", f.read(4))[0]
            chip.sectors[sec] = bytearray(f.read(SECTOR))
        return chip

    # ----------------------------------------------------------- faults
    def cut_power_at(self, n):
        """Lose power during the n-th program or erase from now (1 = the next)."""
        self.cut_at = self.programs + self.erases + n - 1

    def revive(self):
        """Power is back: the chip answers again, with whatever it holds."""
        self.dead = False
        self.cut_at = None
        self.epoch += 1

    def block_device(self):
        """What to mount a filesystem on (vfs.VfsLfs2(flash.block_device())).
        Errors reach littlefs as -EIO return codes, as from a real driver, and a
        filesystem mounted before a power cut can never touch the chip again
        (its unclosed files' finalisers would otherwise write after the cut)."""
        return _Port(self)

    def _op(self):
        """Count a program/erase; True when this one is cut short."""
        if self.dead:
            raise OSError(errno.EIO)
        return self.cut_at is not None and self.programs + self.erases >= self.cut_at

    def _die(self):
        self.dead = True
        raise OSError(errno.EIO)

    # ----------------------------------------------------------- storage
    def _check(self, start, n):
        if start < 0 or start + n > self.blocks * self.block_size:
            raise OSError(errno.EIO)

    def _spans(self, start, n):
        pos = 0
        while pos < n:
            sec, off = divmod(start + pos, SECTOR)
            size = min(SECTOR - off, n - pos)
            yield sec, off, pos, size
            pos += size

    def read(self, start, buf):
        if self.dead:
            raise OSError(errno.EIO)
        self._check(start, len(buf))
        self.reads += 1
        mv = memoryview(buf)
        for sec, off, pos, size in self._spans(start, len(buf)):
            data = self.sectors.get(sec)
            if data is None:
                for i in range(pos, pos + size):
                    mv[i] = 0xFF
            else:
                mv[pos : pos + size] = data[off : off + size]

    def program(self, start, buf):
        cut = self._op()
        self._check(start, len(buf))
        n = len(buf) // 2 if cut else len(buf)  # a cut leaves a torn program
        self.programs += 1
        self.bytes_programmed += n
        for sec, off, pos, size in self._spans(start, n):
            data = self.sectors.get(sec)
            if data is None:
                data = self.sectors[sec] = bytearray(b"\xff" * SECTOR)
            for i in range(size):
                data[off + i] &= buf[pos + i]
        if cut:
            self._die()

    def erase(self, sector):
        cut = self._op()
        if sector < 0 or (sector + 1) * SECTOR > self.blocks * self.block_size:
            raise OSError(errno.EIO)
        self.erases += 1
        if cut:  # half erased: the first half is 0xFF, the rest still old data
            data = self.sectors.get(sector)
            if data is not None:
                for i in range(SECTOR // 2):
                    data[i] = 0xFF
            self._die()
        self.sectors.pop(sector, None)

    # ----------------------------------------------------------- block device
    def readblocks(self, block_num, buf, offset=0):
        self.read(block_num * self.block_size + offset, buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:  # simple protocol: whole blocks, erase first
            for b in range(len(buf) // self.block_size):
                self.ioctl(6, block_num + b)
        self.program(block_num * self.block_size + (offset or 0), buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase one block
            first = arg * self.block_size // SECTOR
            for s in range(first, first + max(1, self.block_size // SECTOR)):
                self.erase(s)
            return 0
        return 0  # init, deinit, sync


class _Port:
    def __init__(self, flash):
        self.flash = flash
        self.epoch = flash.epoch

    def _ok(self):
        f = self.flash
        return not f.dead and f.epoch == self.epoch

    def readblocks(self, block_num, buf, offset=0):
        if not self._ok():
            return -errno.EIO
        try:
            self.flash.readblocks(block_num, buf, offset)
        except OSError:
            return -errno.EIO
        return 0

    def writeblocks(self, block_num, buf, offset=None):
        if not self._ok():
            return -errno.EIO
        try:
            self.flash.writeblocks(block_num, buf, offset)
        except OSError:
            return -errno.EIO
        return 0

    def ioctl(self, op, arg):
        if op in (4, 5):
            return self.flash.ioctl(op, arg)
        if not self._ok():
            return -errno.EIO
        try:
            return self.flash.ioctl(op, arg)
        except OSError:
            return -errno.EIO
