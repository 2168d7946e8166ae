# lib/cose: HMAC-SHA256 against RFC 4231, COSE_Mac0 structure, and refusals.
from binascii import hexlify, unhexlify

import cbor
import cose
from ptest import raises

KEY = bytes(range(32))
KID = b"p-a1b2c3"

# RFC 4231 section 4: (key, data, HMAC-SHA-256)
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def test_hmac_sha256_matches_rfc4231():
    for key, data, mac in RFC4231:
        assert hexlify(cose.hmac_sha256(key, data)).decode() == mac
    # test case 5: truncated to 128 bits
    assert cose.hmac_sha256(b"\x0c" * 20, b"Test With Truncation")[:16] == unhexlify(
        "a3b6167473100ee06e0c796c2955552b")


def test_constant_time_equal():
    assert cose.equal(b"abc", b"abc") and cose.equal(b"", b"")
    assert not cose.equal(b"abc", b"abd") and not cose.equal(b"abc", b"ab")


def test_mac0_layout_is_the_rfc9052_structure():
    msg = cose.mac0(KEY, KID, 1000, b"payload")
    protected = unhexlify("a201053a000100001903e8")  # {1: 5, -65537: 1000}
    head = unhexlify("d184") + b"\x4b" + protected + b"\xa1\x04\x48" + KID + b"\x47payload\x58\x20"
    assert msg[:len(head)] == head and len(msg) == len(head) + 32
    to_mac = b"\x84\x64MAC0\x4b" + protected + b"\x40\x47payload"
    assert msg[-32:] == cose.hmac_sha256(KEY, to_mac)


def test_round_trip_and_short_tag():
    for alg, n in ((cose.HMAC_256_256, 32), (cose.HMAC_256_64, 8)):
        msg = cose.mac0(KEY, KID, 7, b"\x80", alg=alg)
        assert cose.verify(KEY, msg, b"", (5, 4)) == (KID, 7, b"\x80")
        assert len(cbor.loads(msg).value[3]) == n
    # 24 bytes of tag and one of its length
    assert len(cose.mac0(KEY, KID, 7, b"")) - len(cose.mac0(KEY, KID, 7, b"", alg=4)) == 25


def test_big_sequence_numbers():
    for seq in (0, 23, 24, 2 ** 32, 2 ** 64 - 1):
        assert cose.verify(KEY, cose.mac0(KEY, KID, seq, b"x"))[1] == seq
    raises(ValueError, cose.mac0, KEY, KID, -1, b"x")
    raises(ValueError, cose.mac0, KEY, KID, True, b"x")


def test_every_bit_flip_is_caught():
    msg = cose.mac0(KEY, KID, 300, b"\x81\xa1\x02\x18\x2a", alg=cose.HMAC_256_64)
    for i in range(len(msg)):
        for bit in range(8):
            bad = bytearray(msg)
            bad[i] ^= 1 << bit
            try:
                kid, seq, payload = cose.verify(KEY, bytes(bad), b"", (4, 5))
            except ValueError:
                continue
            # only the kid is outside the MAC: a changed kid picks another key
            assert (seq, payload) == (300, b"\x81\xa1\x02\x18\x2a") and kid != KID, (i, bit)


def test_wrong_key_aad_alg_are_refused():
    msg = cose.mac0(KEY, KID, 1, b"p", aad=b"topic")
    assert cose.verify(KEY, msg, aad=b"topic")[2] == b"p"
    raises(ValueError, cose.verify, KEY, msg)
    raises(ValueError, cose.verify, KEY[:-1] + b"\x00", msg, b"topic")
    short = cose.mac0(KEY, KID, 1, b"p", alg=cose.HMAC_256_64)
    e = raises(ValueError, cose.verify, KEY, short)  # the short tag only when asked
    assert "alg" in str(e)
    assert cose.verify(KEY, short, b"", (cose.HMAC_256_64,))[1] == 1
    full = cose.mac0(KEY, KID, 1, b"p")
    raises(ValueError, cose.verify, KEY, full, b"", (cose.HMAC_256_64,))
    raises(ValueError, cose.mac0, KEY, KID, 1, b"p", 6)
    raises(ValueError, cose.mac0, KEY, KID, 1, b"p", [5])
    raises(ValueError, cose.mac0, b"", KID, 1, b"p")
    raises(ValueError, cose.mac0, KEY, "p-a1b2c3", 1, b"p")
    raises(ValueError, cose.mac0, KEY, KID, 1, "p")
    raises(ValueError, cose.verify, b"", msg)


def forged(protected, unprotected, payload=b"p", tag=None, cbor_tag=17):
    if tag is None:
        tag = cose.hmac_sha256(KEY, cbor.dumps(["MAC0", protected, b"", payload]))
    return cbor.dumps(cbor.Tag(cbor_tag, [protected, unprotected, payload, tag]))


def test_bad_structures_are_refused():
    good_p = cbor.dumps(cbor.Map([(1, 5), (-65537, 1)]))
    assert cose.verify(KEY, forged(good_p, {4: KID}))[1] == 1
    # untagged is accepted (the context says what it is), another tag is not
    assert cose.verify(KEY, cbor.dumps(cbor.loads(forged(good_p, {4: KID})).value))[1] == 1
    for data in (
        forged(good_p, {4: KID}, cbor_tag=18),
        forged(good_p, {}),  # no kid
        forged(good_p, {4: "text"}),
        forged(cbor.dumps({1: 5}), {4: KID}),  # no seq
        forged(cbor.dumps(cbor.Map([(1, 5), (-65537, -3)])), {4: KID}),
        forged(cbor.dumps(cbor.Map([(1, 5), (-65537, True)])), {4: KID}),
        forged(cbor.dumps({-65537: 1}), {4: KID}),  # no alg
        forged(cbor.dumps(cbor.Map([(1, [5]), (-65537, 1)])), {4: KID}),
        forged(cbor.dumps(cbor.Map([(1, 7), (-65537, 1)])), {4: KID}),
        forged(cbor.dumps([1, 5]), {4: KID}),
        forged(b"\xa1\x01", {4: KID}),  # protected is not CBOR
        forged(b"", {4: KID}),
        forged(good_p, {4: KID, 1: 5}),  # a header both protected and not
        forged(good_p, {4: KID}, payload="p"),
        forged(good_p, {4: KID}, tag=b""),
        forged(good_p, [4, KID]),
        cbor.dumps(cbor.Tag(17, [good_p, {4: KID}, b"p"])),
        cbor.dumps(cbor.Tag(17, {})),
        cbor.dumps(17),
        b"",
        b"\xd1",
        forged(good_p, {4: KID}) + b"\x00",
    ):
        raises(ValueError, cose.verify, KEY, data)
