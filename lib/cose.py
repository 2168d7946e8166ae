"""COSE_Mac0 (RFC 9052 section 6.2) with HMAC-SHA256: the uplink's integrity.

    msg = mac0(key, b"p-a1b2c3", seq, payload)        # tag 17 [prot, unprot, payload, tag]
    msg = seal(key, kid, seq, buf, start, end)        # the payload already in buf[start:end]
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

seal() is the node's way: the payload was written into buf after room(kid)
free bytes, the COSE head goes in front of it and the tag after it (TAIL
bytes), and the hash is fed the MAC_structure piece by piece, so neither it
nor the message is ever built by concatenation. verify() and parse() live in
cosecheck, loaded on use: a node never verifies (`petrel deploy` leaves it
out). cosecheck imports nothing of this module's: verify() hands it the MAC
and the comparison.

HMAC is written here on hashlib.sha256: micropython-lib's hmac defaults to MD5.
"""

import hashlib

from cborput import put_head, put_int  # all of CBOR that sealing needs

HMAC_256_64 = 4  # the tag's first 8 bytes
HMAC_256_256 = 5
TAIL = 34  # room after the payload: the tag's head and 32 bytes
# The header labels and the tag number are written by seal() as bytes and
# read by cosecheck, which names them: few names, few qstrs on a node.


def room(kid):
    """Free bytes seal() needs before the payload: tag, array, protected
    header (a 9-byte seq at most), kid, payload head (< 2**32 bytes)."""
    return 30 + len(kid)


def _hmac(key, parts):
    """RFC 2104 HMAC-SHA256 of the concatenation of parts, fed one by one."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    pad = bytearray(64)
    pad[:len(key)] = key
    for j in range(64):
        pad[j] ^= 0x36
    h = hashlib.sha256(pad)
    for p in parts:
        h.update(p)
    for j in range(64):
        pad[j] ^= 0x36 ^ 0x5C
    h2 = hashlib.sha256(pad)
    h2.update(h.digest())
    return h2.digest()


def hmac_sha256(key, msg):
    return _hmac(key, (msg,))


def equal(a, b):
    """Constant-time comparison: the time does not tell where a and b differ."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _tag(key, alg, protected, payload, aad):
    """The tag over ["MAC0", protected, aad, payload]: the payload (a
    memoryview into the message buffer, say) goes to the hash as it is."""
    h = bytearray(15)  # the three byte-string heads
    a = put_head(h, 0, 2, len(protected))
    b = put_head(h, a, 2, len(aad))
    c = put_head(h, b, 2, len(payload))
    h = memoryview(h)
    return _hmac(key, (b"\x84\x64MAC0", h[:a], protected, h[a:b], aad, h[b:c], payload))[:8 if alg == 4 else 32]


def _check(key, kid, seq, alg):
    if not isinstance(alg, int) or alg not in (HMAC_256_64, HMAC_256_256):
        raise ValueError("COSE alg %r not supported (4 or 5)" % (alg,))
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("COSE seq must be an int >= 0")
    for name, b in (("key", key), ("kid", kid)):
        if not isinstance(b, (bytes, bytearray)):
            raise ValueError("COSE %s must be bytes" % name)
    if not key:
        raise ValueError("COSE key is empty")


def seal(key, kid, seq, buf, start, end, alg=HMAC_256_256, aad=b""):
    """The tagged COSE_Mac0 of the payload buf[start:end] as bytes; buf needs
    room(kid) bytes before start and TAIL after end, which this overwrites."""
    _check(key, kid, seq, alg)
    # written with put_*, not cbor.dumps: no Map, no growing bytearrays
    pre = bytearray(room(kid))
    pre[:11] = b"\xd1\x84\x40\xa2\x01\x00\x3a\x00\x01\x00\x00"  # tag 17, [4], bstr, {1: alg, -65537: seq}
    pre[5] = alg
    n = put_int(pre, 11, seq)
    pre[2] = 0x40 + n - 3  # the protected header's length (< 24)
    protected = memoryview(pre)[3:n]
    pre[n:n + 2] = b"\xa1\x04"  # {4: kid}
    n = put_head(pre, n + 2, 2, len(kid))
    pre[n:n + len(kid)] = kid
    n = put_head(pre, n + len(kid), 2, end - start)
    if n > start:
        raise ValueError("COSE: no room for the head")
    mv = memoryview(buf)
    tag = _tag(key, alg, protected, mv[start:end], aad)
    begin = start - n
    buf[begin:start] = memoryview(pre)[:n]
    i = put_head(buf, end, 2, len(tag))
    buf[i:i + len(tag)] = tag
    return bytes(mv[begin:i + len(tag)])


def mac0(key, kid, seq, payload, alg=HMAC_256_256, aad=b""):
    """The tagged COSE_Mac0 of payload (bytes) from device kid (bytes)."""
    _check(key, kid, seq, alg)
    if not isinstance(payload, (bytes, bytearray)):
        raise ValueError("COSE payload must be bytes")
    start = room(kid)
    buf = bytearray(start + len(payload) + TAIL)
    buf[start:start + len(payload)] = payload
    return seal(key, kid, seq, buf, start, start + len(payload), alg, aad)


def parse(data):
    """Structure only, nothing verified -> (protected bytes, header dict,
    kid, payload, tag). The collector reads kid here to find the key."""
    import cosecheck

    return cosecheck.parse(data)


def verify(key, data, aad=b"", algs=(HMAC_256_256,)):
    """Check a COSE_Mac0 -> (kid, seq, payload); ValueError if anything is off.
    Replay (an old seq) is for the caller to refuse."""
    import cosecheck

    # the algs this module can compute, and its MAC and comparison: handed in
    known = [a for a in algs if a in (HMAC_256_64, HMAC_256_256)]
    return cosecheck.verify(key, data, aad, known, _tag, equal)
