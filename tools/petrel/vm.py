"""Run code on the real MicroPython VM with the simulated board on its path."""

import os
import re
import subprocess
import sys
from pathlib import Path

from . import paths

_LOG = re.compile(r"^[EWID] \d+ \S+:")  # an eventlog line (lib/eventlog.py)


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


def missing_tests(selected, directories):
    """The first selection naming no test module or function, as a message; None if all exist."""
    for sel in selected:
        mod, _, fn = sel.partition("::")
        mod = mod.split("/")[-1]
        mod = mod[:-3] if mod.endswith(".py") else mod
        found = [d / (mod + ".py") for d in directories if (d / (mod + ".py")).is_file()]
        if not found:
            return "no test module %s in %s" % (mod, " or ".join(
                str(Path(d).relative_to(paths.ROOT)) for d in directories))
        if fn and not any(re.search(r"^def %s\(" % re.escape(fn), f.read_text(), re.M)
                          for f in found):
            return "no test %s in %s" % (fn, found[0].relative_to(paths.ROOT))
    return None


def run_portable_tests(selected=(), directories=None, timeout=600, verbose=False, out=None):
    """The portable tests, and the VM-only ones (host_tests/vm/test_*.py: heap
    locks and the like), on the VM; returns the runner's exit code (2: a test
    named that does not exist).

    The firmware under test logs as on a board, and many tests provoke its
    warnings and errors on purpose (a missing sensor, a refused file): such
    log lines are not failures. Unless verbose, they are counted, not shown,
    so that what is shown is the runner's PASS/FAIL lines, a failing test's
    output and the summary."""
    out = out or sys.stdout
    directories = [Path(d) for d in (directories or [paths.PORTABLE_TESTS, paths.VM_TESTS])]
    gone = missing_tests(selected, directories)
    if gone:
        print("petrel vm test: %s" % gone, file=sys.stderr)
        return 2
    runner = paths.ROOT / "host_tests" / "vmrunner.py"
    cmd = [paths.micropython_binary(), str(runner), ":".join(str(d) for d in directories)]
    proc = subprocess.Popen(cmd + list(selected), env=vm_env(directories), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    hidden = {}
    summary = ""  # the runner's closing "vm: N passed, N failed", kept last
    held = []  # lines since the last PASS/FAIL: shown only if the next test fails
    try:
        for line in proc.stdout:
            if line.startswith("PASS "):
                held = []
            elif line.startswith("FAIL "):
                out.write("".join(held))  # what the failing test logged, before its traceback
                held = []
            elif line.startswith("vm: ") and " passed, " in line:
                summary = line
                continue
            elif not verbose and _LOG.match(line):
                hidden[line[0]] = hidden.get(line[0], 0) + 1
                held.append(line)
                continue
            out.write(line)
            out.flush()
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out.write("vm: the runner did not finish within %d s\n" % timeout)
        return 1
    if hidden:
        out.write("vm: %s log lines from the firmware under test not shown (tests provoke them; "
                  "-v shows them; a failing test's are shown above its traceback)\n" % ", ".join(
                      "%d %s" % (hidden[k], {"E": "error", "W": "warning", "I": "info",
                                             "D": "debug"}[k]) for k in "EWID" if k in hidden))
    if not summary:  # the VM died mid-test: what it logged last is the clue
        out.write("".join(held))
        summary = "vm: the runner ended without its summary (exit %d): a test crashed the VM; " \
                  "its log lines are above\n" % rc
    out.write(summary)
    out.flush()
    return rc or (0 if " 0 failed" in summary else 1)


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
