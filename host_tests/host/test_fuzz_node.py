"""A fast slice of the node's fuzz campaign (host_tests/fuzz_node.py; the whole
of it, 100,000 inputs a kind on CPython and 10,000 on the VM: make fuzz):
every input the node and its tools take, mutated, answered with a valid object
or the component's one error within 1 s, on both interpreters; the downlink
(issue 16) as raw mutated messages, sealed hostile bodies, and lists of them
through a node's mailbox. The harness's
own watchdog is checked too: an escape, a hang and a slow input are each
reported, and the inputs after a hang still run."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fuzz_node  # noqa: E402

SLICE = {"cpython": 300, "vm": 100}
SEED = 14  # not make fuzz's: the slice adds inputs the campaign did not try


def _runs():
    for k in fuzz_node.KINDS:
        # the whole-node kinds (downsealed, downmail: a node's receive per input) take their share
        n = {interp: max(10, int(SLICE[interp] * k.share)) for interp in SLICE}
        yield k.name, "cpython", n["cpython"]
        if k.vm:
            yield k.name, "vm", n["vm"]


@pytest.mark.parametrize("kind,interp,n", list(_runs()))
def test_a_slice_of_the_fuzz_campaign(kind, interp, n):
    st = fuzz_node.run_kind(kind, SEED, n, vm=interp == "vm")
    if fuzz_node.failed(st):
        import io

        out = io.StringIO()
        fuzz_node.report(st, SEED, out)
        pytest.fail(out.getvalue())
    assert st["inputs"] == n


@pytest.mark.parametrize("interp", ["cpython", "vm"])
def test_the_harness_reports_an_escape_a_hang_and_a_slow_input_and_goes_on(interp):
    st = fuzz_node.run_kind("selftest", 1, 12, vm=interp == "vm", hang_s=3)
    assert st["inputs"] == 12  # the inputs after the hang ran, in a new worker
    assert st["workers"] == 2
    assert [e["index"] for e in st["escapes"].values()] == [3]
    assert list(st["escapes"])[0].startswith("TypeError at ")  # ValueError, the documented one, is not
    assert [h[0] for h in st["hangs"]] == [5]
    assert [s[0] for s in st["slow"]] == [7]
    assert fuzz_node.failed(st)
