"""ESP32 app images (esp_image_format.h) as the IDF bootloader reads them:
build() makes a small image in the real format, check() judges one the way
esp_image_verify() does (what esp32.Partition.set_boot() and the simulated
bootloader accept). For tests and tools; runs on CPython and MicroPython.

Layout: a 24-byte header (magic 0xE9, segment count, SPI mode, speed and size,
entry address, WP pin, pin drive, chip id, chip revisions, hash_appended),
then each segment as (load address, length) and its data, zeros up to one byte
short of a 16-byte boundary, the checksum byte (0xEF XOR every byte of segment
data) and, with hash_appended, the SHA-256 of everything before it.
"""

import hashlib
import struct

MAGIC = 0xE9
CHIP_ESP32 = 0  # esp_chip_id_t: what CONFIG_IDF_FIRMWARE_CHIP_ID is on the ESP32
CHIP_REV = 300  # the simulated chip: ESP32 v3.0 (major * 100 + minor)
MAX_SEGMENTS = 16
HEADER = "<BBBBIB3sHBHH4sB"  # esp_image_header_t, 24 bytes
APP_DESC_MAGIC = 0xABCD5432  # esp_app_desc_t, first thing in the first segment
_DROM = 0x3F400020  # flash-mapped data: its offset in a 64 KiB page is the file's
_DRAM = 0x3FFB0000
_IRAM = 0x40080000
_MMU_PAGE = 0x10000


def app_desc(version="1.29.0", project="micropython"):
    """esp_app_desc_t (256 bytes): magic, secure version, version, project, build time."""
    return struct.pack("<II8s32s32s16s16s32s32sHHB3s72s", APP_DESC_MAGIC, 0, b"",
                       version.encode(), project.encode(), b"00:00:00", b"Jan  1 2026",
                       b"v5.5.1", b"", 0, 99, 16, b"", b"")


def build(segments=None, version="1.29.0", hash_appended=True, entry=_IRAM,
          chip_id=CHIP_ESP32, min_rev=0, max_rev=399):
    """A valid app image -> bytes. segments: [(load_addr, data)], data padded
    to 4 bytes; by default an app descriptor in flash-mapped data, a little
    DRAM and a little IRAM, as esptool lays out a real one."""
    if segments is None:
        segments = [(_DROM, app_desc(version)), (_DRAM, b"\x00" * 16),
                    (_IRAM, b"\x36\x41\x00\x1d\xf0\x00\x00\x00")]
    out = bytearray(struct.pack(HEADER, MAGIC, len(segments), 2, 0x20, entry, 0xEE, b"\x00\x00\x00",
                                chip_id, min_rev // 100, min_rev, max_rev, b"\x00" * 4,
                                1 if hash_appended else 0))
    csum = 0xEF
    for addr, data in segments:
        data = bytes(data) + b"\x00" * (-len(data) % 4)
        out += struct.pack("<II", addr, len(data)) + data
        csum ^= _xor(data)
    out += b"\x00" * (15 - len(out) % 16) + bytes([csum])
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


def check(read, size, flash_offset=0, chip_rev=CHIP_REV):
    """None when the image at the start of a partition of `size` bytes is valid,
    else why not (the bootloader's words). read(pos, n) -> bytes of the partition;
    flash_offset is the partition's address (mapped segments must line up with it)."""
    if size < 24:
        return "image at 0x%x has invalid magic byte (nothing flashed here?)" % flash_offset
    head = read(0, 24)
    h = struct.unpack(HEADER, head)
    if h[0] != MAGIC:
        return "image at 0x%x has invalid magic byte (nothing flashed here?)" % flash_offset
    if h[7] != CHIP_ESP32:
        return "mismatch chip ID, expected %d, found %d" % (CHIP_ESP32, h[7])
    if h[9] != 0xFFFF and h[9] > chip_rev:
        return "Image requires chip rev >= v%d.%d, but chip is v%d.%d" % (
            h[9] // 100, h[9] % 100, chip_rev // 100, chip_rev % 100)
    if h[10] not in (0, 0xFFFF) and chip_rev > h[10]:
        return "Image requires chip rev <= v%d.%d, but chip is v%d.%d" % (
            h[10] // 100, h[10] % 100, chip_rev // 100, chip_rev % 100)
    if h[1] > MAX_SEGMENTS:
        return "image at 0x%x segment count %d exceeds max %d" % (flash_offset, h[1], MAX_SEGMENTS)
    sha = hashlib.sha256(head)
    csum = 0xEF
    pos = 24
    for i in range(h[1]):
        if pos + 8 > size:
            return "Image length %d doesn't fit in partition length %d" % (pos + 8, size)
        seg = read(pos, 8)
        sha.update(seg)
        addr, n = struct.unpack("<II", seg)
        pos += 8
        if n & 3 or n >= 0x1000000:
            return "invalid segment length 0x%x" % n
        mapped = 0x3F400000 <= addr < 0x3F800000 or 0x400D0000 <= addr < 0x40400000
        if mapped and (flash_offset + pos) % _MMU_PAGE != addr % _MMU_PAGE:
            return "Segment %d load address 0x%08x, doesn't match data 0x%08x" % (i, addr, flash_offset + pos)
        if pos + n > size:
            return "Image length %d doesn't fit in partition length %d" % (pos + n, size)
        end = pos + n
        while pos < end:
            chunk = read(pos, min(4096, end - pos))
            sha.update(chunk)
            csum ^= _xor(chunk)
            pos += len(chunk)
    tail = ((pos + 1 + 15) & ~15) - pos  # zero padding and the checksum byte
    if pos + tail > size:
        return "Image length %d doesn't fit in partition length %d" % (pos + tail, size)
    pad = read(pos, tail)
    sha.update(pad)
    pos += tail
    if pad[-1] != csum:
        return "Checksum failed. Calculated 0x%x read 0x%x" % (csum, pad[-1])
    if h[12]:
        if pos + 32 > size:
            return "Image length %d doesn't fit in partition length %d" % (pos + 32, size)
        if read(pos, 32) != sha.digest():
            return "Image hash failed - image is corrupt"
    return None


def check_bytes(image, size=None):
    """check() of an image held in memory (a partition of `size`, default its length)."""
    return check(lambda pos, n: bytes(image[pos : pos + n]), len(image) if size is None else size)


def _xor(data):
    # XOR of all bytes: fold the number the bytes make in halves
    n = len(data)
    v = int.from_bytes(data, "little")
    while n > 1:
        h = (n + 1) // 2
        v = (v >> (8 * h)) ^ (v & ((1 << (8 * h)) - 1))
        n = h
    return v
