"""App updates' boot side (firmware/appslot.py) through whole boots of a
simulated node: main.py choosing a staged slot that holds a copy of the
firmware, and an update whose app/cycle.py cannot be imported rolled back to
the factory app, which then sleeps as usual. On the VM the flash is littlefs
(simboot mounts it as /, as the ESP32 port does); on CPython a host folder."""

import shutil

import pytest

import appslot
from petrel import deploy, paths, simflash
from petrel.simnode import SimNode

INTERPRETERS = ["cpython", "vm"]
SLOT_VERSION = "0.7.0-slot"


def slot_copy(tmp_path, interp, n, version=SLOT_VERSION, cycle=None, without=()):
    """The flash folder with slots/n holding the firmware's app/ and lib/, as
    app/update.py unpacks an image: on the VM compiled (.mpy, as deploy.build
    makes them: the VM's heap, which holds the whole littlefs image, has no
    room for a second copy of the sources), on CPython the sources."""
    fw = tmp_path / "fw"
    simflash._copy_tree(paths.FIRMWARE, fw)
    text = (fw / "app" / "version.py").read_text()
    (fw / "app" / "version.py").write_text(text.replace('VERSION = "0.6.0"', 'VERSION = "%s"' % version))
    assert version in (fw / "app" / "version.py").read_text()
    if cycle is not None:
        (fw / "app" / "cycle.py").write_text(cycle)
    flash = tmp_path / "flash"
    slot = flash / "slots" / str(n)
    if interp == "vm":
        built = tmp_path / "built"
        deploy.build(built, "x64", firmware=fw)
        shutil.copytree(built / "app", slot / "app")
        shutil.copytree(built / "lib", slot / "lib")
    else:
        simflash._copy_tree(fw / "app", slot / "app")
        simflash._copy_tree(paths.LIB, slot / "lib")
    for rel in without:  # an image that lacks a module
        for f in slot.glob(rel + ".*"):
            f.unlink()
    return flash


def staged(slot, version, name):
    """data/appslot as appslot.stage(slot, version, name) writes it."""
    s = appslot.State()
    s.pending, s.v_pending, s.n_pending = slot, version, name
    return appslot._pack(s)


def state_on(node):
    raw = node.image.read(appslot.PATH) if node.image else (node.flash / appslot.PATH).read_bytes()
    return appslot._parse(raw)


def boot_lines(boot):
    return [line for line in boot.output.splitlines() if " boot: cause=" in line]


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_a_staged_slot_runs_at_the_next_boot(tmp_path, broker, interp):
    flash = slot_copy(tmp_path, interp, 1)  # on flash before the image is made: one VM run, not one per file
    node = SimNode(flash, broker, interp)
    first = node.run(1)[0]
    assert "fw=0.6.0" in boot_lines(first)[0] and first.end == "halt" and first.sleep_ms
    node.write_file(appslot.PATH, staged(1, 7, "0.7.0"))
    b = node.run(1)[0]
    assert "slot 1 v7 (0.7.0) switched in: on trial" in b.output
    assert "fw=%s" % SLOT_VERSION in boot_lines(b)[0], b.output
    assert b.end == "halt" and b.why.startswith("deepsleep"), b.output  # a whole wake, then sleep
    s = state_on(node)
    assert (s.active, s.v_active, s.prev) == (1, 7, 0)
    b = node.run(1)[0]
    assert "fw=%s" % SLOT_VERSION in boot_lines(b)[0]  # and the wakes after it


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_a_slot_whose_cycle_cannot_be_imported_is_rolled_back_to_the_factory(tmp_path, broker, interp):
    flash = slot_copy(tmp_path, interp, 1, cycle="raise RuntimeError('half an update')\n")
    node = SimNode(flash, broker, interp)
    node.run(1)
    node.write_file(appslot.PATH, staged(1, 7, "0.7.0"))
    bad = node.run(1)[0]
    assert "fw=%s" % SLOT_VERSION in boot_lines(bad)[0]
    assert "rolled back to slot 0 v0: import: RuntimeError: half an update" in bad.output, bad.output
    assert bad.why == "machine.reset()"  # at once: not one more wake on the broken app
    s = state_on(node)
    assert (s.active, s.trial, s.rollbacks, s.rb_max) == (0, 0, 1, 7)
    assert s.err == "import: RuntimeError: half an update"
    back = node.run(2)
    for b in back:
        assert "fw=0.6.0" in boot_lines(b)[0], b.output
        assert b.end == "halt" and b.why.startswith("deepsleep"), b.output
        assert "crash" not in b.output.lower().replace("crashes", ""), b.output


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_a_slot_missing_a_lib_module_fails_to_import_and_is_rolled_back(tmp_path, broker, interp):
    # never the factory's /lib copy (nor, on CPython, this repo's lib/): the
    # slot's app does not import, main.py rolls it back at once
    flash = slot_copy(tmp_path, interp, 1, without=("lib/eventlog",))
    node = SimNode(flash, broker, interp)
    node.run(1)
    node.write_file(appslot.PATH, staged(1, 7, "0.7.0"))
    bad = node.run(1)[0]
    assert "rolled back to slot 0 v0: import: " in bad.output and "eventlog" in bad.output, bad.output  # (ModuleNotFound on CPython)
    assert bad.why == "machine.reset()"
    b = node.run(1)[0]
    assert "fw=0.6.0" in boot_lines(b)[0] and b.why.startswith("deepsleep"), b.output


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_an_exception_out_of_the_ladder_is_a_crashed_wake_and_a_sleep_not_the_repl(tmp_path, broker, interp):
    # main.py calls ladder.run() of the app on trial: what escapes it is
    # counted against the trial and the node sleeps; two such wakes roll back
    flash = slot_copy(tmp_path, interp, 1)
    ladder = "def run():\n    raise RuntimeError('ladder broken')\n"
    if interp == "vm":
        (flash / "slots" / "1" / "app" / "ladder.mpy").unlink()
    (flash / "slots" / "1" / "app" / "ladder.py").write_text(ladder)
    node = SimNode(flash, broker, interp)
    node.run(1)
    node.write_file(appslot.PATH, staged(1, 7, "0.7.0"))
    first = node.run(1)[0]
    assert "wake crashed: RuntimeError: ladder broken" in first.output, first.output
    assert first.end == "halt" and first.why.startswith("deepsleep"), first.output  # never the REPL
    s = state_on(node)
    assert (s.active, s.trial, s.crashes) == (1, 1, 1)
    node.run(1)
    b = node.run(1)[0]
    assert "rolled back to slot 0 v0: crashed 2 wakes" in b.output, b.output
    assert "fw=0.6.0" in boot_lines(b)[0] and b.why.startswith("deepsleep"), b.output


def test_a_new_firmware_that_cannot_import_the_app_is_reset_into_the_rollback(tmp_path, broker):
    # a new MicroPython on its trial that cannot load the app (an old .mpy,
    # here a ladder that raises at import): main.py resets, the bootloader
    # rolls the unconfirmed image back; a 1 h deep sleep would keep it running
    import espimage
    import simota

    from app import fwupdate

    def ota_trial(board):  # flashed with the OTA build; set_boot(ota_1) done, its reset next
        board.partition_table = "ota"
        row = simota.find(board, label="ota_1")
        simota.flash(board, row).program(0, espimage.build(version="1.30.0"))
        assert simota.set_boot(board, row) == 0

    flash = tmp_path / "flash"
    node = SimNode(flash, broker, "cpython", prepare=ota_trial)
    s = fwupdate._fresh()
    s.update(phase=fwupdate.SWITCHED, ver=7, name="1.30.0", new="ota_1", prev="ota_0")
    node.write_file(fwupdate.PATH, bytes(fwupdate._encode(s)))
    node.write_file("app/ladder.py", "raise ValueError('incompatible .mpy file')\n")
    assert node.board.running_app == "ota_1"
    bad = node.run(1)[0]
    assert "new firmware on trial: reset to roll it back" in bad.output, bad.output
    assert bad.why == "machine.reset()"
    assert node.board.running_app == "ota_0"  # the bootloader rolled back
    b = node.run(2)
    assert [x.sleep_ms for x in b] == [3600000, 3600000], [x.output for x in b]  # the old one: no reset loop
