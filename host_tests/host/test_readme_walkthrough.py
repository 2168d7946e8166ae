"""The README's "With a real board" walkthrough, every command of it run as
written, against the virtual board (a pty) and the mock ROM bootloader (a
socket) standing in for /dev/ttyUSB0: so the README stays true.

The only changes made to a command: the port (the mock's URL for flash, the
virtual board's pty for the rest), --board sim for what runs on the virtual
board (an x64 VM, not an ESP32), .venv/bin/ made absolute, and a bound on the
commands that run until Ctrl-C (monitor, run) or open an interactive REPL
(repl: --exec instead)."""

import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from petrel import harness
from petrel.paths import ROOT
from petrel.vboard import VirtualBoard
from test_flash import mocks  # noqa: F401  the mock ROM bootloader fixture

harness.install()
import espimage  # noqa: E402

BIN = str(Path(sys.executable).parent) + "/"


def walkthrough():
    """The shell commands of the README's real-board section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## With a real board\n"):]
    section = section[:section.index("\n## ", 3)]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for cmd in re.sub(r"\\\n\s*", "", block).splitlines():
            cmd = cmd.strip()
            if cmd:
                commands.append(cmd)
    return commands


def test_the_walkthrough_names_every_step():
    tools = [c.split()[1] for c in walkthrough() if c.startswith(".venv/bin/petrel")]
    assert tools == ["flash", "provision", "config", "run", "monitor", "repl", "deploy", "deploy"]


@pytest.fixture
def vboard(tmp_path, monkeypatch):
    monkeypatch.setenv("PETREL_RUN_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    vb = VirtualBoard(tmp_path / "flash").start()
    time.sleep(0.3)
    yield vb
    vb.stop()


def test_the_readme_walkthrough_runs_as_written(vboard, mocks, tmp_path):  # noqa: F811
    home = tmp_path / "clone"
    home.mkdir()
    image = home / "ESP32_GENERIC-20260101-v1.29.0.bin"  # as downloaded
    head = espimage.build()
    image.write_bytes(head + random.Random(15).randbytes(64 * 1024 - len(head)))
    flash_port = mocks("esp32")
    outputs = {}
    for cmd in walkthrough():
        cmd = cmd.replace(".venv/bin/", BIN)
        tool = cmd.split()[1] if cmd.startswith(BIN + "petrel") else cmd.split()[0]
        if tool == "flash":
            cmd = cmd.replace("/dev/ttyUSB0", flash_port)
        else:
            cmd = cmd.replace("/dev/ttyUSB0", vboard.path).replace("--board esp32-devkitc", "--board sim")
        if tool == "monitor":
            cmd += " --exit-after 4s"
        elif tool == "run":
            cmd += " --exit-after 10s --color never"
        elif tool == "repl":
            cmd += " --exec \"import machine; print('cause', machine.reset_cause())\""
        p = subprocess.run(["bash", "-c", cmd], cwd=home, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, "%s\n%s%s" % (cmd, p.stdout, p.stderr)
        outputs.setdefault(tool, []).append(p.stdout + p.stderr)
    assert "Verification successful" in outputs["flash"][0]
    assert "next: petrel run --config nodes/new" in outputs["provision"][0]
    run = outputs["run"][0]
    assert "main: press Ctrl-C within 2 s for the REPL" in run and " wake: cause=poweron" in run, run
    assert "cause 1" in outputs["repl"][0]  # reached through the window after a power-on reset
    # (what they copy depends on firmware/ not changing meanwhile: not asserted)
    assert "the board is at its REPL (no wake runs)" in outputs["deploy"][0]
    assert "deployed: " in outputs["deploy"][1] and "board reset" in outputs["deploy"][1]
    assert (home / "node.log").stat().st_size > 0  # the monitor's --save
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "devices.sqlite", "nodes/new",
                              "nodes/new.psk", "wifi.txt", "node.log"], capture_output=True, text=True)
    assert len(ignored.stdout.split()) == 5, ignored.stdout  # nothing of it one `git add .` away
