"""A fast slice of the collector's fuzz campaign (host_tests/fuzz_collector.py;
the whole of it, 500,000 inputs: make fuzz-collector): mutated valid messages
and random bytes, each answered with a Message or a Rejected within 0.1 s,
the process not growing, what is accepted sane and committed once."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fuzz_collector  # noqa: E402


def test_a_slice_of_the_fuzz_campaign():
    s = fuzz_collector.run(2000, seed=12)
    assert s["escapes"] == []
    assert s["slowest"][0] < fuzz_collector.MAX_S
    assert s["peak_growth_kb"] < 4096
    # the slice reached every stage: accepted, and refused for each reason a mutation can cause
    assert s["accepted"] > 50
    assert set(s["reasons"]) >= {"structure", "mac", "alg", "name", "oversized", "unknown_kid"}
