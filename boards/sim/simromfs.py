"""ROMFS on the simulated ESP32: vfs.rom_ioctl over the board's flash model,
as the port implements it (micropython ports/esp32/esp32_partition.c,
mp_vfs_rom_ioctl), and the mount MicroPython does at start-up (py/runtime.c
mp_init -> extmod/vfs.c mp_vfs_mount_romfs_protected).

The port answers two ops only:
  rom_ioctl(1)     -> 1 when the table has a data partition labelled "romfs"
                      (any subtype), else 0
  rom_ioctl(2, 0)  -> that partition: an esp32.Partition that also exposes the
                      mapped flash as a buffer; -EINVAL (-22) without one
  anything else    -> -EINVAL
mpremote's `romfs deploy` then works through the object (it has `ioctl`):
size from ioctl(4) x ioctl(5), ioctl(6, block) erases a 4 KiB block,
writeblocks(block, buf, offset) programs (NOR: bits only clear), and
`romfs query` reads bytes(memoryview(dev)[:12]).

The segment is a bytearray (the VM has no buffer protocol for Python classes,
but a bytearray subclass has one) holding what the mapping shows: the image,
as long as its header says (at least 16 bytes), read from flash when the
segment is made; writes go to flash and to it. The port maps the whole
partition; a snapshot of the image alone keeps the VM's heap measurements
close to the chip's, where the mapping costs no heap.

ROMFS_TABLE is the layout petrel.partitions.petrel_layout(4 MiB, 0x30000) makes;
importing this module adds it to simota.TABLES as "romfs" (board.partition_table
= "romfs" before power_on()). install() makes `import vfs` see rom_ioctl on the
VM (the built-in vfs module takes no new attributes); mount_at_boot() is the
start-up mount, to be called by the boot before _boot.py's work.
"""

import errno
import sys

import simota
from norflash import SECTOR
from simstate import board

GET_NUMBER_OF_SEGMENTS = 1  # extmod/vfs.h MP_VFS_ROM_IOCTL_*
GET_SEGMENT = 2
HEADER = b"\xd2\xcd\x31"
ROMFS_SUBTYPE = 0x8F

ROMFS_TABLE = (
    ("nvs", 1, 2, 0x9000, 0x6000),
    ("phy_init", 1, 1, 0xF000, 0x1000),
    ("factory", 0, 0, 0x10000, 0x1D0000),
    ("romfs", 1, ROMFS_SUBTYPE, 0x1E0000, 0x30000),
    ("vfs", 1, 0x81, 0x210000, 0x1F0000),
)
if "romfs" not in simota.TABLES:
    simota.TABLES["romfs"] = ROMFS_TABLE


def _row():
    for r in simota.rows(board):
        if r[0] == "romfs" and r[1] == simota.DATA:
            return r
    return None


def image_length(head):
    """Bytes an image says it spans (header and length included), or 0 when
    head does not start with the ROMFS header."""
    if bytes(head[:3]) != HEADER:
        return 0
    n = 0
    for i in range(3, min(len(head), 12)):
        n = (n << 7) | (head[i] & 0x7F)
        if not head[i] & 0x80:
            return i + 1 + n
    return 0


class RomSegment(bytearray):
    """The romfs partition as rom_ioctl(2, 0) returns it; make it with segment()."""

    def _flash(self):
        board.alive()
        return simota.flash(board, self.row)

    def _refresh(self, start, n):
        # keep the mapped bytes in step with flash where they overlap
        end = min(len(self), start + n)
        if start < end:
            buf = bytearray(end - start)
            self._flash().read(start, buf)
            self[start:end] = buf

    def info(self):
        r = self.row
        return (r[1], r[2], r[3], r[4], r[0], False)

    def readblocks(self, block_num, buf, offset=0):
        self._flash().read(block_num * SECTOR + offset, buf)

    def writeblocks(self, block_num, buf, offset=None):
        f = self._flash()
        start = block_num * SECTOR
        if offset is None:  # the simple protocol: erase the blocks first, as the port does
            for b in range((len(buf) + SECTOR - 1) // SECTOR):
                f.erase(block_num + b)
        else:
            start += offset
        f.program(start, buf)
        self._refresh(start, len(buf))

    def ioctl(self, op, arg):
        board.alive()
        if op == 4:  # block count
            return self.row[4] // SECTOR
        if op == 5:  # block size
            return SECTOR
        if op == 6:  # erase a block
            if not 0 <= arg < self.row[4] // SECTOR:
                return -errno.EINVAL
            self._flash().erase(arg)
            self._refresh(arg * SECTOR, SECTOR)
            return 0
        return 0  # init, deinit, sync


def segment(row):
    f = simota.flash(board, row)
    head = bytearray(16)
    f.read(0, head)
    n = min(max(image_length(head), 16), row[4])
    # the mapping need not go past the last sector ever written (the rest reads
    # 0xFF, as erased flash): a header claiming the whole partition must not
    # cost the VM's heap a copy of it (a long test run had no 192 KiB run left)
    written = (max(f.sectors) + 1) * SECTOR if f.sectors else 16
    n = min(n, max(written, 16))
    data = bytearray(n)
    f.read(0, data)
    seg = RomSegment(data)
    seg.row = row
    return seg


def rom_ioctl(op, *args):
    """vfs.rom_ioctl as the ESP32 port answers it (ints for errors, not exceptions)."""
    board.alive()
    row = _row()
    if op == GET_NUMBER_OF_SEGMENTS:
        return 0 if row is None else 1
    if op == GET_SEGMENT:
        if row is None or not args or args[0] != 0:
            return -errno.EINVAL
        return segment(row)
    return -errno.EINVAL


def mount_at_boot():
    """What mp_init() does when the port has ROMFS: mount segment 0 at /rom and
    append "/rom" and "/rom/lib" to sys.path; any failure (no partition, a blank
    or damaged image) is silent and leaves both alone. -> 0, or -EIO."""
    try:
        import vfs

        fs = vfs.VfsRom(rom_ioctl(GET_SEGMENT, 0))
        vfs.mount(fs, "/rom")
    except Exception:  # noqa: BLE001 - the port's nlr catches everything here
        return -errno.EIO
    sys.path.append("/rom")
    sys.path.append("/rom/lib")
    return 0


class _VfsWithRom:
    pass


def install():
    """Make `import vfs` (mpremote's `hasattr(vfs,'rom_ioctl')`) find rom_ioctl
    on the VM, by routing that one import through builtins.__import__. -> True
    when done (False under CPython, which has no vfs module)."""
    try:
        import builtins

        import vfs
    except ImportError:
        return False
    proxy = _VfsWithRom()
    for name in dir(vfs):
        if not name.startswith("__"):
            setattr(proxy, name, getattr(vfs, name))
    proxy.rom_ioctl = rom_ioctl
    original = builtins.__import__

    def _import(name, *rest):
        if name == "vfs":
            return proxy
        return original(name, *rest)

    builtins.__import__ = _import
    return True
