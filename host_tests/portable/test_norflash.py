# The NOR flash model under the filesystem: NOR rules, wear counters, power cuts.
import errno

from norflash import NorFlash
from ptest import raises


def test_erase_sets_ones_and_program_only_clears_bits():
    f = NorFlash(4)
    buf = bytearray(4)
    f.readblocks(1, buf)
    assert buf == bytearray(b"\xff" * 4)
    f.writeblocks(1, b"\x0f\xf0\xaa\x55", 0)
    f.writeblocks(1, b"\xf0\xff\xff\xff", 0)
    f.readblocks(1, buf)
    assert bytes(buf) == b"\x00\xf0\xaa\x55"
    f.ioctl(6, 1)
    f.readblocks(1, buf)
    assert bytes(buf) == b"\xff" * 4
    assert (f.programs, f.erases, f.bytes_programmed) == (2, 1, 8)
    assert f.ioctl(4, 0) == 4 and f.ioctl(5, 0) == 4096
    assert raises(OSError, f.readblocks, 4, buf).args[0] == errno.EIO  # past the end


def test_power_cut_tears_the_program_and_kills_the_chip():
    f = NorFlash(4)
    f.cut_power_at(2)
    f.writeblocks(0, b"\x00" * 8, 0)  # 1st op: fine
    raises(OSError, f.writeblocks, 0, b"\x00" * 8, 8)  # 2nd op: cut halfway
    buf = bytearray(16)
    raises(OSError, f.readblocks, 0, buf)  # dead until the power is back
    f.revive()
    f.readblocks(0, buf)
    assert bytes(buf) == b"\x00" * 12 + b"\xff" * 4


def test_power_cut_during_erase_leaves_a_half_erased_sector():
    f = NorFlash(2)
    f.writeblocks(0, b"\x00" * 4096, 0)
    f.cut_power_at(1)
    raises(OSError, f.ioctl, 6, 0)
    f.revive()
    buf = bytearray(4096)
    f.readblocks(0, buf)
    assert buf[:2048] == bytearray(b"\xff" * 2048) and buf[2048:] == bytearray(2048)


def test_a_port_from_before_the_cut_never_touches_the_chip_again():
    f = NorFlash(2)
    old = f.block_device()
    f.cut_power_at(1)
    assert old.writeblocks(0, b"\x00", 0) == -errno.EIO  # the cut, reported as a code
    f.revive()
    assert old.writeblocks(0, b"\x00", 0) == -errno.EIO  # stale: still refused
    new = f.block_device()
    assert new.writeblocks(0, b"\x00", 1) == 0
    buf = bytearray(2)
    assert new.readblocks(0, buf) == 0
    assert bytes(buf) == b"\xff\x00"  # the cut 1-byte program wrote nothing; the new one landed


def test_an_image_file_carries_the_chip_to_the_next_boot():
    from ptest import scratch_dir

    d, _ = scratch_dir()
    path = d + "/chip.img"
    chip = NorFlash(16)
    chip.program(5000, b"\x12\x34")
    chip.program(9000, b"petrel")
    chip.save(path)
    again = NorFlash.load(path)
    buf = bytearray(6)
    again.read(9000, buf)
    assert bytes(buf) == b"petrel" and again.programs == 2 and again.blocks == 16
    # an erase makes the image shorter: the older, longer file under it is ignored
    with open(path, "r+b") as f:
        again.erase(2)
        again.save(f)
    third = NorFlash.load(path)
    third.read(9000, buf)
    assert bytes(buf) == b"\xff" * 6 and third.erases == 1
    two = bytearray(2)
    third.read(5000, two)
    assert bytes(two) == b"\x12\x34"
