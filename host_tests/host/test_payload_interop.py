"""The uplink payload against independent implementations: lib/cbor against
cbor2, SenML labels as RFC 8428 has them, lib/cose's COSE_Mac0 against pycose
and Python's own hmac; and the CBOR decoder fuzzed (ValueError only, no hang)."""

import hashlib
import hmac
import math
import random
import signal
import struct
import time
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

import cbor2
import pytest
from pycose.algorithms import HMAC256, HMAC25664
from pycose.headers import KID, Algorithm
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

import cbor
import cose
import senml

KEY = bytes(range(100, 132))
DEV = b"p-a1b2c3"
T0 = 1760000000
CHANNELS = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)]

INTS = []
for _n in (0, 1, 23, 24, 25, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1):
    INTS += [_n, -1 - _n]
FLOATS = [0.0, -0.0, 1.0, 1.5, -4.0, 65504.0, 65520.0, 2.0**-24, 2.0**-25, 2.0**-14, 2.0**-15,
          6.097555160522461e-05, 100000.0, 3.4028234663852886e38, 2.0**-149, 1e300, 1e-300,
          0.1, 21.53, -21.53, struct.unpack(">f", struct.pack(">f", 21.53))[0],
          math.inf, -math.inf]
SCALARS = INTS + FLOATS + [True, False, None, b"", b"\x00\xff" * 40, "", "a", "\u00fc\u6c34\U00010151",
                           "x" * 300, b"y" * 70000]


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b) or (a != a and b != b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, cbor.Tag) and isinstance(b, cbor.Tag):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b and type(a) is type(b)


def from_cbor2(x):
    """cbor2's decoded value in our shapes (tuples, frozendicts, CBORTag)."""
    if isinstance(x, cbor2.CBORTag):
        return cbor.Tag(x.tag, from_cbor2(x.value))
    if isinstance(x, (list, tuple)):
        return [from_cbor2(v) for v in x]
    if isinstance(x, Mapping):  # cbor2's frozendict is not a dict
        return {k: from_cbor2(v) for k, v in x.items()}
    return x


def to_cbor2(x):
    if isinstance(x, cbor.Tag):
        return cbor2.CBORTag(x.tag, to_cbor2(x.value))
    if isinstance(x, list):
        return [to_cbor2(v) for v in x]
    if isinstance(x, dict):
        return {k: to_cbor2(v) for k, v in x.items()}
    return x


# ------------------------------------------------------------------ CBOR
@pytest.mark.parametrize("value", SCALARS + [float("nan")])
def test_scalars_match_cbor2_both_ways(value):
    ours = cbor.dumps(value)
    assert ours == cbor2.dumps(value, canonical=True)  # preferred serialisation, same bytes
    assert same(cbor2.loads(ours), value)
    for theirs in (cbor2.dumps(value), cbor2.dumps(value, canonical=True)):
        assert same(cbor.loads(theirs), value)


def test_float_widths_are_the_shortest_exact():
    for x in FLOATS:
        data = cbor.dumps(x)
        width = {0xF9: 2, 0xFA: 4, 0xFB: 8}[data[0]]
        if width > 2:
            try:
                assert struct.unpack(">e", struct.pack(">e", x))[0] != x
            except OverflowError:
                pass
        if width > 4:
            try:
                assert struct.unpack(">f", struct.pack(">f", x))[0] != x
            except OverflowError:
                pass


def test_every_float16_and_random_float32_64_agree_with_cbor2():
    for h in range(65536):
        data = b"\xf9" + struct.pack(">H", h)
        assert same(cbor.loads(data), cbor2.loads(data)), h
    rnd = random.Random(4)
    for _ in range(3000):
        for fmt, head in ((">f", b"\xfa"), (">d", b"\xfb")):
            raw = bytes(rnd.getrandbits(8) for _ in range(struct.calcsize(fmt)))
            x = struct.unpack(fmt, raw)[0]
            assert same(cbor.loads(head + raw), cbor2.loads(head + raw))
            if x == x:
                assert cbor.dumps(x) == cbor2.dumps(x, canonical=True)


def random_value(rnd, depth=0):
    kind = rnd.randrange(9 if depth < 5 else 5)
    if kind == 0:
        n = rnd.choice(INTS) + rnd.choice((0, 0, 1, -1))
        return max(-2**64, min(2**64 - 1, n))
    if kind == 1:
        return rnd.choice(FLOATS + [rnd.uniform(-1e6, 1e6), float(rnd.randrange(-70000, 70000)) / 4])
    if kind == 2:
        return bytes(rnd.getrandbits(8) for _ in range(rnd.choice((0, 1, 23, 24, 300))))
    if kind == 3:
        return "".join(rnd.choice("aZ\u00fc\u6c34\U00010151") for _ in range(rnd.choice((0, 5, 30))))
    if kind == 4:
        return rnd.choice((True, False, None))
    if kind in (5, 6):
        return [random_value(rnd, depth + 1) for _ in range(rnd.choice((0, 1, 3, 24)))]
    if kind == 7:
        return {rnd.choice((rnd.randrange(-30, 30), "k%d" % rnd.randrange(30), b"b%d" % rnd.randrange(9))):
                random_value(rnd, depth + 1) for _ in range(rnd.randrange(5))}
    return cbor.Tag(rnd.choice((17, 24, 1000, 2**40)), random_value(rnd, depth + 1))


def test_nested_values_match_cbor2_both_ways():
    rnd = random.Random(7)
    for _ in range(500):
        v = random_value(rnd)
        ours = cbor.dumps(v)
        assert same(from_cbor2(cbor2.loads(ours)), v)
        theirs = cbor2.dumps(to_cbor2(v))
        assert same(cbor.loads(theirs), v)
        assert same(cbor.loads(ours), cbor.loads(theirs))


def test_decoder_agrees_with_cbor2_on_what_it_accepts():
    # differential: whatever we accept, cbor2 reads the same (we are stricter:
    # no indefinite lengths, no duplicate keys, no undefined)
    rnd = random.Random(11)
    seeds = [cbor.dumps(random_value(rnd)) for _ in range(200)]
    accepted = 0
    for _ in range(3000):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 4)):
            if data:
                data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        try:
            ours = cbor.loads(bytes(data))
        except ValueError:
            continue
        accepted += 1
        if b"\xc0" <= bytes(data[:1]) <= b"\xdb" or _has_tag(ours):
            continue  # cbor2 gives semantic tags (dates, bignums) their own types
        assert same(from_cbor2(cbor2.loads(bytes(data))), ours), bytes(data).hex()
    assert accepted > 100


def _has_tag(x):
    if isinstance(x, cbor.Tag):
        return True
    if isinstance(x, list):
        return any(_has_tag(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tag(v) for v in x.values())
    return False


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def test_fuzzed_input_only_ever_raises_value_error():
    rnd = random.Random(2024)
    seeds = [cbor.dumps(random_value(rnd)) for _ in range(100)]
    seeds.append(cose.mac0(KEY, DEV, 99, batch().cbor()))
    seeds.append(batch().cbor())
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)  # a hang fails the test instead of the run
    start = time.monotonic()
    try:
        for i in range(10000):
            if i % 3 == 0:
                data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(40)))
            else:
                data = bytearray(rnd.choice(seeds))
                for _ in range(rnd.randrange(1, 6)):
                    op = rnd.randrange(4)
                    if op == 0 and data:
                        data[rnd.randrange(len(data))] = rnd.getrandbits(8)
                    elif op == 1 and data:
                        del data[rnd.randrange(len(data)):]
                    elif op == 2:
                        data.insert(rnd.randrange(len(data) + 1), rnd.choice((0x1B, 0x5B, 0x9B, 0xBB,
                                                                            0x9F, 0xFF, 0x81, 0xD1)))
                    elif data:
                        j = rnd.randrange(len(data))
                        data[j] ^= 1 << rnd.randrange(8)
                data = bytes(data)
            for fn in (cbor.loads, senml.decode_cbor, lambda d: cose.verify(KEY, d)):
                try:
                    fn(data)
                except ValueError:
                    pass
    except _Hang:
        pytest.fail("the decoder hung")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - start < 5


def test_pathological_headers_are_refused_fast():
    start = time.monotonic()
    for data in (b"\x9b" + b"\xff" * 8, b"\xbb" + b"\xff" * 8, b"\x5b" + b"\xff" * 8,
                 b"\x81" * 100000, b"\xd8\xff" * 50000, b"\x9a\x7f\xff\xff\xff" + b"\x00" * 100):
        with pytest.raises(ValueError):
            cbor.loads(data)
    assert time.monotonic() - start < 1


# ------------------------------------------------------------------ SenML
def batch():
    p = senml.Pack("p-a1b2c3/", CHANNELS)
    rnd = random.Random(5)
    for i in range(12):
        p.add(0, rnd.randint(1500, 2500), T0 + 300 * i, rnd.choice((0, 0, 0, 1, 2, 4)), 70000 + 3 * i)
        p.add(1, rnd.randint(3000, 6000), T0 + 300 * i, 0, 70001 + 3 * i)
        p.add(2, rnd.randint(98000, 103000), T0 + 300 * i, 0, 70002 + 3 * i)
    return p


def test_senml_cbor_read_by_cbor2_has_rfc8428_labels():
    p = batch()
    recs = cbor2.loads(p.cbor())
    assert len(recs) == 36
    assert recs[0][-2] == "p-a1b2c3/t" and recs[0][-3] == T0 and recs[0][-4] == "Cel"  # bn bt bu
    assert recs[0]["i"] == 70000 and recs[1]["is"] == 3 and set(recs[2]) - {"flags"} == {2, 6}  # v, t
    assert recs[12][-2] == "p-a1b2c3/h" and recs[12][-4] == "%RH"
    # resolve by hand, the RFC 8428 way, and compare with the readings: exact values
    bn, bt, bu = "", 0, None
    out = []
    for r in recs:
        bn, bt, bu = r.get(-2, bn), r.get(-3, bt), r.get(-4, bu)
        out.append((bn + r.get(0, ""), r.get(1, bu), r[2], bt + r.get(6, 0), r.get("flags", 0)))
    order = [c[0] for c in CHANNELS]
    want = sorted(p.readings, key=lambda r: (order.index(r[0]), r[4]))
    for (name, unit, v, scale, t, flags, _id), got in zip(want, out):
        assert got[0] == "p-a1b2c3/" + name and got[1] == unit and got[3] == t and got[4] == flags
        assert isinstance(got[2], (int, Decimal)) and got[2] == Decimal(v) / Decimal(scale)
    recs = cbor2.loads(p.cbor(layout="named"))
    assert recs[0][-2] == "p-a1b2c3/" and recs[0][0] == "t" and recs[13][0] == "h"


@pytest.mark.parametrize("scale", [1, 2, 4, 5, 8, 10, 16, 20, 25, 100, 1000, 1024, 8192, 5 ** 9])
def test_decimal_fractions_read_by_cbor2_are_exactly_the_measured_value(scale):
    rnd = random.Random(scale)
    for v in [0, 1, -1, 2 ** 31 - 1, -2 ** 31] + [rnd.randint(-2 ** 31, 2 ** 31 - 1) for _ in range(300)]:
        data = cbor.dumps(senml.value(v, scale))
        got = cbor2.loads(data)
        assert Fraction(got) == Fraction(v, scale), (v, scale, got)
        if v % scale:
            assert data[0] == 0xC4 and isinstance(got, Decimal) and got.as_tuple().digits[-1] != 0
            assert cbor2.dumps(got) == data  # cbor2 writes the same decimal fraction back
        else:
            assert isinstance(got, int)


def test_a_pack_is_deterministic_cbor():
    for layout in ("compact", "named"):
        data = batch().cbor(layout)
        assert cbor2.dumps(cbor2.loads(data), canonical=True) == data


def test_senml_json_keys_are_rfc8428():
    import json
    text = batch().json()
    recs = json.loads(text, parse_float=Decimal)
    assert recs[0] == {"bn": "p-a1b2c3/t", "bt": T0, "bu": "Cel", "v": recs[0]["v"], "i": 70000}
    assert set(recs[2]) - {"flags"} == {"v", "t"}
    assert [r["v"] for r in recs] == [r[2] for r in cbor2.loads(batch().cbor())]  # the same numbers
    p = senml.Pack("d/", CHANNELS)
    p.add(0, 2153, -3600)
    rel = json.loads(p.json())
    assert "bt" not in rel[0] and rel[0]["t"] == -3600


def uplink_bytes(cose_len, topic="petrel/p-a1b2c3/up"):
    """COSE message in an MQTT 3.1.1 PUBLISH (QoS 1) in one TLS 1.2 AES-GCM record."""
    body = 2 + len(topic) + 2 + cose_len  # topic length, topic, packet id, payload
    rl = 1 if body < 128 else 2 if body < 16384 else 3
    return 5 + 8 + 16 + 1 + rl + body  # TLS header, explicit nonce, GCM tag


def test_bytes_a_reading_everything_included():
    # samples of 3 channels every 300 s, ids from the outbox: 60 readings fit 16 bytes a
    # reading (14.7 measured); 36 (the default hourly uplink) 16.7 with the full tag,
    # 16.0 with the short one: ids (0.7) and exact values (0.5) cost 1.2 more than format v1
    for n, budget in ((60, 16), (36, 17)):
        p = senml.Pack("p-a1b2c3/", CHANNELS)
        for k in range(n):
            i = k // 3
            p.add(k % 3, (2153 + 7 * i, 4512 - 13 * i, 100325 + i)[k % 3], T0 + 300 * i, 0, 2 ** 24 + k)
        for alg in (cose.HMAC_256_256, cose.HMAC_256_64):
            msg = cose.mac0(KEY, DEV, 2**20, p.cbor(), alg=alg)
            assert uplink_bytes(len(msg)) <= budget * n, (n, alg, len(msg), uplink_bytes(len(msg)))


# ------------------------------------------------------------------ COSE
def mac_structure(protected, payload, aad=b""):
    return cbor2.dumps(["MAC0", protected, aad, payload])


def pycose_msg(data):
    # pycose 1.1 cannot decode with cbor2 6 (tagged arrays come back as tuples,
    # maps as frozendicts): decode here, hand it the COSE_Mac0 array
    tag = cbor2.loads(data)
    assert tag.tag == 17
    p, u, payload, t = tag.value
    msg = Mac0Message.from_cose_obj([p, dict(u), payload, t], True)
    msg.key = SymmetricKey(k=KEY)
    return msg


def pycose_ok(data):
    try:
        return pycose_msg(data).verify_tag()
    except Exception:
        return False


@pytest.mark.parametrize("alg,pyalg,n", [(5, HMAC256, 32), (4, HMAC25664, 8)])
def test_our_mac0_verifies_in_pycose_and_with_python_hmac(alg, pyalg, n):
    payload = batch().cbor()
    data = cose.mac0(KEY, DEV, 4242, payload, alg=alg)
    msg = pycose_msg(data)
    assert msg.verify_tag()
    assert msg.phdr[Algorithm] is pyalg and msg.phdr[-65537] == 4242
    assert msg.uhdr[KID] == DEV and msg.payload == payload
    p, u, pl, t = cbor2.loads(data).value
    assert cbor2.loads(p) == {1: alg, -65537: 4242} and dict(u) == {4: DEV}
    assert t == hmac.new(KEY, mac_structure(p, pl), hashlib.sha256).digest()[:n]


def test_tampering_fails_in_pycose_too():
    payload = batch().cbor()
    data = cose.mac0(KEY, DEV, 4242, payload)
    p, u, pl, t = cbor2.loads(data).value
    u = dict(u)

    def build(p, pl, t):
        return cbor2.dumps(cbor2.CBORTag(17, [p, u, pl, t]))

    other_seq = cbor2.dumps({1: 5, -65537: 4243})
    assert len(other_seq) == len(p)
    flipped = bytearray(pl)
    flipped[100] ^= 1
    bad_tag = bytes([t[0] ^ 0x80]) + t[1:]
    for bad in (build(p, bytes(flipped), t), build(other_seq, pl, t), build(p, pl, bad_tag),
                build(p, pl, t[:-1]), build(cbor2.dumps({1: 4, -65537: 4242}), pl, t[:8])):
        assert not pycose_ok(bad)
        with pytest.raises(ValueError):
            cose.verify(KEY, bad, algs=(5, 4))
    assert pycose_ok(build(p, pl, t)) and cose.verify(KEY, build(p, pl, t))[1] == 4242


@pytest.mark.parametrize("pyalg", [HMAC256, HMAC25664])
def test_pycose_mac0_verifies_with_ours(pyalg):
    msg = Mac0Message(phdr={Algorithm: pyalg, -65537: 77}, uhdr={KID: DEV}, payload=b"\x80",
                      key=SymmetricKey(k=KEY))
    data = msg.encode()
    assert cose.verify(KEY, data, algs=(5, 4)) == (DEV, 77, b"\x80")
    with pytest.raises(ValueError):
        cose.verify(KEY[::-1], data, algs=(5, 4))
