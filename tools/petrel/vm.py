"""Run code on the real MicroPython VM with the simulated board on its path."""

import os
import subprocess

from . import paths


def vm_env(extra_path=()):
    env = dict(os.environ)
    env["MICROPYPATH"] = paths.vm_path(*extra_path)
    return env


def run_file(script, args=(), extra_path=(), timeout=None, heapsize=None, as_board=False):
    """Run a script on the VM; returns its exit code. Output goes to ours.
    as_board: run it as the board's program, so a deep sleep ends it quietly."""
    cmd = [paths.micropython_binary()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    if as_board:
        cmd.append(str(paths.SIM / "vmrun.py"))
    cmd += [str(script)] + list(args)
    return subprocess.call(cmd, env=vm_env(extra_path), timeout=timeout)


def run_portable_tests(selected=(), directories=None, timeout=600):
    """The portable tests, and the VM-only ones (host_tests/vm/test_*.py: heap
    locks and the like), on the VM; returns the runner's exit code."""
    directories = directories or [paths.PORTABLE_TESTS, paths.VM_TESTS]
    runner = paths.ROOT / "host_tests" / "vmrunner.py"
    return run_file(runner, [":".join(str(d) for d in directories)] + list(selected),
                    extra_path=directories, timeout=timeout)


def run_source(script, args=(), timeout=120, sim=False):
    """Run MicroPython source text on the VM with lib/ on the path (and the
    simulated board when sim=True; without it, time is real). -> (rc, output)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
        name = f.name
    try:
        env = dict(os.environ)
        env["MICROPYPATH"] = paths.vm_path() if sim else ".frozen:%s" % paths.LIB
        p = subprocess.run([paths.micropython_binary(), name] + [str(a) for a in args], env=env,
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    finally:
        os.unlink(name)
