"""The virtual board with unmodified mpremote, and `petrel deploy` onto it: the
deployed firmware boots and runs its wake cycle there."""

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


@pytest.fixture
def vboard(tmp_path):
    vb = VirtualBoard(tmp_path / "flash").start()
    time.sleep(0.3)
    yield vb
    vb.stop()


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


def test_deploy_cli_reports_a_missing_board(tmp_path):
    p = subprocess.run([sys.executable, "-m", "petrel.cli", "deploy", "--port", str(tmp_path / "ttyUSB9"),
                        "--board", "sim"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "petrel deploy:" in p.stderr and "mpremote connect" in p.stderr


def test_deploy_installs_the_nodes_configuration_and_secrets(vboard, tmp_path):
    cfg = tmp_path / "node"
    (cfg / "certs").mkdir(parents=True)
    (cfg / "config.json").write_text('{"device_id": "p-a1b2c3"}')
    (cfg / "secrets.json").write_text('{"hmac_key": "..."}')
    (cfg / "certs" / "ca.der").write_bytes(b"\x30\x82der")
    folders, copy, remove = deploy.deploy(vboard.path, "sim", config=cfg, say=lambda s: None)
    assert "certs" in folders and "config.json" in copy and "certs/ca.der" in copy
    assert (vboard.flash / "secrets.json").read_text() == '{"hmac_key": "..."}'
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
