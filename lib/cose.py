"""COSE_Mac0 (RFC 9052 section 6.2) with HMAC-SHA256: the uplink's integrity.

    msg = mac0(key, b"p-a1b2c3", seq, payload)        # tag 17 [prot, unprot, payload, tag]
    kid, seq, payload = verify(key, msg)              # or ValueError

    protected   = bstr .cbor {1 (alg): 5, -65537 (seq): seq}
    unprotected = {4 (kid): kid}
    tag         = HMAC-SHA256(key, ["MAC0", protected, external_aad, payload])

The sequence number sits in the protected header so the MAC covers it: the
receiver rejects a seq it has seen (replay) or one older than its window;
that bookkeeping is the collector's, per kid. Its label is the first of
COSE's private-use range (< -65536). alg=HMAC_256_64 (4) truncates the tag
to 8 bytes, saving 25 bytes a message for a 2**-64 forgery chance per try.
verify() accepts only the full tag unless given algs=(5, 4): a verifier
that accepts the short tag gives every message that 2**-64 chance, whatever
alg its sender used. The kid is not MACed (RFC 9052): it only picks the key.

HMAC is written here on hashlib.sha256: micropython-lib's hmac defaults to MD5.
"""

import hashlib

import cbor

HMAC_256_64 = 4
HMAC_256_256 = 5
ALG = 1  # header labels, RFC 9052 section 3.1
KID = 4
SEQ = -65537  # private use
TAG_MAC0 = 17
_TAG_LEN = {HMAC_256_64: 8, HMAC_256_256: 32}


def hmac_sha256(key, msg):
    """RFC 2104 HMAC with SHA-256 (64-byte blocks)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]))
    inner.update(msg)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return outer.digest()


def equal(a, b):
    """Constant-time comparison: the time does not tell where a and b differ."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _to_be_maced(protected, payload, aad):
    return cbor.dumps(["MAC0", protected, aad, payload])


def _tag(key, alg, protected, payload, aad):
    return hmac_sha256(key, _to_be_maced(protected, payload, aad))[:_TAG_LEN[alg]]


def mac0(key, kid, seq, payload, alg=HMAC_256_256, aad=b""):
    """The tagged COSE_Mac0 of payload (bytes) from device kid (bytes)."""
    if not isinstance(alg, int) or alg not in _TAG_LEN:
        raise ValueError("COSE alg %r not supported (4 or 5)" % (alg,))
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("COSE seq must be an int >= 0")
    for name, b in (("key", key), ("kid", kid), ("payload", payload)):
        if not isinstance(b, (bytes, bytearray)):
            raise ValueError("COSE %s must be bytes" % name)
    if not key:
        raise ValueError("COSE key is empty")
    protected = cbor.dumps(cbor.Map([(ALG, alg), (SEQ, seq)]))
    return cbor.dumps(cbor.Tag(TAG_MAC0, [
        protected, cbor.Map([(KID, bytes(kid))]), bytes(payload),
        _tag(key, alg, protected, payload, aad)]))


def parse(data):
    """Structure only, nothing verified -> (protected bytes, header dict,
    kid, payload, tag). The collector reads kid here to find the key."""
    msg = cbor.loads(data)
    if isinstance(msg, cbor.Tag):
        if msg.tag != TAG_MAC0:
            raise ValueError("COSE tag %d is not COSE_Mac0 (17)" % msg.tag)
        msg = msg.value
    if not isinstance(msg, list) or len(msg) != 4:
        raise ValueError("COSE_Mac0 must be an array of 4")
    protected, unprotected, payload, tag = msg
    if not isinstance(protected, bytes) or not isinstance(unprotected, dict):
        raise ValueError("COSE_Mac0 headers malformed")
    if not isinstance(payload, bytes) or not isinstance(tag, bytes):
        raise ValueError("COSE_Mac0 payload and tag must be byte strings")
    hdr = cbor.loads(protected) if protected else {}
    if not isinstance(hdr, dict):
        raise ValueError("COSE protected header is not a map")
    for k in hdr:
        if k in unprotected:
            raise ValueError("COSE header %r both protected and unprotected" % (k,))
    kid = unprotected.get(KID, hdr.get(KID))
    if not isinstance(kid, bytes):
        raise ValueError("COSE kid missing")
    return protected, hdr, kid, payload, tag


def verify(key, data, aad=b"", algs=(HMAC_256_256,)):
    """Check a COSE_Mac0 -> (kid, seq, payload); ValueError if anything is off.
    Replay (an old seq) is for the caller to refuse."""
    protected, hdr, kid, payload, tag = parse(data)
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise ValueError("COSE key must be non-empty bytes")
    alg = hdr.get(ALG)
    if not isinstance(alg, int) or alg not in algs or alg not in _TAG_LEN:
        raise ValueError("COSE alg %r not accepted" % (alg,))
    if not equal(tag, _tag(key, alg, protected, payload, aad)):
        raise ValueError("COSE tag does not verify")
    seq = hdr.get(SEQ)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("COSE seq missing from the protected header")
    return kid, seq, payload
