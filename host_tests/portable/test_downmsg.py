# downmsg: the downlink's messages opened on the node. Sealed here with the
# node's own COSE and AES (the fleet side's independent sealing is checked
# against this module in host_tests/host/test_downlink_node.py): keys, each
# kind, and every refusal by its reason; nothing in a message raises anything
# but Refused.
import os

import cbor
import cose
import downmsg
from ptest import raises

HMAC = bytes(range(32))
KID = b"p-a1b2c3"


def seal(kind, body, version=7, k_mac=None, aad_kind=None):
    k_mac = k_mac or downmsg.keys(HMAC)[0]
    return cose.mac0(k_mac, KID, version, cbor.dumps(body), aad=b"petrel down " + (aad_kind or kind).encode())


def encrypt(k_enc, plain, iv=None, pad=True):
    import cryptolib

    iv = iv or os.urandom(16)
    if pad:
        n = 16 - len(plain) % 16
        plain = plain + bytes((n,)) * n
    return iv, cryptolib.aes(k_enc, 2, iv).encrypt(plain)


def refused(reason, fn, *args):
    e = raises(downmsg.Refused, fn, *args)
    assert e.args[0] == reason, e.args


def test_keys_are_distinct_from_the_uplink_key_and_each_other():
    k_mac, k_enc = downmsg.keys(HMAC)
    assert len(k_mac) == len(k_enc) == 32
    assert len({HMAC, k_mac, k_enc}) == 3
    # the derivation the fleet side follows (README): HMAC-SHA256 chains
    root = cose.hmac_sha256(HMAC, b"petrel downlink key")
    assert k_mac == cose.hmac_sha256(root, b"petrel down mac")
    assert k_enc == cose.hmac_sha256(root, b"petrel down enc")
    # a provisioned down_key is the root instead
    own = bytes(32)
    assert downmsg.keys(HMAC, own)[0] == cose.hmac_sha256(own, b"petrel down mac") != k_mac


def test_each_kind_opens():
    k_mac, k_enc = downmsg.keys(HMAC)
    v, body = downmsg.open_message("config", seal("config", {"k": "config", "cfg": b'{"format": 1}'}, 9), k_mac, KID)
    assert v == 9 and downmsg.config_text(body) == '{"format": 1}'
    v, body = downmsg.open_message("hold", seal("hold", {"k": "hold", "min": 15, "exp": 1800000000}), k_mac, KID)
    assert downmsg.hold(body) == (15, 1800000000)
    v, body = downmsg.open_message("time", seal("time", {"k": "time", "t": 1767225600123, "n": 42}), k_mac, KID)
    assert downmsg.time_answer(body) == (1767225600123, 42)
    iv, ct = encrypt(k_enc, b'{"wifi_psk": "00112233445566778899aabbccddeeff"}')
    v, body = downmsg.open_message("secrets", seal("secrets", {"k": "secrets", "iv": iv, "ct": ct}), k_mac, KID)
    assert downmsg.secrets(body, k_enc) == {"wifi_psk": "00112233445566778899aabbccddeeff"}


def test_forged_messages_are_refused_as_forged():
    k_mac, _ = downmsg.keys(HMAC)
    body = {"k": "hold", "min": 5, "exp": 1800000000}
    refused("forged", downmsg.open_message, "hold", seal("hold", body, k_mac=bytes(32)), k_mac, KID)
    # the uplink key itself does not make a downlink message
    refused("forged", downmsg.open_message, "hold", seal("hold", body, k_mac=HMAC), k_mac, KID)
    # one byte of the payload changed
    msg = bytearray(seal("hold", body))
    msg[-40] ^= 1
    refused("forged", downmsg.open_message, "hold", bytes(msg), k_mac, KID)
    # a message of another kind, published on this kind's topic: its aad differs
    refused("forged", downmsg.open_message, "config", seal("hold", body), k_mac, KID)
    # a short tag (alg 4) is not accepted
    short = cose.mac0(k_mac, KID, 7, cbor.dumps(body), alg=cose.HMAC_256_64, aad=b"petrel down hold")
    refused("forged", downmsg.open_message, "hold", short, k_mac, KID)


def test_malformed_and_oversized_are_refused_by_their_reason():
    k_mac, k_enc = downmsg.keys(HMAC)
    refused("oversized", downmsg.open_message, "config", b"\0" * (downmsg.MAX_MESSAGE + 1), k_mac, KID)
    refused("malformed", downmsg.open_message, "config", b"\xd1\x84", k_mac, KID)
    refused("malformed", downmsg.open_message, "config", b"not cbor at all", k_mac, KID)
    refused("malformed", downmsg.open_message, "nope", seal("hold", {"k": "hold"}), k_mac, KID)
    # well MACed, but the body says another kind, or is not a map
    refused("malformed", downmsg.open_message, "hold", seal("hold", {"k": "config", "cfg": b"{}"}), k_mac, KID)
    refused("malformed", downmsg.open_message, "hold", seal("hold", [1, 2]), k_mac, KID)
    # another device's kid with our key (a copy of our message re-labelled)
    other = cose.mac0(k_mac, b"p-ffffff", 7, cbor.dumps({"k": "hold"}), aad=b"petrel down hold")
    refused("malformed", downmsg.open_message, "hold", other, k_mac, KID)
    # fields of the wrong type, or out of range
    refused("malformed", downmsg.hold, {"k": "hold", "min": "5", "exp": 1})
    refused("malformed", downmsg.hold, {"k": "hold", "min": True, "exp": 1})
    refused("invalid", downmsg.hold, {"k": "hold", "min": 0, "exp": 1})
    refused("invalid", downmsg.hold, {"k": "hold", "min": downmsg.MAX_HOLD_MIN + 1, "exp": 1})
    refused("malformed", downmsg.time_answer, {"k": "time", "t": 1.5, "n": 1})
    refused("oversized", downmsg.config_text, {"k": "config", "cfg": b" " * (downmsg.MAX_CONFIG + 1)})
    refused("malformed", downmsg.config_text, {"k": "config", "cfg": b"\xff\xfe"})
    refused("malformed", downmsg.config_text, {"k": "config", "cfg": "text, not bytes"})


def test_secrets_that_do_not_decrypt_to_an_object_are_refused():
    _, k_enc = downmsg.keys(HMAC)
    iv, ct = encrypt(k_enc, b"x" * 32, pad=False)  # last byte 'x': no PKCS#7 padding
    refused("malformed", downmsg.secrets, {"iv": iv, "ct": ct}, k_enc)
    iv, ct = encrypt(k_enc, b"not json")
    refused("malformed", downmsg.secrets, {"iv": iv, "ct": ct}, k_enc)
    iv, ct = encrypt(k_enc, b"[1, 2]")
    refused("malformed", downmsg.secrets, {"iv": iv, "ct": ct}, k_enc)
    refused("malformed", downmsg.secrets, {"iv": b"short", "ct": ct}, k_enc)
    refused("malformed", downmsg.secrets, {"iv": iv, "ct": ct[:-1]}, k_enc)
    # the wrong key decrypts to noise: refused, never taken as secrets
    iv, ct = encrypt(bytes(32), b'{"wifi_psk": "00112233445566778899aabbccddeeff"}')
    try:
        got = downmsg.secrets({"iv": iv, "ct": ct}, k_enc)
    except downmsg.Refused as e:
        assert e.args[0] == "malformed"
    else:
        raise AssertionError("noise taken as secrets: %r" % (got,))


def test_mutated_messages_raise_only_refused():
    # a slice of what make fuzz does to the node: every byte position of a
    # valid message changed, truncated at every length
    k_mac, k_enc = downmsg.keys(HMAC)
    iv, ct = encrypt(k_enc, b'{"psk_key": "00112233445566778899aabbccddeeff"}')
    good = seal("secrets", {"k": "secrets", "iv": iv, "ct": ct})
    n = 0
    for i in range(len(good)):
        for m in (bytes(good[:i]), good[:i] + bytes((good[i] ^ 0xFF,)) + good[i + 1:]):
            try:
                v, body = downmsg.open_message("secrets", m, k_mac, KID)
                downmsg.secrets(body, k_enc)
            except downmsg.Refused:
                n += 1
    assert n == 2 * len(good)  # every one refused (each breaks the MAC or the structure)


def test_a_message_the_client_read_past_is_oversized():
    # mqtt_keepalive.skip notes a PUBLISH past max_packet as (topic, None, retained)
    k_mac, _ = downmsg.keys(HMAC)
    refused("oversized", downmsg.open_message, "config", None, k_mac, KID)


def update_body(**over):
    body = {"k": "update", "t": "app", "v": 7, "n": "0.7.0", "z": 70000, "h": bytes(range(32)), "c": 2048,
            "f": bytes(32), "p": "petrel/update/0001020304050607"}
    body.update(over)
    return body


def test_an_update_manifest_opens_and_is_read_field_by_field():
    k_mac = downmsg.keys(HMAC)[0]
    assert downmsg.KINDS.index("update") == 4  # appended: the other kinds keep their places
    v, body = downmsg.open_message("update", seal("update", update_body()), k_mac, KID)
    m = downmsg.update_manifest(body)
    assert (v, m.t, m.v, m.n, m.z, m.c, m.p) == (7, "app", 7, "0.7.0", 70000, 2048, "petrel/update/0001020304050607")
    assert m.h == bytes(range(32)) and m.f == bytes(32) and m.chunks() == 35
    m = downmsg.update_manifest(update_body(t="fw", z=1500000, c=1024))
    assert m.chunks() == 1465
    # a manifest sealed for another kind, or another kind's message on the update topic: forged
    refused("forged", downmsg.open_message, "update", seal("update", update_body(), aad_kind="config"), k_mac, KID)
    refused("malformed", downmsg.open_message, "update", seal("update", {"k": "config"}), k_mac, KID)


def test_update_manifest_fields_out_of_their_range_are_invalid_and_of_the_wrong_type_malformed():
    for reason, over in (
            ("invalid", {"t": "os"}), ("invalid", {"v": 0}), ("invalid", {"v": 1 << 32}),
            ("invalid", {"n": "x" * 33}), ("invalid", {"n": "é" * 17}),  # 34 bytes
            ("invalid", {"z": 0}), ("invalid", {"z": 262145}), ("invalid", {"t": "fw", "z": 2000001}),
            ("invalid", {"c": 511}), ("invalid", {"c": 3585}), ("invalid", {"t": "fw", "c": 4096}),
            ("invalid", {"t": "fw", "c": 1536}), ("invalid", {"p": ""}), ("invalid", {"p": "a/+/b"}),
            ("invalid", {"p": "a/#"}), ("invalid", {"p": "/a"}), ("invalid", {"p": "a/"}),
            ("invalid", {"p": "a//b"}), ("invalid", {"p": "a\x00b"}), ("invalid", {"p": "x" * 65}),
            ("malformed", {"h": bytes(31)}), ("malformed", {"f": bytes(33)}), ("malformed", {"v": "7"}),
            ("malformed", {"v": True}), ("malformed", {"z": None}), ("malformed", {"n": b"0.7"}),
            ("malformed", {"t": None}), ("malformed", {"p": 5}), ("malformed", {"c": 2048.0})):
        refused(reason, downmsg.update_manifest, update_body(**over))
    body = update_body()
    del body["f"]
    refused("malformed", downmsg.update_manifest, body)
    assert downmsg.update_manifest(update_body(t="fw", z=2000000, c=512)).z == 2000000
    assert downmsg.update_manifest(update_body(z=262144, c=3584, n="x" * 32, p="y" * 64)).c == 3584


def test_an_update_manifest_whose_chunks_would_land_on_the_nodes_own_downlink_is_invalid():
    # chunk i is on p + "/" + i: under <topic>/down/ it would reach the
    # mailbox as a downlink kind (and the broker queue it for the node)
    down = "petrel/p-a1b2c3/down/"
    for p in ("petrel/p-a1b2c3/down", "petrel/p-a1b2c3/down/update", "petrel/p-a1b2c3/down/x/y"):
        refused("invalid", downmsg.update_manifest, update_body(p=p), down)
    for p in ("petrel/p-a1b2c3", "petrel/p-a1b2c3/downs", "petrel/p-a1b2c4/down", "petrel/update/0001"):
        assert downmsg.update_manifest(update_body(p=p), down).p == p
    assert downmsg.update_manifest(update_body(p="petrel/p-a1b2c3/down")).p  # no node given: not checked
