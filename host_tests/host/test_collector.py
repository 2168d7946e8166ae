"""The collector's verifier against messages built with the node's own libraries."""

import pytest

import cose
import senml
from petrel.collector import Rejected, Verifier

KA, KB = b"a" * 31 + b"1", b"b" * 31 + b"2"


def message(kid, key, seq, base_name):
    p = senml.Pack(base_name + "/", [("t", "Cel", 100)])
    p.add(0, 2153, 1767225600)
    return cose.mac0(key, kid.encode(), seq, p.cbor())


def test_a_devices_key_speaks_only_for_that_device():
    v = Verifier({"p-A": KA, "p-B": KB})
    assert v.accept(message("p-A", KA, 1, "p-A"))[0][0] == "p-A/t"
    # a key read out of board A cannot put words in board B's mouth
    with pytest.raises(Rejected, match="not device"):
        v.accept(message("p-A", KA, 2, "p-B"))
    with pytest.raises(Rejected, match="unknown kid"):
        v.accept(message("p-C", KA, 1, "p-C"))


def test_sequence_numbers_must_grow_per_device():
    v = Verifier({"p-A": KA, "p-B": KB})
    v.accept(message("p-A", KA, 5, "p-A"))
    v.accept(message("p-B", KB, 1, "p-B"))  # each device has its own count
    with pytest.raises(Rejected, match="replay"):
        v.accept(message("p-A", KA, 5, "p-A"))
    with pytest.raises(Rejected, match="replay"):
        v.accept(message("p-A", KA, 4, "p-A"))
    v.accept(message("p-A", KA, 9, "p-A"))


def test_a_restarted_collector_still_refuses_replays(tmp_path):
    db = tmp_path / "devices.sqlite"
    v = Verifier({"p-A": KA}, store=db)
    old = message("p-A", KA, 7, "p-A")
    v.accept(old)
    v = Verifier({"p-A": KA}, store=db)  # the collector restarted
    with pytest.raises(Rejected, match="replay"):
        v.accept(old)
    v.accept(message("p-A", KA, 8, "p-A"))
