"""cose.parse() and cose.verify(), loaded on use: the collector's and the
tests' side of COSE_Mac0, which a node never needs. It does not import cose:
verify() is handed the MAC and the constant-time comparison."""

import cbor

ALG = 1  # header labels, RFC 9052 section 3.1
KID = 4
SEQ = -65537  # private use
TAG_MAC0 = 17


def parse(data):
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


def verify(key, data, aad, algs, mac, equal):
    """algs: those accepted that mac(key, alg, protected, payload, aad) can
    compute (cose._tag); equal: a constant-time comparison (cose.equal)."""
    protected, hdr, kid, payload, tag = parse(data)
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise ValueError("COSE key must be non-empty bytes")
    alg = hdr.get(ALG)
    if not isinstance(alg, int) or alg not in algs:
        raise ValueError("COSE alg %r not accepted" % (alg,))
    if not equal(tag, mac(key, alg, protected, payload, aad)):
        raise ValueError("COSE tag does not verify")
    seq = hdr.get(SEQ)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("COSE seq missing from the protected header")
    return kid, seq, payload
