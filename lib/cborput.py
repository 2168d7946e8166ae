"""CBOR (RFC 8949) items written into a preallocated buffer: the whole of
CBOR that a node's uplink batch needs (uplink.encoder, cose.seal), so that a
node loads nothing else of CBOR while it drains (README, "Memory budget").

    i = put_head(buf, i, 4, n)          # the head of an array of n items, at buf[i]
    i = put_int(buf, i, -5)
    i = put_float(buf, i, 21.5)         # the shortest of float16/32/64 that holds it

Each writes one item at index i and returns the next index; the generic
encoder (cbor.dumps, in cborenc) is made of the same pieces. A float goes out
in the shortest of float16/32/64 that holds it exactly (RFC 8949 section 4.2.2
preferred serialisation; NaN as f97e00).
"""

import struct

_F32_MAX = 3.4028234663852886e38


def put_head(buf, i, major, n):
    """The head of major type `major` with argument n, at buf[i]; -> next index."""
    mt = major << 5
    if n < 24:
        buf[i] = mt | n
        return i + 1
    if n < 0x100:
        buf[i] = mt | 24
        buf[i + 1] = n
        return i + 2
    for ai, fmt, size in ((25, ">BH", 3), (26, ">BI", 5), (27, ">BQ", 9)):
        if n < 1 << (8 * size - 8):
            struct.pack_into(fmt, buf, i, mt | ai, n)
            return i + size
    raise ValueError("CBOR integer out of range (needs a bignum)")


def put_int(buf, i, n):
    return put_head(buf, i, 0, n) if n >= 0 else put_head(buf, i, 1, -1 - n)


def _half_bits(u):
    """float16 bits holding exactly the float32 whose bits are u, or None.
    By hand, not with struct 'e': MicroPython's packs some subnormals wrong
    (2**-15 -> 0) and wraps instead of raising on overflow."""
    sign = (u >> 16) & 0x8000
    exp = ((u >> 23) & 0xFF) - 127
    mant = u & 0x7FFFFF
    if mant == 0 and (exp == -127 or exp == 128):
        return sign | (0x7C00 if exp > 0 else 0)  # +-0, +-inf
    if -14 <= exp <= 15:
        if mant & 0x1FFF:
            return None
        return sign | ((exp + 15) << 10) | (mant >> 13)
    if -24 <= exp < -14:  # a float16 subnormal: f * 2**-24
        full = mant | 0x800000
        shift = -exp - 1
        if full & ((1 << shift) - 1):
            return None
        return sign | (full >> shift)
    return None


def put_float(buf, i, x):
    """x in the shortest of float16/32/64 that holds it exactly (9 bytes room)."""
    if x != x:
        buf[i:i + 3] = b"\xf9\x7e\x00"  # the canonical NaN
        return i + 3
    # inf is a float16; CPython refuses to pack a float32 past its range, so test first
    if x == x * 2 or -_F32_MAX <= x <= _F32_MAX:
        struct.pack_into(">f", buf, i + 1, x)
        if struct.unpack_from(">f", buf, i + 1)[0] == x:
            h = _half_bits(struct.unpack_from(">I", buf, i + 1)[0])
            if h is None:
                buf[i] = 0xFA
                return i + 5
            buf[i] = 0xF9
            struct.pack_into(">H", buf, i + 1, h)
            return i + 3
    buf[i] = 0xFB
    struct.pack_into(">d", buf, i + 1, x)
    return i + 9
