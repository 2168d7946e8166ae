# lib/cbor: RFC 8949 vectors, shortest floats, and a decoder that refuses bad input.
import struct
from binascii import unhexlify

import cbor
import cbordec
from ptest import raises

# RFC 8949 appendix A: (value, preferred encoding)
VECTORS = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"),
    (100, "1864"), (1000, "1903e8"), (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"), (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"), (-1, "20"), (-10, "29"),
    (-100, "3863"), (-1000, "3903e7"),
    (0.0, "f90000"), (-0.0, "f98000"), (1.0, "f93c00"), (1.1, "fb3ff199999999999a"),
    (1.5, "f93e00"), (65504.0, "f97bff"), (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"), (1.0e300, "fb7e37e43c8800759c"),
    (5.960464477539063e-8, "f90001"), (0.00006103515625, "f90400"), (-4.0, "f9c400"),
    (-4.1, "fbc010666666666666"), (float("inf"), "f97c00"), (-float("inf"), "f9fc00"),
    (False, "f4"), (True, "f5"), (None, "f6"),
    (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"),
    ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), (["a", {"b": "c"}], "826161a161626163"),
    (cbor.Tag(1, 1363896240), "c11a514b67b0"),
    (cbor.Tag(23, b"\x01\x02\x03\x04"), "d74401020304"),
    (cbor.Tag(32, "http://www.example.com"),
     "d82076687474703a2f2f7777772e6578616d706c652e636f6d"),
]


def same(a, b):
    # equal, and -0.0 is not 0.0
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b and type(a) is type(b)


def test_rfc8949_vectors_encode_and_decode():
    for value, hexed in VECTORS:
        data = unhexlify(hexed)
        assert cbor.dumps(value) == data, (value, hexed)
        assert same(cbor.loads(data), value), (hexed, cbor.loads(data))


def test_maps_keep_the_given_key_order():
    m = cbor.Map([(1, 2), (3, 4)])
    assert cbor.dumps(m) == unhexlify("a201020304")
    m = cbor.Map([("b", [2, 3]), ("a", 1)])
    assert cbor.dumps(m) == unhexlify("a261628202036161" + "01")
    assert cbor.loads(unhexlify("a26161016162820203")) == {"a": 1, "b": [2, 3]}
    assert cbor.dumps({5: 6}) == unhexlify("a10506")


def test_rfc8949_longer_forms_decode():
    # not preferred, still well-formed
    for hexed, value in (("1800", 0), ("190001", 1), ("1a00000001", 1), ("1b0000000000000001", 1),
                         ("fa3fc00000", 1.5), ("fb3ff8000000000000", 1.5), ("f97e00", None),
                         ("fa7fc00000", None), ("fb7ff8000000000000", None),
                         ("3900ff", -256), ("5800", b""), ("780161", None)):
        v = cbor.loads(unhexlify(hexed))
        if hexed == "780161":
            assert v == "a"
        elif value is None:
            assert v != v  # NaN
        else:
            assert v == value, hexed


def test_ints_at_every_length_boundary_round_trip():
    for n in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1):
        for v in (n, -1 - n):
            data = cbor.dumps(v)
            assert cbor.loads(data) == v
    assert len(cbor.dumps(23)) == 1 and len(cbor.dumps(24)) == 2
    assert len(cbor.dumps(255)) == 2 and len(cbor.dumps(256)) == 3
    assert len(cbor.dumps(65535)) == 3 and len(cbor.dumps(65536)) == 5
    assert len(cbor.dumps(2**32 - 1)) == 5 and len(cbor.dumps(2**32)) == 9
    assert len(cbor.dumps(-24)) == 1 and len(cbor.dumps(-25)) == 2
    raises(ValueError, cbor.dumps, 2**64)
    raises(ValueError, cbor.dumps, -2**64 - 1)


def test_floats_take_the_shortest_exact_width():
    assert cbor.dumps(21.5)[0] == 0xF9
    assert cbor.dumps(21.53)[0] == 0xFB  # not a float32 either
    f32 = struct.unpack(">f", struct.pack(">f", 21.53))[0]
    assert cbor.dumps(f32)[0] == 0xFA and cbor.loads(cbor.dumps(f32)) == f32
    assert cbor.dumps(65520.0)[0] == 0xFA  # just past float16
    assert cbor.dumps(2.0 ** -24) == unhexlify("f90001")  # smallest float16 subnormal
    assert cbor.dumps(2.0 ** -15) == unhexlify("f90200")  # MicroPython's struct 'e' gets this wrong
    assert cbor.dumps(2.0 ** -25)[0] == 0xFA
    assert cbor.dumps(2.0 ** -149) == unhexlify("fa00000001")
    assert cbor.dumps(2.0 ** -150)[0] == 0xFB
    assert cbor.dumps(float("nan")) == unhexlify("f97e00")


def test_every_float16_round_trips_with_and_without_struct_e():
    saved = cbordec._HAS_E
    try:
        for has_e in (saved, False):
            cbordec._HAS_E = has_e
            for h in range(65536):
                data = b"\xf9" + struct.pack(">H", h)
                x = cbor.loads(data)
                if x != x:
                    assert (h >> 10) & 0x1F == 31 and h & 0x3FF
                    continue
                assert cbor.dumps(x) == data, (h, x)
    finally:
        cbordec._HAS_E = saved


def test_tags_nest_and_compare():
    t = cbor.Tag(17, [b"a", {}, cbor.Tag(24, b"\x01")])
    assert cbor.loads(cbor.dumps(t)) == t
    assert t != cbor.Tag(18, t.value) and t != [b"a"]
    assert repr(cbor.Tag(1, 2)) == "Tag(1, 2)"
    assert cbor.loads(cbor.dumps(cbor.Tag(2**64 - 1, 0))).tag == 2**64 - 1


def test_decimal_fractions_as_the_uplink_sends_them():
    # RFC 8949 section 3.4.4: tag 4 [exponent, mantissa]; 273.15 is the RFC's own example
    assert cbor.dumps(cbor.Tag(4, [-2, 27315])) == unhexlify("c48221196ab3")
    assert cbor.dumps(cbor.Tag(4, [-2, 2153])) == unhexlify("c48221190869")  # 21.53, format v2
    t = cbor.loads(unhexlify("c4822018d7"))
    assert t.tag == 4 and t.value == [-1, 215]
    assert cbor.loads(b"\xc4\x82" + (b"\x3b" + b"\xff" * 8) * 2).value == [-2 ** 64, -2 ** 64]


def test_decode_reads_a_sequence():
    data = cbor.dumps(1) + cbor.dumps("two") + cbor.dumps([3])
    v, i = cbor.decode(data)
    assert (v, i) == (1, 1)
    v, i = cbor.decode(data, i)
    assert v == "two"
    v, i = cbor.decode(data, i)
    assert v == [3] and i == len(data)
    assert cbor.loads(bytearray(b"\x83\x01\x02\x03")) == [1, 2, 3]
    assert cbor.loads(memoryview(b"\x43abc")) == b"abc"


def bad(hexed, word):
    e = raises(ValueError, cbor.loads, unhexlify(hexed))
    assert word in str(e), (hexed, str(e))


def test_decoder_refuses_malformed_input():
    bad("", "truncated")
    bad("18", "truncated")
    bad("1b00000000", "truncated")
    bad("f9", "truncated")
    bad("fa0000", "truncated")
    bad("fb00", "truncated")
    bad("0000", "trailing")
    bad("5f4100ff", "indefinite")
    bad("9f01ff", "indefinite")
    bad("bf0101ff", "indefinite")
    bad("7f6161ff", "indefinite")
    bad("1f", "malformed")
    bad("3f", "malformed")
    bad("df01", "malformed")
    bad("ff", "break")
    for major in range(8):
        for ai in (28, 29, 30):
            bad("%02x" % (major << 5 | ai) + "00" * 9, "reserved")
    bad("5bffffffffffffffff", "past the end")
    bad("7a7fffffff", "past the end")
    bad("9bffffffffffffffff", "past the end")
    bad("bbffffffffffffffff", "past the end")
    bad("84010203", "past the end")
    bad("a201", "past the end")
    bad("820118", "truncated")
    bad("a1010203", "trailing")
    bad("f7", "simple")  # undefined
    bad("f0", "simple")
    bad("f818", "simple")
    bad("f814", "simple")  # false in two bytes is not well-formed
    bad("a18000", "key")  # an array as a map key
    bad("a201000100", "duplicate")
    bad("62fffe", "UTF-8")
    bad("c1", "truncated")
    raises(ValueError, cbor.loads, "text")


def test_every_truncation_of_a_valid_item_is_refused():
    data = cbor.dumps(cbor.Tag(17, [b"\x01" * 30, cbor.Map([(1, -70000), ("k", [1.5, 1e300, 100000.0])]),
                                    "\u00fc" * 3, 2**40, None, True]))
    for n in range(len(data)):
        raises(ValueError, cbor.loads, data[:n])
    assert cbor.loads(data).tag == 17


def test_nesting_is_bounded_both_ways():
    ok = [0]
    for _ in range(cbor.MAX_DEPTH - 1):
        ok = [ok]
    assert cbor.loads(cbor.dumps(ok)) == ok
    deep = b"\x81" * 1000 + b"\x00"
    assert "nesting" in str(raises(ValueError, cbor.loads, deep))
    deep = b"\xc1" * 1000 + b"\x00"  # tags nest too
    raises(ValueError, cbor.loads, deep)
    deep = b"\xa1\x00" * 100 + b"\x00"
    raises(ValueError, cbor.loads, deep)
    cyc = []
    cyc.append(cyc)
    assert "nesting" in str(raises(ValueError, cbor.dumps, cyc))


def test_encoder_refuses_what_cbor_cannot_say():
    raises(ValueError, cbor.dumps, object())
    raises(ValueError, cbor.dumps, {1: set()})
    raises(ValueError, cbor.dumps, [1, 2j])
    raises(ValueError, cbor.dumps, cbor.Tag(-1, 0))


def test_random_bytes_never_crash_the_decoder():
    # a small deterministic fuzz (the host test does more)
    x = 12345
    for n in range(300):
        buf = bytearray()
        for _ in range(n % 24):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            buf.append(x >> 16 & 0xFF)
        try:
            cbor.loads(bytes(buf))
        except ValueError:
            pass
