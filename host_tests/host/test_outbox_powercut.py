"""The outbox under power cuts on the real filesystem: littlefs in the MicroPython VM
on the NOR flash model, the power cut at a program or erase, then remount and check
(host_tests/vm/powercut.py). This is the fast slice; `make test-powercut` cuts at
every position."""

import re
import subprocess

import pytest

from petrel import paths, vm

SCRIPT = paths.ROOT / "host_tests" / "vm" / "powercut.py"


def campaign(mode, readings, spec, capacity=65536):
    proc = subprocess.run([paths.micropython_binary(), str(SCRIPT), mode, str(readings), spec,
                           str(capacity)], env=vm.vm_env(), capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout
    head = re.search(r"^powercut mode=\S+ readings=(\d+) capacity=\d+ ops=(\d+) drops=(\d+) cuts=(\d+)$",
                     out, re.M)
    assert head, out[-3000:]
    failures = [line for line in out.splitlines() if line.startswith("CUT") and "FAIL" in line]
    closing = out.strip().splitlines()[-1]
    return {"ops": int(head.group(2)), "drops": int(head.group(3)), "cuts": int(head.group(4)),
            "failures": failures, "closing": closing, "rc": proc.returncode}


@pytest.mark.parametrize("mode", ["direct", "rtc-reset", "rtc-power"])
def test_power_cuts_lose_nothing_accepted(mode):
    r = campaign(mode, 1000, "spread:40")
    assert r["failures"] == [] and r["rc"] == 0, r["failures"][:5]
    assert r["cuts"] >= 40
    assert r["closing"] == "powercut: %d passed, 0 failed" % r["cuts"]


@pytest.mark.parametrize("mode", ["direct", "rtc-power"])
def test_power_cuts_while_dropping_when_full(mode):
    r = campaign(mode, 1000, "spread:25", capacity=8192)
    assert r["drops"] > 0  # the scenario really overflows
    assert r["failures"] == [] and r["rc"] == 0, r["failures"][:5]


def test_fast_path_cycle_is_covered_whole():
    # every op of one RTC flush cycle is a cut point, on top of the spread
    r = campaign("rtc-reset", 1000, "spread:2")
    assert r["cuts"] > 20 and r["failures"] == []
