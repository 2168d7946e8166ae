"""petrel.romfs: the app's ROMFS image is what mpremote writes, deterministic,
of one arch, mounts with vfs.VfsRom on the VM and the app imports from it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from petrel import paths, romfs

MPREMOTE = Path(sys.executable).parent / "mpremote"


@pytest.fixture(scope="module")
def x64():
    files = romfs.compile_app("x64")
    return files, romfs.image(files)


def test_image_is_byte_for_byte_what_mpremote_romfs_build_writes(x64, tmp_path):
    files, img = x64
    romfs.stage(files, tmp_path / "app")
    subprocess.run([str(MPREMOTE), "romfs", "--no-mpy", "-o", str(tmp_path / "m.romfs"), "build",
                    str(tmp_path / "app")], check=True, capture_output=True, timeout=60)
    assert (tmp_path / "m.romfs").read_bytes() == img


def test_image_is_deterministic_wherever_the_sources_are(x64, tmp_path):
    shutil.copytree(paths.FIRMWARE, tmp_path / "firmware")
    shutil.copytree(paths.LIB, tmp_path / "lib")
    again = romfs.build("x64", firmware=tmp_path / "firmware", lib=tmp_path / "lib")
    assert again == x64[1]
    assert b"/work/" not in again and str(tmp_path).encode() not in again  # no host paths inside


def test_image_holds_the_app_and_node_lib_but_not_main_or_host_only(x64):
    names = [p for p, _ in romfs.listing(x64[1])]
    assert "app/ladder.mpy" in names and "lib/wifi.mpy" in names
    assert not any(n.endswith(("main.mpy", "boot.mpy", "main.py", "boot.py")) for n in names)
    assert "lib/cosecheck.mpy" not in names  # deploy.HOST_ONLY
    assert dict(romfs.listing(x64[1]))["lib/wifi.mpy"] == x64[0]["lib/wifi.mpy"]


def test_every_mpy_is_the_requested_arch(x64):
    assert romfs.check_arch(x64[1], "x64") == []
    xt = romfs.build("xtensawin")
    assert romfs.check_arch(xt, "xtensawin") == []
    # only native code carries an arch; the rest is bytecode for any port
    assert romfs.check_arch(x64[1], "xtensawin") == [("lib/filterprog.mpy", "x64")]


def test_damaged_images_are_refused_with_a_clear_error(x64):
    img = x64[1]
    with pytest.raises(romfs.RomfsError, match="not a ROMFS image"):
        romfs.listing(b"\xff" * 64)
    with pytest.raises(romfs.RomfsError, match="says"):
        romfs.listing(img[: len(img) // 2])


def test_the_app_imports_from_the_image_on_the_vm_with_less_heap(x64, tmp_path):
    files, img = x64
    (tmp_path / "app.romfs").write_bytes(img)
    romfs.stage(files, tmp_path / "dir")
    mods = romfs.modules_of(files)
    heap_rom, _, where = romfs.vm_import("rom", tmp_path / "app.romfs", mods)
    assert all(w.startswith("/rom/") for w in where)
    heap_dir, _, where = romfs.vm_import("dir", tmp_path / "dir", mods)
    assert not any(w.startswith("/rom/") for w in where)
    assert heap_rom < 0.7 * heap_dir, (heap_rom, heap_dir)
