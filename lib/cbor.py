"""A small CBOR (RFC 8949) encoder, for the uplink payload; the strict decoder
(cbordec) is loaded by loads() and decode() on first use, so a node, which only
encodes, never carries it; the generic encoder (cborenc) by dumps(), so a
batch, written with put_* alone, needs neither.

    data = dumps({"n": "t", "v": 21.5})
    obj = loads(data)                   # the whole of data, or ValueError
    obj, end = decode(data, start)      # one item from a CBOR sequence
    i = put_head(buf, i, 4, n)          # write into a preallocated buffer at i

Encoding: ints (-2**64 .. 2**64-1), bytes, str, list/tuple, dict, Map, Tag,
True/False/None and floats, always with definite lengths and the shortest head.
A float goes out in the shortest of float16/32/64 that holds it exactly
(RFC 8949 section 4.2.2 preferred serialisation; NaN as f97e00).
Map keys go out in the order given, never sorted: a dict in its own iteration
order, a Map(pairs) in the order of its pairs. MicroPython dicts are not
ordered, so use Map where the bytes must be reproducible (signed headers).
put_head/put_int/put_float write one item into a bytearray at an index and
return the next index: a streaming encoder (uplink.encoder) builds a whole
message in one buffer with them, and dumps() (cborenc) is made of the same pieces.

Decoding: maps become dicts, tags Tag(tag, value), byte strings bytes.
Anything malformed raises ValueError with the reason: truncated input, trailing
bytes (loads), indefinite lengths (not supported), reserved additional info,
lengths past the end of the input, nesting deeper than MAX_DEPTH, duplicate or
unhashable map keys, invalid UTF-8, unassigned simple values (undefined too).
Keys that differ in CBOR but not in Python (1, 1.0, True) count as duplicates.
"""

import struct

MAX_DEPTH = 16  # arrays, maps and tags nested deeper are refused both ways


class Tag:
    """A tagged item: Tag(17, [...]) for COSE_Mac0."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Map:
    """A map to encode with its keys in exactly this order: Map([(1, 5), (4, b"id")])."""

    def __init__(self, pairs):
        self.pairs = list(pairs)


# ---------------------------------------------------------------- items into a buffer
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


# ---------------------------------------------------------------- dumps, on use
def dumps(obj):
    """obj as CBOR bytes (cborenc, loaded on first use: the uplink's batches
    are written with put_* alone)."""
    import cborenc

    cborenc.Tag = Tag  # ours, as for cbordec in decode()
    cborenc.Map = Map
    return cborenc.dumps(obj)


# ---------------------------------------------------------------- decoding, on use
def decode(data, start=0):
    """One item from data[start:] -> (obj, end index); more may follow."""
    import cbordec

    cbordec.Tag = Tag  # ours: a cbor loaded afresh (boot runner) has its own class
    return cbordec.decode(data, start)


def loads(data):
    """The single item that is the whole of data."""
    import cbordec

    cbordec.Tag = Tag
    return cbordec.loads(data)
