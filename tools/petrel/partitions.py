"""ESP32 partition tables in the binary format the bootloader reads at 0x8000
(esp-idf components/partition_table/gen_esp32part.py): 32-byte entries
`<2sBBLL16sL` (magic AA 50, type, subtype, offset, size, NUL-padded label,
flags), then an MD5 entry (EB EB, 14 x FF, the MD5 of the entries before it),
the rest of 0xC00 bytes 0xFF.

petrel_layout() is the ESP32_GENERIC table plus a "romfs" partition for the
app's ROMFS image, the littlefs partition still labelled "vfs" (what the
port's flashbdev.py mounts at boot) and ending at the end of flash, so that
main.c never registers a partition of its own over free space (README, "The
app from ROMFS").
"""

import hashlib
import struct

ENTRY = "<2sBBLL16sL"
MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb" + b"\xff" * 14
MAX_LENGTH = 0xC00  # gen_esp32part.py MAX_PARTITION_LENGTH
TABLE_OFFSET = 0x8000
APP, DATA = 0x00, 0x01
SUBTYPES = {"factory": 0x00, "ota": 0x00, "phy": 0x01, "nvs": 0x02, "fat": 0x81}
ROMFS_SUBTYPE = 0x8F  # micropython ports/esp32/partitions-4MiB-romfs.csv; the port finds it by label
SECTOR = 0x1000
APP_ALIGN = 0x10000


class TableError(ValueError):
    pass


def to_binary(rows):
    """rows: [(label, type, subtype, offset, size)] -> the 0xC00-byte table."""
    out = b""
    for label, ptype, subtype, offset, size in rows:
        name = label.encode("ascii")
        if len(name) > 16:
            raise TableError("label %r longer than 16 bytes" % label)
        out += struct.pack(ENTRY, MAGIC, ptype, subtype, offset, size, name, 0)
    out += MD5_MAGIC + hashlib.md5(out).digest()
    if len(out) >= MAX_LENGTH:
        raise TableError("too many partitions")
    return out + b"\xff" * (MAX_LENGTH - len(out))


def from_binary(data):
    """The rows of a table; TableError for a bad magic or MD5, or no end marker."""
    md5 = hashlib.md5()
    rows = []
    for pos in range(0, len(data) - 31, 32):
        e = bytes(data[pos : pos + 32])
        if e == b"\xff" * 32:
            return rows
        if e[:2] == MD5_MAGIC[:2]:
            if e[16:] != md5.digest():
                raise TableError("partition table MD5 does not match its entries")
            continue
        magic, ptype, subtype, offset, size, name, _flags = struct.unpack(ENTRY, e)
        if magic != MAGIC:
            raise TableError("entry %d: bad magic %s" % (pos // 32, magic.hex()))
        md5.update(e)
        rows.append((name.rstrip(b"\x00").decode("ascii"), ptype, subtype, offset, size))
    raise TableError("partition table has no end marker")


def check(rows, flash_size):
    """What esp-idf and the ESP32 port require: apps on 64 KiB, data on 4 KiB,
    no overlap, inside flash past the table, unique labels."""
    end = TABLE_OFFSET + SECTOR
    labels = set()
    for label, ptype, _sub, offset, size in sorted(rows, key=lambda r: r[3]):
        if label in labels:
            raise TableError("label %s used twice" % label)
        labels.add(label)
        if size <= 0:
            raise TableError("%s has no room (size %d): the layout runs past the flash" % (label, size))
        if offset % (APP_ALIGN if ptype == APP else SECTOR) or size % SECTOR:
            raise TableError("%s at 0x%x size 0x%x is not aligned" % (label, offset, size))
        if offset < end:
            raise TableError("%s at 0x%x overlaps what is before it (ends 0x%x)" % (label, offset, end))
        end = offset + size
    if end > flash_size:
        raise TableError("the table ends at 0x%x, past the 0x%x bytes of flash" % (end, flash_size))


def romfs_size(image_bytes, headroom=1.5, align=APP_ALIGN):
    """The romfs partition for an image: headroom x its size, rounded up."""
    n = int(image_bytes * headroom)
    return (n + align - 1) // align * align


def petrel_layout(flash_size, romfs_bytes, app_size=0x1D0000):
    """ESP32_GENERIC's nvs, phy_init and factory app (1.8 MiB, as the port's
    partitions-4MiB-romfs.csv), then romfs, then littlefs "vfs" to the end of flash."""
    rows = [
        ("nvs", DATA, SUBTYPES["nvs"], 0x9000, 0x6000),
        ("phy_init", DATA, SUBTYPES["phy"], 0xF000, 0x1000),
        ("factory", APP, SUBTYPES["factory"], 0x10000, app_size),
    ]
    rom_at = 0x10000 + app_size
    rows.append(("romfs", DATA, ROMFS_SUBTYPE, rom_at, romfs_bytes))
    vfs_at = rom_at + romfs_bytes
    rows.append(("vfs", DATA, SUBTYPES["fat"], vfs_at, flash_size - vfs_at))
    check(rows, flash_size)
    return rows


def to_csv(rows):
    lines = ["# Name, Type, SubType, Offset, Size, Flags"]
    for label, ptype, subtype, offset, size in rows:
        lines.append("%s, %s, 0x%02x, 0x%x, 0x%x," % (label, "app" if ptype == APP else "data",
                                                   subtype, offset, size))
    return "\n".join(lines) + "\n"
