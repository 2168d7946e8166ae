"""The virtual board with unmodified mpremote, and `petrel deploy` onto it: the
deployed firmware boots and runs its wake cycle there; a sleeping node is
reached again through its break-in window; what cannot run is refused before
anything is written; one tool at a time on a port."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

import eventlog
from petrel import deploy
from petrel.vboard import VirtualBoard

MPREMOTE = str(Path(sys.executable).parent / "mpremote")


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    """Virtual boards' control sockets and port locks of this test only (other
    test runs on the machine have their own)."""
    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setenv("PETREL_RUN_DIR", str(d))
    return d


@pytest.fixture
def vboard(tmp_path, run_dir):
    vb = VirtualBoard(tmp_path / "flash").start()
    time.sleep(0.3)
    yield vb
    vb.stop()


def petrel(*args, timeout=180):
    p = subprocess.run([sys.executable, "-m", "petrel.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def node_folder(tmp_path, config=None, secrets=None):
    """A node folder as petrel provision writes one (TLS-PSK, no certificates)."""
    d = tmp_path / "node"
    d.mkdir(exist_ok=True)
    cfg = {"format": 1, "device_id": "p-a1b2c3", "topic": "petrel/p-a1b2c3",
           "broker": {"host": "broker.lan", "port": 8883, "tls": "psk", "psk_identity": "p-a1b2c3"},
           "wifi": {"ssid": "home"}}
    sec = {"hmac_key": "5a" * 16 + "c3" * 16, "psk_key": "71" * 16 + "9e" * 16, "wifi_psk": "ab" * 32}
    (d / "config.json").write_text(json.dumps(cfg if config is None else config(cfg)))
    (d / "secrets.json").write_text(json.dumps(sec if secrets is None else secrets(sec)))
    return d


def mpremote(vb, *args):
    p = subprocess.run([MPREMOTE, "connect", vb.path] + list(args), capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def read_serial(path, seconds, until=None):
    out = b""
    with serial.Serial(path, timeout=0.1) as s:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            out += s.read(4096)
            if until and until in out:
                break
    return out.decode("utf-8", "replace")


def test_mpremote_exec_cp_ls_rm_on_the_virtual_board(vboard, tmp_path):
    rc, out = mpremote(vboard, "exec", "import machine; print(len(machine.unique_id()), machine.reset_cause())")
    assert rc == 0 and out.split() == ["6", "1"], out
    f = tmp_path / "hello.py"
    f.write_text("print('hi')\n")
    assert mpremote(vboard, "fs", "cp", str(f), ":hello.py")[0] == 0
    assert (vboard.flash / "hello.py").read_text() == "print('hi')\n"  # the flash folder
    rc, out = mpremote(vboard, "fs", "ls")
    assert "hello.py" in out
    rc, out = mpremote(vboard, "run", str(f))
    assert "hi" in out
    assert mpremote(vboard, "fs", "rm", ":hello.py")[0] == 0
    assert not (vboard.flash / "hello.py").exists()


def test_soft_reset_and_reset_behave_like_the_chip(vboard):
    rc, out = mpremote(vboard, "soft-reset", "+", "exec", "import machine; print('cause', machine.reset_cause())")
    assert rc == 0 and "cause 1" in out, out  # a soft reset keeps the hardware reset cause
    rc, out = mpremote(vboard, "exec", "import machine; machine.RTC().memory(b'kept')")
    assert rc == 0, out
    assert mpremote(vboard, "reset")[0] == 0
    time.sleep(0.5)
    rc, out = mpremote(vboard, "exec", "import machine; print('cause', machine.reset_cause(), machine.RTC().memory())")
    assert "cause 5" in out and "b'kept'" in out, out  # SOFT_RESET; RTC memory survives a reset


def test_deploy_then_the_firmware_boots_and_runs_its_wake_cycle(vboard):
    lines = []
    folders, copy, remove = deploy.deploy(vboard.path, "sim", say=lines.append)
    assert "lib" in folders and "lib/outbox.mpy" in copy and "main.py" in copy
    assert (vboard.flash / "lib" / "filters.mpy").exists() and (vboard.flash / "boot.py").exists()
    assert not list((vboard.flash / "lib").glob("*.py"))  # precompiled, no source on the board
    assert not [m for m in deploy.HOST_ONLY if (vboard.flash / "lib" / (m + ".mpy")).exists()]
    # nothing changed: nothing copied; a stale source beside its .mpy is removed,
    # and so is a host-only module an older deploy left
    (vboard.flash / "lib" / "rtcmem.py").write_text("raise ImportError('stale')\n")
    (vboard.flash / "lib" / "senml.mpy").write_bytes(b"old")
    folders, copy, remove = deploy.deploy(vboard.path, "sim", say=lines.append)
    assert copy == [] and remove == ["lib/rtcmem.py", "lib/senml.mpy"]
    assert "remove :lib/senml.mpy (host-only)" in lines
    assert not (vboard.flash / "lib" / "rtcmem.py").exists() and not (vboard.flash / "lib" / "senml.mpy").exists()
    # change one module: only it goes
    (vboard.flash / "lib" / "cose.mpy").write_bytes(b"old")
    folders, copy, remove = deploy.deploy(vboard.path, "sim", dry_run=True, say=lines.append)
    assert copy == ["lib/cose.mpy"] and (vboard.flash / "lib" / "cose.mpy").read_bytes() == b"old"
    deploy.deploy(vboard.path, "sim", reset=True, say=lines.append)
    out = read_serial(vboard.path, 15, until=b"boot=3")
    events = [eventlog.parse(line) for line in out.splitlines()]
    boots = [e[3] for e in events if e and e[2] == "boot"]
    nums = [int(b["boot"]) for b in boots]
    assert len(nums) >= 2 and nums[0] <= 2 and nums == list(range(nums[0], nums[0] + len(nums))), out
    assert all(b["cause"] == "deepsleep" for b in boots if b["boot"] != "1")
    if nums[0] == 1:
        assert boots[0]["cause"] == "reset"  # machine.reset(): SOFT_RESET on the ESP32
    # (the reset's own ROM line may already have been read by mpremote on its way out)
    assert "rst:0x5 (DEEPSLEEP_RESET)" in out


def test_deploy_dry_run_on_a_fresh_board_lists_everything_and_changes_nothing(vboard):
    lines = []
    folders, copy, remove = deploy.deploy(vboard.path, "sim", dry_run=True, say=lines.append)
    assert len(copy) >= 15 and any(line.startswith("copy   :lib/mqtt.mpy") for line in lines)
    assert list(vboard.flash.iterdir()) == []


def test_deploy_cli_reports_a_missing_board_in_one_line(tmp_path):
    rc, out, err = petrel("deploy", "--port", tmp_path / "ttyUSB9", "--board", "sim")
    assert rc == 2  # nothing was tried, as flash says for a missing port
    assert err.startswith("petrel deploy: port %s does not exist" % (tmp_path / "ttyUSB9"))
    assert len(err.strip().splitlines()) == 1 and "import" not in err  # not the remote script


def test_deploy_installs_the_nodes_configuration_and_secrets(vboard, tmp_path):
    cfg = node_folder(tmp_path)
    (cfg / "certs").mkdir(parents=True)
    (cfg / "certs" / "ca.der").write_bytes(b"\x30\x82der")
    folders, copy, remove = deploy.deploy(vboard.path, "sim", config=cfg, say=lambda s: None)
    assert "certs" in folders and "config.json" in copy and "certs/ca.der" in copy
    assert (vboard.flash / "secrets.json").read_text() == (cfg / "secrets.json").read_text()
    assert (vboard.flash / "certs" / "ca.der").read_bytes() == b"\x30\x82der"


def test_deploy_builds_lib_without_the_host_only_modules(tmp_path):
    files = deploy.build(tmp_path, "x64")
    lib = sorted(rel for rel in files if rel.startswith("lib/"))
    assert "lib/mqtt.mpy" in lib and "lib/cbor.mpy" in lib and "lib/cborput.mpy" in lib
    assert sorted(deploy.HOST_ONLY) == ["cbordec", "cosecheck", "senml"]
    assert [rel for rel in lib if deploy.host_only(rel)] == []
    assert len(lib) == len(list(deploy.paths.LIB.glob("*.py"))) - len(deploy.HOST_ONLY)
    # a board's old copy of one goes, whatever its form; the node's own stay
    folders, copy, remove = deploy.plan({}, {"lib/senml.mpy": "x", "lib/cbordec.py": "x", "lib/cbor.mpy": "x"})
    assert remove == ["lib/cbordec.py", "lib/senml.mpy"]


def test_deploy_compiles_the_mqtt_client_at_O3_and_names_modules_by_their_board_path(tmp_path):
    # the client's modules without line numbers (heap at the TLS handshake,
    # bench/uplink.py); every other module keeps them for its tracebacks
    files = deploy.build(tmp_path / "out", "x64")
    for name, optimized in (("mqtt", True), ("mqtt_setup", True), ("outbox", False)):
        rel = "lib/%s.py" % name
        assert deploy.mpy_cross_args(rel) == ["-s", rel] + (["-O3"] if optimized else [])
        plain = tmp_path / ("%s-plain.mpy" % name)
        subprocess.run([deploy.mpy_cross(), "-march=x64", "-s", rel, "-o", str(plain), str(deploy.paths.LIB / (name + ".py"))],
                       check=True)
        built = files["lib/%s.mpy" % name].read_bytes()
        if optimized:
            assert len(built) < len(plain.read_bytes())  # the line-number tables gone
        else:
            assert built == plain.read_bytes()
        # its name is the board's path, not this checkout's (a qstr on the node's heap)
        assert rel.encode() in built and str(deploy.paths.LIB).encode() not in built
    # a node still imports and runs it: the VM loads the -O3 module
    out = subprocess.run([deploy.paths.micropython_binary(), "-c", "import mqtt; print(mqtt._head(0x10, 200))"],
                         env=dict(os.environ, MICROPYPATH=str(tmp_path / "out" / "lib")),
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "bytearray(b'\\x10\\xc8\\x01')", out.stdout + out.stderr


def test_deploy_ends_an_over_the_air_update_so_the_deployed_app_runs():
    # a node running an update from a slot (firmware/appslot.py) would keep
    # running it after a USB deploy, and one still downloading (data/update,
    # busy; data/update.img) would be installed over it later: the slot
    # choice, the slots and the download go; the node's data (its readings,
    # the downlink's versions in data/down) stays
    remote = {"data/appslot": "x", "slots/1/app/cycle.mpy": "x", "slots/2/lib/mqtt.mpy": "x",
              "data/update": "x", "data/update.img": "x", "data/update.next": "x", "data/down": "x",
              "data/outbox/00000001": "x", "data/updates.log": "x", "app/cycle.mpy": "x"}
    folders, copy, remove = deploy.plan({"app/cycle.mpy": __file__}, remote)
    assert remove == ["data/appslot", "data/update", "data/update.img", "data/update.next",
                      "slots/1/app/cycle.mpy", "slots/2/lib/mqtt.mpy"]
    assert "over-the-air" in deploy.why_removed("data/appslot")
    assert "install over" in deploy.why_removed("data/update.img")
    assert "update clear" in deploy.DOWNLOAD_NOTE and "given up" in deploy.DOWNLOAD_NOTE


def test_a_sleeping_node_is_reached_again_through_its_break_in_window(vboard):
    deploy.deploy(vboard.path, "sim", reset=True, say=lambda s: None)
    out = read_serial(vboard.path, 20, until=b"rst:0x5")  # it runs its wake and deep-sleeps
    assert "rst:0x5 (DEEPSLEEP_RESET)" in out, out
    # mpremote alone cannot reach it now (the node sleeps or runs its wake);
    # deploy resets it into the window and takes it
    lines = []
    t0 = time.monotonic()
    folders, copy, remove = deploy.deploy(vboard.path, "sim", dry_run=True, say=lines.append)
    took = time.monotonic() - t0
    reached = [line for line in lines if line.startswith("at the REPL ")]
    assert reached and float(reached[0].split()[3]) < 3, lines  # break-in latency, seconds
    assert took < 60, took
    assert "the board is at its REPL (no wake runs)" in lines[-1]
    rc, said = mpremote(vboard, "exec", "import machine; print('cause', machine.reset_cause())")
    assert rc == 0 and "cause 1" in said, said  # PWRON_RESET: the EN reset, then the window


def test_the_window_follows_a_hardware_reset_only(vboard):
    deploy.deploy(vboard.path, "sim", say=lambda s: None)  # left at the REPL
    out = b""
    with serial.Serial(vboard.path, timeout=0.1) as s:
        assert vboard.hard_reset()  # the EN button
        end = time.monotonic() + 20
        while time.monotonic() < end and b"boot=2 " not in out:
            out += s.read(4096)
    out = out.decode("utf-8", "replace")
    assert "rst:0x1 (POWERON_RESET)" in out and "main: press Ctrl-C within 2 s for the REPL" in out
    assert out.count("press Ctrl-C") == 1, out  # not at the timer wake after it
    window = [eventlog.parse(line) for line in out.splitlines() if "boot: cause=poweron" in line]
    assert window and window[0][1] >= 2000  # the boot line comes after the window, in virtual ms


def test_a_wrong_arch_is_refused_before_anything_is_written(vboard):
    with pytest.raises(deploy.DeployError) as e:
        deploy.deploy(vboard.path, "esp32-devkitc", say=lambda s: None)
    assert e.value.code == 2
    assert "the board runs micropython 1.29.0 (.mpy v6.3, x64) but profile esp32-devkitc builds " \
           ".mpy v6.3 for xtensawin: nothing was written; use --board sim" in str(e.value)
    assert list(vboard.flash.iterdir()) == []


@pytest.mark.parametrize("bad, expected", [
    (lambda c: dict(c, sample_s="5m"), "config.json: key 'sample_s' must be an integer in 10..86400"),
    (lambda c: dict(c, colour="red"), "config.json: key 'colour'"),
    ("no hmac_key", "secrets.json: key 'hmac_key' is missing"),
    ("no psk_key", "secrets.json: key 'psk_key' is missing (config.json's broker.tls is psk)"),
    (lambda c: dict(c, broker=dict(c["broker"], tls="tls", ca="/certs/ca.der")),
     "config.json: broker.ca names /certs/ca.der, which is not in"),
])
def test_a_bad_configuration_is_refused_before_anything_is_written(vboard, tmp_path, bad, expected):
    if bad == "no hmac_key":
        folder = node_folder(tmp_path, secrets=lambda s: {k: v for k, v in s.items() if k != "hmac_key"})
    elif bad == "no psk_key":
        folder = node_folder(tmp_path, secrets=lambda s: {k: v for k, v in s.items() if k != "psk_key"})
    else:
        folder = node_folder(tmp_path, config=bad)
    rc, out, err = petrel("deploy", "--port", vboard.path, "--board", "sim", "--config", folder)
    assert rc == 1 and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(vboard.flash.iterdir()) == []  # the board was not even reset
    rc, out, err = petrel("config", "check", folder)
    assert rc == 1 and expected in err and "refused: 1 problem" in err


def test_config_check_and_deploy_refuse_a_folder_that_is_not_there(tmp_path):
    rc, out, err = petrel("config", "check", tmp_path / "nodes" / "nwe")
    assert rc == 2 and "is not a folder" in err
    rc, out, err = petrel("deploy", "--port", "/dev/null", "--board", "sim", "--config", tmp_path / "nwe")
    assert rc == 2 and "--config: " in err and "is not a folder" in err


def test_a_second_tool_on_the_port_is_refused_naming_the_holder(vboard):
    mon = subprocess.Popen([sys.executable, "-m", "petrel.cli", "monitor", vboard.path, "--no-reset"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "reading " + vboard.path in mon.stderr.readline()
        t0 = time.monotonic()
        rc, out, err = petrel("deploy", "--port", vboard.path, "--board", "sim")
        assert rc == 1 and time.monotonic() - t0 < 30
        assert err.strip() == "petrel deploy: port %s busy (held by petrel monitor, pid %d): " \
                              "close that first" % (vboard.path, mon.pid)
    finally:
        mon.terminate()
        mon.wait(10)
    assert list(vboard.flash.iterdir()) == []


def test_port_is_optional_when_exactly_one_board_is_there(vboard, tmp_path, monkeypatch):
    from petrel import serialport

    monkeypatch.setattr(serialport, "_usb_ports", lambda: [])  # this machine's own ports aside
    assert serialport.choose(None, "deploy") == vboard.path
    other = VirtualBoard(tmp_path / "flash2").start()
    try:
        with pytest.raises(serialport.PortError) as e:
            serialport.choose(None, "deploy")
        assert e.value.code == 2 and "2 boards found, give --port" in str(e.value)
        assert vboard.path in str(e.value) and other.path in str(e.value)
    finally:
        other.stop()


def test_petrel_run_goes_from_a_provisioned_folder_to_a_logged_wake(vboard, tmp_path):
    from petrel import cli

    folder = tmp_path / "nodes" / "new"
    assert cli.main(["provision", "--out", str(folder), "--registry", str(tmp_path / "devices.sqlite"),
                     "--psk", "--broker-host", "broker.lan", "--wifi-ssid", "home",
                     "--wifi-psk-hex", "ab" * 32]) == 0
    rc, out, err = petrel("run", "--port", vboard.path, "--board", "sim", "--config", folder,
                          "--exit-after", "10s", "--color", "never")
    assert rc == 0, err
    assert "deployed: " in out and "petrel run: resetting" in out
    assert "rst:0x1 (POWERON_RESET)" in out and "main: press Ctrl-C within 2 s" in out
    wakes = [eventlog.parse(line) for line in out.splitlines() if " wake: " in line]
    assert wakes and wakes[0][3]["cause"] == "poweron", out
    assert (vboard.flash / "config.json").read_text() == (folder / "config.json").read_text()


def test_a_board_at_its_repl_is_not_reset_again(vboard):
    deploy.deploy(vboard.path, "sim", say=lambda s: None)  # broken in: at the REPL
    rc, out = mpremote(vboard, "exec", "import machine; machine.RTC().memory(b'unsent')")
    assert rc == 0, out
    lines = []
    deploy.deploy(vboard.path, "sim", dry_run=True, say=lines.append)
    assert "at the REPL already: no reset" in lines
    rc, out = mpremote(vboard, "exec", "import machine; print(machine.RTC().memory())")
    assert "b'unsent'" in out, out  # a reset would have lost RTC memory


def test_petrel_vboard_stops_cleanly_on_sigterm(tmp_path):
    from petrel import serialport

    p = subprocess.Popen([sys.executable, "-m", "petrel.cli", "vboard", "--flash", str(tmp_path / "f")],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    path = p.stdout.readline().strip()
    assert serialport.is_virtual(path)  # its control socket is there for the tools
    p.terminate()
    assert p.wait(15) == 0
    assert not serialport.is_virtual(path)  # and gone: no tool resets a board that is not there


def test_the_arch_check_knows_an_esp32_from_its_sys_implementation(tmp_path):
    """What a real board reports: the ESP32 port's _mpy (v6.3, xtensawin) takes what
    esp32-devkitc builds and refuses the virtual board's x64; an older MicroPython
    (.mpy v5) takes neither."""
    def built(arch):
        files = deploy.build(tmp_path / arch, arch)
        return [files[r].read_bytes()[:4] for r in files if r.endswith(".mpy")]

    esp32 = 6 | (3 | 10 << 2) << 8  # MPY_FILE_HEADER_INT on the ESP32 port
    assert deploy.board_mpy(esp32) == (6, 3, "xtensawin")
    devkitc = deploy.boards.load("esp32-devkitc")
    assert deploy.check_arch(built("xtensawin"), ("micropython", "1.29.0", esp32), devkitc) == \
        (6, 3, "xtensawin")
    with pytest.raises(deploy.DeployError) as e:
        deploy.check_arch(built("x64"), ("micropython", "1.29.0", esp32), deploy.boards.load("sim"))
    assert "use --board esp32-c3-devkitm" not in str(e.value)
    assert "for x64: nothing was written; use --board esp32-devkitc or --board esp32-node or " \
           "--board esp32-s3-devkitc" in str(e.value)
    old = 5 | (10 << 2) << 8  # MicroPython 1.19, .mpy v5
    with pytest.raises(deploy.DeployError) as e:
        deploy.check_arch(built("xtensawin"), ("micropython", "1.19.1", old), devkitc)
    assert "the board runs micropython 1.19.1 (.mpy v5.0, xtensawin)" in str(e.value)
    with pytest.raises(deploy.DeployError) as e:
        deploy.check_arch(built("xtensawin"), ("micropython", "1.29.0", 0), devkitc)
    assert "does not load .mpy files" in str(e.value)


class ScriptedBoard:
    """A serial port whose board prints `script` ([(seconds after the reset, bytes)])
    and answers Ctrl-C with the break-in once its window is open."""

    def __init__(self, script):
        self.script, self.writes, self.reset_at, self.broken = list(script), [], None, False

    def read(self, n):
        time.sleep(0.005)
        if self.reset_at is None:
            return b""
        now = time.monotonic() - self.reset_at
        out = b""
        while self.script and self.script[0][0] <= now:
            out += self.script.pop(0)[1]
        if not self.broken and any(w == b"\x03" and t >= self.window_at for t, w in self.writes):
            self.broken = True
            out += b"I 000040 main: break-in: at the REPL\r\n>>> "
        return out

    def write(self, data):
        self.writes.append((time.monotonic() - self.reset_at if self.reset_at else -1, data))

    def reset_input_buffer(self):
        pass

    def close(self):
        pass


def test_ctrl_c_waits_for_the_windows_line(monkeypatch):
    """None before the window opens: MicroPython's _boot.py (which mounts the
    filesystem) would take it as a KeyboardInterrupt."""
    from petrel import serialport

    board = ScriptedBoard([(0.05, b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET)\r\n"),
                           (0.5, b"I 000000 main: press Ctrl-C within 2 s for the REPL\r\n")])
    board.window_at = 0.5
    monkeypatch.setattr(serialport, "open_serial", lambda port, baud: board)
    monkeypatch.setattr(serialport, "hard_reset",
                        lambda port, ser: setattr(board, "reset_at", time.monotonic()))
    out = serialport.break_in("/dev/ttyUSB0")
    assert "main: break-in" in out
    after_reset = [t for t, w in board.writes if t >= 0]
    assert after_reset and min(after_reset) >= 0.5  # the first Ctrl-C after the window's line
    assert min(after_reset) < 0.6
