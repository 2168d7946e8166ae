"""Many wakes in a row, on CPython in-process and on the MicroPython VM."""

import pytest

import eventlog
import simstate
from petrel import bootrun, simflash

INTERPRETERS = ["cpython", "vm"]


def log_events(boot, tag):
    out = []
    for line in boot.output.splitlines():
        e = eventlog.parse(line)
        if e and e[2] == tag:
            out.append(e[3])
    return out


def flash_with_main(tmp_path, main_src, boot_src=None):
    flash = tmp_path / "flash"
    simflash.populate(flash)
    (flash / "main.py").write_text(main_src)
    if boot_src is not None:
        (flash / "boot.py").write_text(boot_src)
    return flash


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_five_wakes_of_the_boot_counter(tmp_path, interp):
    flash = simflash.populate(tmp_path / "flash")
    runner = bootrun.BootRunner(flash, interp)
    boots = runner.run(5)
    assert [b.number for b in boots] == [1, 2, 3, 4, 5]
    assert [b.reset_cause for b in boots] == [simstate.PWRON_RESET] + [simstate.DEEPSLEEP_RESET] * 4
    assert [b.wake_reason for b in boots] == [0] + [simstate.TIMER_WAKE] * 4
    counted = [int(log_events(b, "boot")[0]["boot"]) for b in boots]
    assert counted == [1, 2, 3, 4, 5]
    assert [log_events(b, "boot")[0]["rtc"] for b in boots] == ["empty"] + ["ok"] * 4
    # each wake comes 300 s (the firmware's sleep) after the previous one ended
    for prev, cur in zip(boots, boots[1:]):
        assert cur.start_us - prev.end_us == 300000000
        assert "rst:0x5 (DEEPSLEEP_RESET)" in cur.output
    assert "rst:0x1 (POWERON_RESET)" in boots[0].output
    assert all(b.end == "halt" and b.halt_cause == simstate.DEEPSLEEP_RESET for b in boots)



@pytest.mark.parametrize("interp", INTERPRETERS)
def test_the_break_in_window_follows_a_power_on_and_costs_timer_wakes_nothing(tmp_path, interp):
    flash = simflash.populate(tmp_path / "flash")
    boots = bootrun.BootRunner(flash, interp).run(3)
    windows = [log_events(b, "main") for b in boots]
    assert windows[0] and "press Ctrl-C within 2 s" in boots[0].output  # the power-on
    assert windows[1:] == [[], []]  # the timer wakes: not a line, not a millisecond
    first_boot_line = [e for e in boots[0].output.splitlines() if " boot: cause=poweron" in e][0]
    assert eventlog.parse(first_boot_line)[1] >= 2000  # the wake starts after the window
    assert all(eventlog.parse([e for e in b.output.splitlines() if " boot: " in e][0])[1] < 100
               for b in boots[1:])
    # no console on the runner's UART: the window passes untaken, the wake runs
    assert all(b.end == "halt" and b.halt_cause == simstate.DEEPSLEEP_RESET for b in boots)


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_power_cut_loses_rtc_memory_and_boot_count_restarts(tmp_path, interp):
    flash = simflash.populate(tmp_path / "flash")

    def cut_during_third_sleep(board):
        # well into the third sleep (the first boot is 2 s longer: the break-in window)
        board.schedule(board.world_us + 2 * 300000000 + 100000000, "power_cut")

    boots = bootrun.BootRunner(flash, interp, prepare=cut_during_third_sleep).run(5)
    assert [b.reset_cause for b in boots] == [1, 4, 4, 1, 4]
    counted = [int(log_events(b, "boot")[0]["boot"]) for b in boots]
    assert counted == [1, 2, 3, 1, 2]
    assert log_events(boots[3], "boot")[0]["rtc"] == "empty"


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_uncaught_exception_leaves_the_board_awake_at_the_repl(tmp_path, interp):
    flash = flash_with_main(tmp_path, "import machine\nprint('start')\nraise ValueError('sensor gone')\n")
    runner = bootrun.BootRunner(flash, interp)
    boots = runner.run(3)
    assert len(boots) == 1
    assert boots[0].end == "repl" and boots[0].why == "stuck awake at the REPL"
    assert "ValueError: sensor gone" in boots[0].output
    assert 'File "main.py", line 3' in boots[0].output
    assert ">>> " in boots[0].output


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_armed_watchdog_rescues_a_crashed_boot(tmp_path, interp):
    main = (
        "import machine, time\n"
        "wdt = machine.WDT(timeout=8000)\n"
        "if machine.reset_cause() == machine.WDT_RESET:\n"
        "    print('recovered')\n"
        "    machine.deepsleep(1000)\n"
        "raise OSError(19)\n"
    )
    flash = flash_with_main(tmp_path, main)
    boots = bootrun.BootRunner(flash, interp).run(3)
    assert boots[0].end == "repl" and boots[0].why == "watchdog reset at the REPL"
    assert boots[1].reset_cause == simstate.WDT_RESET
    assert "rst:0x7 (TG0WDT_SYS_RESET)" in boots[1].output
    assert "recovered" in boots[1].output
    assert 8.0 <= boots[0].awake_ms / 1000 <= 8.1


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_watchdog_bites_a_hung_wake(tmp_path, interp):
    main = (
        "import machine, time\n"
        "machine.WDT(timeout=3000)\n"
        "if machine.reset_cause() != machine.WDT_RESET:\n"
        "    while True:\n"
        "        time.sleep_ms(100)  # waiting for something that never comes\n"
        "machine.deepsleep(1000)\n"
    )
    flash = flash_with_main(tmp_path, main)
    boots = bootrun.BootRunner(flash, interp).run(2)
    assert boots[0].halt_cause == simstate.WDT_RESET
    assert 3000 <= boots[0].awake_ms <= 3101
    assert boots[1].reset_cause == simstate.WDT_RESET
    assert boots[1].halt_cause == simstate.DEEPSLEEP_RESET


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_firmware_that_swallows_deepsleep_still_sleeps(tmp_path, interp):
    main = (
        "import machine\n"
        "try:\n"
        "    machine.deepsleep(5000)\n"
        "except BaseException:\n"
        "    print('swallowed')\n"
        "print('still here')\n"
    )
    flash = flash_with_main(tmp_path, main)
    boots = bootrun.BootRunner(flash, interp).run(2)
    assert boots[0].end == "halt" and boots[0].halt_cause == simstate.DEEPSLEEP_RESET
    assert boots[1].reset_cause == simstate.DEEPSLEEP_RESET


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_ticks_near_the_wrap_and_ext0_wake(tmp_path, interp):
    main = (
        "import machine, time, esp32\n"
        "print('ticks', time.ticks_ms(), machine.wake_reason())\n"
        "esp32.wake_on_ext0(machine.Pin(4), 0)\n"
        "machine.deepsleep(600000)\n"
    )
    flash = flash_with_main(tmp_path, main)

    def near_wrap_and_a_button(board):
        board.start_ticks_ms = (1 << 30) - 10
        board.inputs[4] = 1
        board.schedule(board.world_us + 42000000, "pin", 4, 0)

    boots = bootrun.BootRunner(flash, interp, prepare=near_wrap_and_a_button).run(2)
    assert "ticks %d 0" % ((1 << 30) - 10) in boots[0].output.replace("\r", "")
    assert boots[1].wake_reason == simstate.EXT0_WAKE
    assert 41900000 <= boots[1].start_us - boots[0].end_us <= 42000000


def test_a_cpython_boot_leaves_the_hosts_modules_as_they_were(tmp_path):
    # A boot imports its flash's lib/ afresh, as a wake does; after it, the
    # host's modules are the ones it had, and a module the host loads on use
    # later (cbordec, by cbor.loads) binds to them: one Tag class, not two.
    import sys

    import cbor

    main = ("import cbor, cose, uplink\n"
            "print('boot cbor', cbor.__file__)\n"
            "import machine\nmachine.deepsleep(1000)\n")
    flash = flash_with_main(tmp_path, main)
    sys.modules.pop("cbordec", None)
    before = dict((n, sys.modules.get(n)) for n in ("cbor", "cbortypes", "cborput", "cose", "uplink"))
    boots = bootrun.BootRunner(flash, "cpython").run(2)
    assert [b.end for b in boots] == ["halt", "halt"]
    # the boots did import them, each from its flash
    assert all("boot cbor %s" % (flash / "lib" / "cbor.py") in b.output for b in boots), boots[0].output
    assert dict((n, sys.modules.get(n)) for n in before) == before
    assert sys.modules["cbor"] is cbor
    tagged = cbor.loads(cbor.dumps(cbor.Tag(17, [1])))  # cbordec loaded now, after the boots
    assert isinstance(tagged, cbor.Tag) and tagged == cbor.Tag(17, [1])
    flash_copies = [n for n, m in sys.modules.items()
                    if str(getattr(m, "__file__", "") or "").startswith(str(flash))]
    assert flash_copies == []


def test_a_flash_image_tells_a_missing_file_from_a_failed_read(tmp_path, monkeypatch):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_bytes(b"kept")
    img = simflash.Image.make(tmp_path / "f", tmp_path / "flash.img", blocks=64)
    assert img.read("a.txt") == b"kept" and img.read("nope.txt") is None
    img.write("data/b", b"\x00\x01")
    assert img.read("data/b") == b"\x00\x01"
    # a VM that fails (as one out of heap did) is an error, not "no such file"
    monkeypatch.setattr(simflash, "_vm", lambda *a, check=True, out=False: (_ for _ in ()).throw(
        RuntimeError("flash image get: MemoryError")) if check else 1)
    with pytest.raises(RuntimeError, match="MemoryError"):
        img.read("a.txt")
