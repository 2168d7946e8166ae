"""The collector's verifier (tools/petrel/verify.py): wire format v2 resolved
into readings, and every kind of bad message refused with its reason, fast
and without echoing the input. Messages are written with cbor2
(petrel.testmsg), not with the node's encoder."""

import hashlib
import hmac
import time
from decimal import Decimal

import cbor2
import pytest

from petrel import testmsg
from petrel.verify import MAX_MESSAGE, Rejected, Verifier

KA, KB = b"a" * 31 + b"1", b"b" * 31 + b"2"
T0 = 1767225600
V = Verifier({"p-A": KA, "p-B": KB})


def seal(payload, key=KA, kid=b"p-A", protected=None, unprotected=None, tag=None, seq=1, alg=5):
    """A COSE_Mac0 with any field replaced by anything (MACed whenever it can be)."""
    if protected is None:
        protected = cbor2.dumps({1: alg, -65537: seq})
    if tag is None:
        mac0 = cbor2.dumps(["MAC0", protected, b"", payload]) if isinstance(protected, bytes) and isinstance(
            payload, bytes) else b""
        tag = hmac.new(key, mac0, hashlib.sha256).digest()
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {4: kid} if unprotected is None else unprotected,
                                          payload, tag]))


def refused(reason, data, topic="petrel/p-A/up"):
    t = time.perf_counter()
    with pytest.raises(Rejected) as e:
        V.open(topic, data)
    assert time.perf_counter() - t < 0.1
    assert e.value.reason == reason, str(e.value)
    assert len(str(e.value)) < 200  # never the input's repr
    return e.value


def test_a_dated_pack_resolves_to_exact_readings_in_both_layouts():
    rows = [("t", "Cel", 2153, 100, T0, 40), ("t", "Cel", 2150, 100, T0 + 60, 41), ("t", "Cel", 2100, 100, T0 + 120, 42),
            ("h", "%RH", 5125, 100, T0, 43, 1), ("bat", "V", 3001, 1000, T0 + 60, 50)]
    for layout in ("compact", "named"):
        data = testmsg.up(KA, "p-A", 7, rows, layout=layout)
        assert bytes.fromhex("c48221190869") in data  # 21.53 went as a decimal fraction
        m = V.open("petrel/p-A/up", data, received=T0 + 500)
        assert (m.device, m.seq, m.kind, m.received, m.health) == ("p-A", 7, "up", T0 + 500, None)
        got = sorted((r.channel, r.unit, r.exact, r.value, r.time, r.quality, r.flags, r.rid) for r in m.readings)
        assert got == sorted([("bat", "V", "3.001", 3.001, T0 + 60, "dated", 0, 50),
                       ("h", "%RH", "51.25", 51.25, T0, "dated", 1, 43),
                       ("t", "Cel", "21.53", 21.53, T0, "dated", 0, 40),
                       ("t", "Cel", "21.5", 21.5, T0 + 60, "dated", 0, 41),
                              ("t", "Cel", "21", 21.0, T0 + 120, "dated", 0, 42)]), layout
        assert all(r.device == "p-A" and r.value == float(r.exact) for r in m.readings)


def test_reading_ids_follow_i_and_is_record_by_record():
    pack = [{-2: "p-A/t", -3: T0, "i": 10, 2: 1}, {2: 2}, {"is": 5, 2: 3}, {2: 4}, {"i": 3, 2: 5}, {2: 6}]
    m = V.open("petrel/p-A/up", seal(cbor2.dumps(pack)))
    assert [r.rid for r in m.readings] == [10, 11, 16, 21, 3, 8]
    refused("structure", seal(cbor2.dumps([{-2: "p-A/t", 2: 1}])))  # the first record carries i
    refused("structure", seal(cbor2.dumps([{-2: "p-A/t", "i": -1, 2: 1}])))
    refused("structure", seal(cbor2.dumps([{-2: "p-A/t", "i": 1 << 63, 2: 1}])))
    refused("structure", seal(cbor2.dumps([{-2: "p-A/t", "i": (1 << 63) - 1, 2: 1}, {2: 1}])))  # the next overflows
    refused("structure", seal(cbor2.dumps([{-2: "p-A/t", "i": 1, "is": 0, 2: 1}])))


def test_floats_and_ints_are_numbers_too_and_exact_is_the_shortest_repr():
    pack = [{-2: "p-A/t", -3: T0, "i": 1, 2: 21.53}, {2: -7}, {2: 0.1}, {2: cbor2.CBORTag(4, [-1, 2150])}]
    got = [(r.value, r.exact) for r in V.open("petrel/p-A/up", seal(cbor2.dumps(pack))).readings]
    assert got == [(21.53, "21.53"), (-7.0, "-7"), (0.1, "0.1"), (215.0, "215")]
    for bad in (float("nan"), float("inf"), "21.5", b"\x01", True, None, [1], cbor2.CBORTag(4, [-1000, 1]),
                cbor2.CBORTag(4, [-1, 1 << 70]), cbor2.CBORTag(4, [-1.5, 2]), cbor2.CBORTag(2, b"\x01" * 40)):
        refused("structure", seal(cbor2.dumps([{-2: "p-A/t", -3: T0, "i": 1, 2: bad}])))


def test_relative_times_are_dated_on_receipt_and_undated_ones_have_none():
    rows = [("t", "Cel", 2153, 100, -120, 5), ("t", "Cel", 2154, 100, 0, 6)]
    m = V.open("petrel/p-A/up", testmsg.up(KA, "p-A", 1, rows, time="relative"), received=T0)
    assert [(r.time, r.quality) for r in m.readings] == [(T0 - 120, "relative"), (T0, "relative")]
    m = V.open("petrel/p-A/up", testmsg.up(KA, "p-A", 1, rows, time="undated"), received=T0)
    assert [(r.time, r.quality, r.rid) for r in m.readings] == [(None, "undated", 5), (None, "undated", 6)]
    rec = {-2: "p-A/t", "i": 1, 2: 1}
    for bad in ({"undated_": 1}, {"undated_": True, 6: -5}, {"undated_": True, -3: T0}):
        refused("structure", seal(cbor2.dumps([{**rec, **bad}])))
    refused("structure", seal(cbor2.dumps([dict(rec, undated_=True), dict(rec, i=2)])))  # never mixed


def test_a_must_understand_label_it_does_not_know_refuses_the_pack_and_others_are_ignored():
    rec = {-2: "p-A/t", -3: T0, "i": 1, 2: 1}
    assert V.open("petrel/p-A/up", seal(cbor2.dumps([dict(rec, note="x")]))).readings[0].exact == "1"
    for extra in ({"later_": 1}, {"_": 1}, {-5: 10}, {5: 3}, {-1: 11}):  # bv, s would change the value
        refused("structure", seal(cbor2.dumps([{**rec, **extra}])))


def test_every_record_must_name_the_kids_device():
    for bn, n in (("p-B/t", None), ("p-A", None), ("p-A/", None), ("p-A/", "a/b"), ("", "p-A"), ("p-AB/", "t"),
                  ("p-A/" + "x" * 65, None)):
        rec = {-2: bn, -3: T0, "i": 1, 2: 1}
        if n is not None:
            rec[0] = n
        e = refused("name", seal(cbor2.dumps([rec])))
        assert e.device == "p-A"
    # one foreign record in a pack of good ones refuses the whole message
    good = {-2: "p-A/t", -3: T0, "i": 1, 2: 1}
    refused("name", seal(cbor2.dumps([good, {-2: "p-B/t", 2: 2}])))


def test_health_messages():
    data = testmsg.health(KA, "p-A", 9, {"fw": "0.7.0", "batt": 3010, "uplink_s": 3600, "rssi": -61}, bt=T0)
    m = V.open("petrel/p-A/health", data, received=T0 + 3)
    assert (m.kind, m.seq, m.readings, m.time) == ("health", 9, [], T0)
    assert m.health == {"fw": "0.7.0", "batt": 3010, "uplink_s": 3600, "rssi": -61}
    assert V.open("petrel/p-A/health", testmsg.health(KA, "p-A", 9, {"q": 1})).time is None
    refused("name", seal(cbor2.dumps([{-2: "p-A/", 0: "q", 2: 1}])), "petrel/p-A/health")
    refused("structure", seal(cbor2.dumps([{-2: "p-A/health/", 0: "q"}])), "petrel/p-A/health")
    # a health record on the up topic is not readings
    refused("name", data, "petrel/p-A/up")


def test_forged_wrong_key_unknown_kid_and_alg():
    data = testmsg.up(KA, "p-A", 3, [("t", "Cel", 1, 1, T0, 1)])
    assert V.open("petrel/p-A/up", data).readings
    for i in range(len(data)):  # every byte flipped: never accepted, never a crash
        bad = bytearray(data)
        bad[i] ^= 0x20
        with pytest.raises(Rejected):
            V.open("petrel/p-A/up", bytes(bad))
    e = refused("mac", testmsg.up(KB, "p-A", 3, [("t", "Cel", 1, 1, T0, 1)]))  # B's key speaking as A
    assert e.device == "p-A"
    e = refused("unknown_kid", testmsg.up(KA, "p-C", 3, [("t", "Cel", 1, 1, T0, 1)]), "petrel/p-C/up")
    assert e.device is None  # an unknown device is counted without its name
    payload = testmsg.pack("p-A", [("t", "Cel", 1, 1, T0, 1)])
    refused("alg", testmsg.mac0(KA, "p-A", 3, payload, alg=4))  # the 64-bit tag only when asked for
    assert Verifier({"p-A": KA}, algs=(5, 4)).open("petrel/p-A/up", testmsg.mac0(KA, "p-A", 3, payload, alg=4))
    refused("alg", seal(payload, protected=cbor2.dumps({1: "HS256", -65537: 3})))
    refused("mac", seal(payload, tag=b"\x00" * 32))
    refused("mac", seal(payload, tag=b""))


def test_topic_must_be_the_kids_up_or_health():
    data = testmsg.up(KA, "p-A", 3, [("t", "Cel", 1, 1, T0, 1)])
    for topic in ("petrel/p-B/up", "petrel/p-A/status", "petrel/p-A", "other/p-A/up", "petrel/p-A/up/x",
                  "petrel//up", None, "petrel/" + "x" * 10000 + "/up"):
        refused("topic", data, topic)


def test_oversized_is_refused_unread():
    t = time.perf_counter()
    e = refused("oversized", b"\xff" * (MAX_MESSAGE + 1))
    assert "bytes" in str(e) and time.perf_counter() - t < 0.01
    with pytest.raises(Rejected, match="oversized"):
        Verifier({"p-A": KA}, max_message=100).open("petrel/p-A/up", testmsg.up(
            KA, "p-A", 1, [("t", "Cel", i, 1, T0 + i, i) for i in range(20)]))


def test_the_issues_fuzz_findings():
    payload = testmsg.pack("p-A", [("t", "Cel", 1, 1, T0, 1)])
    # an integer kid: once bytes(int), gigabytes; now a structure refusal at once
    refused("structure", bytes.fromhex("d1 84 40 a1 04 1b 00 00 00 ff ff ff ff ff 40 40".replace(" ", "")))
    refused("structure", seal(payload, unprotected={4: 1 << 62}))
    refused("structure", seal(payload, unprotected={4: "p-A"}))
    refused("structure", seal(payload, unprotected={4: b""}))
    refused("structure", seal(payload, unprotected={}))
    # a tag that is not a byte string: a refusal, not a TypeError
    for tag in ("x" * 32, 5, False, [b"a"], {1: 2}):
        refused("structure", seal(payload, tag=tag))
    # seq checked after the MAC: type and range
    for seq in ("5", -1, 1.0, 1e300, 1 << 63, True, None, b"\x05", [5]):
        e = refused("structure", seal(payload, seq=seq))
        assert e.device == "p-A"
    assert V.open("petrel/p-A/up", seal(payload, seq=(1 << 63) - 1)).seq == (1 << 63) - 1
    # lengths declared beyond the message, indefinite lengths, deep nesting, unknown tags
    for raw in ("d1 84 5b 7f ff ff ff ff ff ff ff", "d1 9b 00 00 00 01 00 00 00 00", "d1 bb 7f ff ff ff ff ff ff ff",
                "d1 84 5f 41 00 ff a0 40 40", "d1 " + "81 " * 5000 + "00", "d8 18 40", "c2 58 20" + " 01" * 32,
                "", "d1", "d1 84 40 a0 40 40 00", "f7", "d1 84 40 a0 40 5a 00 00 00 10"):
        refused("structure", bytes.fromhex(raw.replace(" ", "")))
    nested = {-2: "p-A/t", -3: T0, "i": 1, 2: 1, "x": [[[[[[[[1]]]]]]]]}
    refused("structure", seal(cbor2.dumps([nested])))


def test_garbage_is_refused_quickly():
    import random

    rng = random.Random(7)
    for n in range(500):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        if n % 2:
            data = b"\xd1\x84" + data
        with pytest.raises(Rejected) as e:
            V.open("petrel/p-A/up", data)
        assert e.value.reason in ("structure", "unknown_kid", "alg", "mac")


class _Counter:
    def __init__(self, n):
        self.n = n

    def next(self):
        self.n += 1
        return self.n


class _Clock:
    """The node's clock.senml_time(stamp, seq): Unix stamps dated, RTC stamps
    of this power-on as minus their age at now, the listed seqs undated."""

    def __init__(self, now, undated=()):
        self.now, self.undated = now, set(undated)

    def senml_time(self, stamp, seq=None):
        if seq in self.undated:
            return None
        return stamp if stamp >= 1 << 28 else stamp - self.now


@pytest.mark.parametrize("layout", ["compact", "named"])
def test_the_nodes_own_encoder_is_read_exactly(layout):
    """lib/uplink.py's encoder (on CPython) -> the verifier: every value, id,
    flag and time as the node measured it, widest values included."""
    from petrel import harness

    harness.install()
    import uplink

    ch = [("t", "Cel", 100), ("h", "%RH", 1024), ("p", "Pa", 1), ("v", "V", 1000)]
    values = [(2153, 46081, 100325, 3712), (-505, 2 ** 31 - 1, 0, -2 ** 31), (2150, 1024, 7, 3000)]
    seq = 0
    for kind, t0, clk in (("dated", T0, _Clock(0)), ("relative", 100, _Clock(1300)),
                          ("undated", 5000, _Clock(0, range(1000)))):
        recs, want = [], {}
        for i, row in enumerate(values):
            for c, m in enumerate(row):
                seq += 1
                flags = (0, 1, 2, 4, 5)[(seq * 3) % 5]
                recs.append((seq, t0 + 300 * i, uplink.pack_reading(c, m, flags)))
                exact = Decimal(m) / Decimal(ch[c][2])
                when = {"dated": t0 + 300 * i, "relative": T0 + (t0 + 300 * i - 1300), "undated": None}[kind]
                want[(ch[c][0], seq)] = (ch[c][1], exact, flags, when, kind)
        enc = uplink.encoder("p-A", ch, KA, _Counter(41), clk, layout=layout)
        m = V.open("petrel/p-A/up", enc(recs), received=T0)
        assert m.seq == 42
        got = dict(((r.channel, r.rid), (r.unit, Decimal(r.exact), r.flags, r.time, r.quality)) for r in m.readings)
        assert got == want, kind
        assert all(r.value == float(Decimal(r.exact)) for r in m.readings)


def test_a_topic_prefix_other_than_petrel():
    v = Verifier({"p-A": KA}, prefix="site/3")
    data = testmsg.up(KA, "p-A", 3, [("t", "Cel", 1, 1, T0, 1)])
    assert v.open("site/3/p-A/up", data).device == "p-A"
    for topic in ("petrel/p-A/up", "site/3/p-A", "site/p-A/up", "site/3/p-A/up/x"):
        with pytest.raises(Rejected, match="topic"):
            v.open(topic, data)
