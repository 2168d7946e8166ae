"""Run firmware modules under CPython against the simulated board.

The fakes in boards/sim are plain modules; `install()` puts them first on
sys.path so `import machine`, `network`, `esp32`, `ntptime` and `micropython`
find them (ahead of the `micropython.py` the VM wheel leaves in site-packages).

`time` is special: CPython's own must keep working for pytest and the tools, so
the fake is given only to code that lives in the project's firmware-side folders
(boards/sim, lib, firmware, portable tests, bench, and any flash folder a boot
runner adds). Everywhere else `import time` is CPython's. `socket` (the board's
lwip over real sockets, boards/sim/socket.py) and `tls` (MicroPython's API on
CPython's ssl, boards/sim/simtls.py) are given the same way.
"""

import builtins
import contextlib
import importlib.util
import os
import select  # noqa: F401  CPython's, loaded before boards/sim goes first on sys.path
import socket  # noqa: F401  (the fake finds CPython's in sys.modules)
import ssl  # noqa: F401
import sys

from .paths import ROOT, SIM, LIB, FIRMWARE, PORTABLE_TESTS

_SWAPPED = {}  # name -> fake module, for firmware-side importers only
_roots = [str(SIM), str(LIB), str(FIRMWARE), str(PORTABLE_TESTS), str(ROOT / "bench")]
_fake_time = None
_real_import = builtins.__import__


def _is_firmware_side(globals_):
    f = globals_.get("__file__") if globals_ else None
    if not f:
        return False
    f = os.path.abspath(f)
    for r in _roots:
        if f.startswith(r + os.sep):
            return True
    return False


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name in _SWAPPED and _is_firmware_side(globals):
        return _SWAPPED[name]
    return _real_import(name, globals, locals, fromlist, level)


flash_roots = []  # every flash folder a boot runner used, in this process


def add_firmware_root(path):
    """Code under `path` (a board's flash folder) also sees the fake time."""
    p = os.path.abspath(str(path))
    if p not in _roots:
        _roots.append(p)
    if p not in flash_roots:
        flash_roots.append(p)


def install():
    """Make the simulated board importable under CPython. Idempotent."""
    global _fake_time
    # Every simulated boot imports the firmware afresh (fresh_modules): with
    # bytecode caching off (PYTHONDONTWRITEBYTECODE, set on some machines)
    # each boot compiled its ~30 modules again, 48 ms a boot, half of a long
    # wake test. Cached in a folder of its own, never beside the sources (the
    # board's flash stays what a deploy writes).
    if sys.pycache_prefix is None:
        import tempfile

        sys.pycache_prefix = os.path.join(tempfile.gettempdir(), "petrel-pycache-%d" % os.getuid())
    sys.dont_write_bytecode = False
    for p in (str(FIRMWARE), str(LIB), str(SIM)):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    stale = sys.modules.get("micropython")
    if stale is not None and not str(getattr(stale, "__file__", "")).startswith(str(SIM)):
        del sys.modules["micropython"]  # the VM wheel's stub, if anything loaded it
    if _fake_time is None:
        _fake_time = _load("time", "time.py")
        _SWAPPED.update({"time": _fake_time, "utime": _fake_time})
        builtins.__import__ = _import
        _fake_time.__spec__.loader.exec_module(_fake_time)
        _SWAPPED["socket"] = _load("socket", "socket.py")
        _SWAPPED["socket"].__spec__.loader.exec_module(_SWAPPED["socket"])
        _SWAPPED["tls"] = _load("tls", "simtls.py")
        _SWAPPED["tls"].__spec__.loader.exec_module(_SWAPPED["tls"])
    return _fake_time


def _load(name, filename):
    """A fake module under its MicroPython name, kept in sys.modules as
    petrel_sim_<name> so that CPython's own stays where it is."""
    spec = importlib.util.spec_from_file_location(name, SIM / filename)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["petrel_sim_" + name] = mod
    return mod


def forget_modules(roots):
    """Drop modules loaded from these folders, so the next import loads them
    afresh, as a real wake does. -> {name: module} of those dropped."""
    roots = [os.path.abspath(str(r)) + os.sep for r in roots]
    gone = {}
    for name in list(sys.modules):
        f = getattr(sys.modules[name], "__file__", None) or ""
        if any(os.path.abspath(f).startswith(r) for r in roots):
            gone[name] = sys.modules.pop(name)
    return gone


@contextlib.contextmanager
def fresh_modules(roots):
    """Within: modules from these folders (a board's flash, lib, firmware) are
    imported afresh, as at a real wake. After: the copies made within are
    dropped and the ones from before are back. So a boot's modules and the
    host's never mix: code that imported `cbor` before a boot keeps one
    `cbor`, one `cbortypes`, one `Tag` class, whatever it loads on use after
    the boot (were the boot's copies left in sys.modules, a module the host
    loads later would bind to them and see a second Tag class)."""
    before = forget_modules(roots)
    try:
        yield
    finally:
        forget_modules(roots)
        sys.modules.update(before)
