"""Fixtures for host tests that need a real broker or the VM."""

import os
import subprocess

import pytest

from petrel import paths


@pytest.fixture(scope="session")
def broker():
    from petrel.broker import Broker

    b = Broker().start()
    yield b
    b.stop()


def run_vm(script, args=(), timeout=120, sim=False):
    """Run a MicroPython script text on the VM with lib/ on the path (and the
    simulated board when sim=True; without it, time is real). -> (rc, output)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
        name = f.name
    try:
        path = paths.vm_path() if sim else ".frozen:%s" % paths.LIB
        env = dict(os.environ, MICROPYPATH=path)
        p = subprocess.run([paths.micropython_binary(), name] + [str(a) for a in args], env=env,
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    finally:
        os.unlink(name)
