"""petrel.partitions: the ESP32 partition table as esp-idf's gen_esp32part.py
writes it, the Petrel layout with a romfs partition, and the checks."""

import hashlib

import pytest

from petrel import partitions

MB4 = 0x400000


def test_layout_round_trips_and_is_what_the_bootloader_reads():
    rows = partitions.petrel_layout(MB4, 0x30000)
    b = partitions.to_binary(rows)
    assert len(b) == 0xC00
    assert partitions.from_binary(b) == rows
    # entry 0 by hand, gen_esp32part.py's STRUCT_FORMAT '<2sBBLL16sL'
    assert b[:32] == bytes.fromhex("aa500102" "00900000" "00600000") + b"nvs" + bytes(13) + bytes(4)
    n = len(rows) * 32
    assert b[n : n + 16] == b"\xeb\xeb" + b"\xff" * 14
    assert b[n + 16 : n + 32] == hashlib.md5(b[:n]).digest()
    assert b[n + 32 :] == b"\xff" * (0xC00 - n - 32)


def test_layout_has_romfs_by_label_and_vfs_to_the_end_of_flash():
    rows = {r[0]: r for r in partitions.petrel_layout(MB4, 0x30000)}
    assert rows["romfs"][1:3] == (partitions.DATA, 0x8F) and rows["romfs"][4] == 0x30000
    vfs = rows["vfs"]
    assert vfs[3] + vfs[4] == MB4  # no free tail for main.c to register as "vfs"
    assert rows["factory"][3] == 0x10000 and rows["factory"][4] >= 0x1D0000


def test_romfs_size_leaves_headroom_on_64k():
    assert partitions.romfs_size(95826) == 0x30000
    assert partitions.romfs_size(0x10000, headroom=1.0) == 0x10000


def test_damaged_tables_are_refused():
    b = bytearray(partitions.to_binary(partitions.petrel_layout(MB4, 0x20000)))
    b[40] ^= 1
    with pytest.raises(partitions.TableError, match="MD5"):
        partitions.from_binary(b)
    b = bytearray(partitions.to_binary(partitions.petrel_layout(MB4, 0x20000)))
    b[0] = 0
    with pytest.raises(partitions.TableError, match="magic"):
        partitions.from_binary(b)
    with pytest.raises(partitions.TableError, match="end marker"):
        partitions.from_binary(b"")


def test_bad_layouts_are_refused():
    with pytest.raises(partitions.TableError, match="past the flash"):
        partitions.petrel_layout(0x200000, 0x30000)
    rows = [("factory", 0, 0, 0x18000, 0x10000)]
    with pytest.raises(partitions.TableError, match="aligned"):
        partitions.check(rows, MB4)
    with pytest.raises(partitions.TableError, match="overlaps"):
        partitions.check([("a", 1, 1, 0x9000, 0x2000), ("b", 1, 1, 0xA000, 0x1000)], MB4)
