"""An app update under power cuts on the real filesystem (issue 17, item 2):
littlefs in the MicroPython VM on the NOR flash model, the power cut at a
program or erase of the chunks' writes, the settle, the stage, the switch at
the next boot or the confirmation; then remount, boot (appslot.choose) and
check: a complete, verified app chosen (the factory's or the new one), no
reading lost, and the update resumed to its confirmed end
(host_tests/vm/powercut_update.py). This is the fast slice; `make
test-powercut-update` cuts at every position."""

import re
import subprocess

import pytest

from petrel import paths, vm

SCRIPT = paths.ROOT / "host_tests" / "vm" / "powercut_update.py"


def campaign(start, spec, *args):
    proc = subprocess.run([paths.micropython_binary(), "-X", "heapsize=8M", str(SCRIPT), "-q", start, spec]
                          + [str(a) for a in args], env=vm.vm_env(), capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout
    head = re.search(r"^powercut-update start=\S+ image=(\d+) chunk=(\d+) chunks=(\d+) wakes=(\d+) ops=(\d+) "
                     r"cuts=(\d+)$", out, re.M)
    assert head, out[-3000:] + proc.stderr[-3000:]
    steps = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", re.search(r"^ops by step: (.*)$", out,
                                                                               re.M).group(1)))
    failures = [line for line in out.splitlines() if line.startswith("CUT") and "FAIL" in line]
    closing = out.strip().splitlines()[-1]
    return {"chunks": int(head.group(3)), "wakes": int(head.group(4)), "ops": int(head.group(5)),
            "cuts": int(head.group(6)), "steps": steps, "failures": failures, "closing": closing,
            "rc": proc.returncode}


# factory: the update goes to slot 1 and the factory is the way back; slot1:
# v5 runs from slot 1, the update goes to slot 2 and slot 1 is the way back
@pytest.mark.parametrize("start,spread", [("factory", 40), ("slot1", 25)])
def test_power_cuts_in_an_update_leave_a_verified_app_and_every_reading(start, spread):
    r = campaign(start, "spread:%d" % spread)
    # the run really is an update over several wakes, with every step writing flash
    assert r["chunks"] >= 8 and r["wakes"] >= 3, r
    for step in ("chunk", "settle", "stage", "choose", "confirm", "append", "ack"):
        assert r["steps"].get(step, 0) > 0, (step, r["steps"])
    # the spread, plus every op of one chunk, the stage, the switch and the confirmation
    assert r["cuts"] >= spread + r["steps"]["stage"] + r["steps"]["choose"] + r["steps"]["confirm"]
    assert r["failures"] == [] and r["rc"] == 0, r["failures"][:5]
    assert r["closing"] == "powercut-update: %d passed, 0 failed" % r["cuts"]
