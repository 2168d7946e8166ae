# vfs.rom_ioctl on the simulated board (boards/sim/simromfs.py), as the ESP32
# port answers it and as mpremote's `romfs deploy` and `romfs query` use it.
import sys

import machine
import simromfs
import simstate
from ptest import raises, sleep_and_wake

EINVAL = -22


def _uint(n):
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return bytes(out)


def _rec(kind, payload):
    return _uint(kind) + _uint(len(payload)) + payload


def image(name, data):
    # one file at the top of a ROMFS image (mpremote/romfs.py VfsRomWriter)
    body = _rec(5, _uint(len(name)) + name + _rec(2, data))
    length = _uint(len(body))
    if (3 + len(length) + len(body)) % 2:
        length = b"\x80" + length
    return b"\xd2\xcd\x31" + length + body


def romfs_board():
    b = simstate.reset_world(power=False)
    b.partition_table = "romfs"
    b.power_on()
    return b


def deploy(img):
    # what mpremote's _do_romfs_deploy does with a partition object (has ioctl)
    dev = simromfs.rom_ioctl(2, 0)
    size = dev.ioctl(4, 0) * dev.ioctl(5, 0)
    assert len(img) <= size
    for off in range(0, len(img), 4096):
        dev.ioctl(6, off // 4096)
    for off in range(0, len(img), 4096):
        chunk = img[off : off + 4096]
        dev.writeblocks(off // 4096, chunk + bytes(4096 - len(chunk)), off % 4096)
    return dev


def test_no_romfs_partition_in_the_stock_table():
    # ESP32_GENERIC's table has none: count 0, segment -EINVAL, as the port answers
    assert simromfs.rom_ioctl(1) == 0
    assert simromfs.rom_ioctl(2, 0) == EINVAL
    assert simromfs.mount_at_boot() == -5  # silently skipped: -EIO
    assert "/rom" not in sys.path


def test_query_of_a_blank_partition():
    romfs_board()
    assert simromfs.rom_ioctl(1) == 1
    assert simromfs.rom_ioctl(2, 1) == EINVAL  # one segment only
    assert simromfs.rom_ioctl(3, 0, 100) == EINVAL  # the ESP32 port has no write ops
    dev = simromfs.rom_ioctl(2, 0)
    assert dev.ioctl(4, 0) == 0x30000 // 4096 and dev.ioctl(5, 0) == 4096
    assert bytes(memoryview(dev)[:12]) == b"\xff" * 12  # "Not a valid ROMFS"
    assert dev.info()[:5] == (1, 0x8F, 0x1E0000, 0x30000, "romfs")
    assert simromfs.mount_at_boot() == -5  # erased flash: no header, skipped


def test_deploy_then_query_sees_the_image_and_it_survives_power_loss():
    b = romfs_board()
    img = image(b"hello.txt", b"hi from flash")
    deploy(img)
    b.schedule(b.world_us + 1000, "power_cut")
    sleep_and_wake(machine.deepsleep, 10000)
    assert machine.reset_cause() == machine.PWRON_RESET
    dev = simromfs.rom_ioctl(2, 0)
    assert bytes(memoryview(dev)[:3]) == b"\xd2\xcd\x31"
    assert bytes(dev) == img
    assert simromfs.image_length(dev) == len(img)


def test_writing_without_erasing_only_clears_bits():
    romfs_board()
    dev = simromfs.rom_ioctl(2, 0)
    dev.ioctl(6, 0)
    dev.writeblocks(0, b"\xf0" * 16, 0)
    dev.writeblocks(0, b"\x0f" * 16, 0)  # NOR: programming ANDs
    got = bytearray(16)
    dev.readblocks(0, got)
    assert got == bytearray(16)
    assert dev.ioctl(6, 0x30000 // 4096) == EINVAL  # past the partition


def test_mount_at_boot():
    romfs_board()
    deploy(image(b"hello.txt", b"hi from flash"))
    before = list(sys.path)
    try:
        ret = simromfs.mount_at_boot()
        if sys.implementation.name == "micropython":  # the VM has vfs.VfsRom
            assert ret == 0 and sys.path[-2:] == ["/rom", "/rom/lib"]
            with open("/rom/hello.txt") as f:
                assert f.read() == "hi from flash"
        else:  # CPython has no vfs: the mount is skipped as a failed one is
            assert ret == -5 and sys.path == before
    finally:
        sys.path[:] = before
        try:
            import vfs

            vfs.umount("/rom")
        except (ImportError, OSError):
            pass


def test_an_image_longer_than_its_partition_is_not_mounted():
    # the port's VfsRom checks the header and that the length fits the mapping
    # (extmod/vfs_rom.c vfs_rom_make_new), nothing more
    romfs_board()
    good = image(b"hello.txt", b"hi from flash")
    deploy(b"\xd2\xcd\x31" + _uint(0x40000) + good[4:])
    dev = simromfs.rom_ioctl(2, 0)  # mpremote can still query it: the header is there
    assert bytes(memoryview(dev)[:3]) == b"\xd2\xcd\x31" and len(dev) <= dev.ioctl(4, 0) * 4096
    before = list(sys.path)
    try:
        assert simromfs.mount_at_boot() == -5
        assert sys.path == before
    finally:
        sys.path[:] = before


def test_a_halted_board_refuses():
    romfs_board()
    dev = simromfs.rom_ioctl(2, 0)
    simstate.board.schedule(simstate.board.world_us + 1000, "power_cut")
    halt = raises(BaseException, machine.deepsleep, 10000)
    assert isinstance(halt, simstate.Halt)
    assert isinstance(raises(BaseException, dev.ioctl, 6, 0), simstate.Halt)
    assert isinstance(raises(BaseException, simromfs.rom_ioctl, 1), simstate.Halt)


def test_install_lets_mpremote_find_rom_ioctl_on_the_vm():
    import builtins

    original = builtins.__import__
    try:
        done = simromfs.install()
        if sys.implementation.name == "micropython":
            scope = {}
            exec("import vfs\nfound = hasattr(vfs, 'rom_ioctl') and vfs.rom_ioctl(1)", scope)
            assert done and scope["found"] == 0  # the stock table: no romfs partition
            romfs_board()
            exec("import vfs\nn = vfs.rom_ioctl(1)\nm = vfs.mount", scope)
            assert scope["n"] == 1 and callable(scope["m"])  # the rest of vfs still there
        else:
            assert not done and builtins.__import__ is original
    finally:
        builtins.__import__ = original
