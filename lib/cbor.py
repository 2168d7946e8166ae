"""A small CBOR (RFC 8949) encoder and strict decoder, for the uplink payload.

    data = dumps({"n": "t", "v": 21.5})
    obj = loads(data)                   # the whole of data, or ValueError
    obj, end = decode(data, start)      # one item from a CBOR sequence

Encoding: ints (-2**64 .. 2**64-1), bytes, str, list/tuple, dict, Map, Tag,
True/False/None and floats, always with definite lengths and the shortest head.
A float goes out in the shortest of float16/32/64 that holds it exactly
(RFC 8949 section 4.2.2 preferred serialisation; NaN as f97e00).
Map keys go out in the order given, never sorted: a dict in its own iteration
order, a Map(pairs) in the order of its pairs. MicroPython dicts are not
ordered, so use Map where the bytes must be reproducible (signed headers).

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


# ---------------------------------------------------------------- floats
_INF = float("inf")
_F32_MAX = 3.4028234663852886e38

try:  # decoding float16 with struct where the port has it
    _HAS_E = struct.unpack(">e", struct.pack(">e", 1.5))[0] == 1.5
except Exception:
    _HAS_E = False


def _f32(x):
    """The float32 bytes of x if they hold it exactly, else None."""
    if not -_F32_MAX <= x <= _F32_MAX:  # CPython raises, MicroPython gives inf
        return None
    b = struct.pack(">f", x)
    return b if struct.unpack(">f", b)[0] == x else None


def _half_bits(b):
    """float16 bits holding exactly the float32 whose bytes are b, or None.
    By hand, not with struct 'e': MicroPython's packs some subnormals wrong
    (2**-15 -> 0) and wraps instead of raising on overflow."""
    u = struct.unpack(">I", b)[0]
    sign = (u >> 16) & 0x8000
    exp = ((u >> 23) & 0xFF) - 127
    mant = u & 0x7FFFFF
    if exp == -127 and mant == 0:
        return sign  # +-0
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


def _half_to_float(h):
    if _HAS_E:  # unpacking is right on both interpreters
        return struct.unpack(">e", struct.pack(">H", h))[0]
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    frac = h & 0x3FF
    if exp == 0:
        if frac == 0:
            return struct.unpack(">f", struct.pack(">I", sign))[0]
        e = -14
        while not frac & 0x400:  # normalise the subnormal
            frac <<= 1
            e -= 1
        u = sign | ((e + 127) << 23) | ((frac & 0x3FF) << 13)
    elif exp == 31:
        u = sign | 0x7F800000 | (frac << 13)
    else:
        u = sign | ((exp - 15 + 127) << 23) | (frac << 13)
    return struct.unpack(">f", struct.pack(">I", u))[0]


def _float(out, x):
    if x != x:
        out.extend(b"\xf9\x7e\x00")  # the canonical NaN
        return
    if x == _INF or x == -_INF:
        out.extend(b"\xf9\xfc\x00" if x < 0 else b"\xf9\x7c\x00")
        return
    b = _f32(x)
    if b is None:
        out.extend(b"\xfb" + struct.pack(">d", x))
        return
    h = _half_bits(b)
    if h is None:
        out.extend(b"\xfa" + b)
    else:
        out.extend(b"\xf9" + struct.pack(">H", h))


# ---------------------------------------------------------------- encoder
def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.extend(struct.pack(">BH", mt | 25, n))
    elif n < 0x100000000:
        out.extend(struct.pack(">BI", mt | 26, n))
    elif n < 0x10000000000000000:
        out.extend(struct.pack(">BQ", mt | 27, n))
    else:
        raise ValueError("CBOR integer out of range (needs a bignum)")


def _enc(out, x, depth):
    if depth > MAX_DEPTH:
        raise ValueError("CBOR nesting deeper than %d" % MAX_DEPTH)
    # bool first: on CPython bool is an int
    if x is False:
        out.append(0xF4)
    elif x is True:
        out.append(0xF5)
    elif x is None:
        out.append(0xF6)
    elif isinstance(x, int):
        if x >= 0:
            _head(out, 0, x)
        else:
            _head(out, 1, -1 - x)
    elif isinstance(x, float):
        _float(out, x)
    elif isinstance(x, (bytes, bytearray, memoryview)):
        _head(out, 2, len(x))
        out.extend(x)
    elif isinstance(x, str):
        b = x.encode("utf-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(x, (list, tuple)):
        _head(out, 4, len(x))
        for v in x:
            _enc(out, v, depth + 1)
    elif isinstance(x, (dict, Map)):
        pairs = x.pairs if isinstance(x, Map) else x.items()
        _head(out, 5, len(pairs))
        for k, v in pairs:
            _enc(out, k, depth + 1)
            _enc(out, v, depth + 1)
    elif isinstance(x, Tag):
        if not isinstance(x.tag, int) or x.tag < 0:
            raise ValueError("CBOR tag must be an unsigned int")
        _head(out, 6, x.tag)
        _enc(out, x.value, depth + 1)
    else:
        raise ValueError("cannot encode %s as CBOR" % type(x).__name__)


def dumps(obj):
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)


# ---------------------------------------------------------------- decoder
def _arg(data, i, ai, end):
    """The argument of a head whose additional info is ai -> (n, next index)."""
    if ai < 24:
        return ai, i
    if ai > 27:
        if ai < 31:
            raise ValueError("CBOR reserved additional info %d at %d" % (ai, i - 1))
        if 2 <= data[i - 1] >> 5 <= 5:
            raise ValueError("CBOR indefinite length not supported at %d" % (i - 1))
        raise ValueError("CBOR malformed: ints and tags have no indefinite form, at %d" % (i - 1))
    size = 1 << (ai - 24)
    if i + size > end:
        raise ValueError("CBOR truncated: head at %d" % (i - 1))
    if size == 1:
        return data[i], i + 1
    return struct.unpack(">" + "BHIQ"[ai - 24], data[i:i + size])[0], i + size


def _dec(data, i, end, depth):
    if depth > MAX_DEPTH:
        raise ValueError("CBOR nesting deeper than %d" % MAX_DEPTH)
    if i >= end:
        raise ValueError("CBOR truncated at %d" % i)
    ib = data[i]
    major = ib >> 5
    ai = ib & 0x1F
    i += 1
    if major == 7:
        if ai < 24:
            if ai == 20:
                return False, i
            if ai == 21:
                return True, i
            if ai == 22:
                return None, i
            raise ValueError("CBOR simple value %d not supported at %d" % (ai, i - 1))
        if ai == 24:  # simple values 32..255: none assigned, and < 32 is invalid here
            raise ValueError("CBOR simple value in two bytes not supported at %d" % (i - 1))
        if ai == 25:
            if i + 2 > end:
                raise ValueError("CBOR truncated float16 at %d" % i)
            return _half_to_float(struct.unpack(">H", data[i:i + 2])[0]), i + 2
        if ai == 26:
            if i + 4 > end:
                raise ValueError("CBOR truncated float32 at %d" % i)
            return struct.unpack(">f", data[i:i + 4])[0], i + 4
        if ai == 27:
            if i + 8 > end:
                raise ValueError("CBOR truncated float64 at %d" % i)
            return struct.unpack(">d", data[i:i + 8])[0], i + 8
        if ai == 31:
            raise ValueError("CBOR unexpected break at %d" % (i - 1))
        raise ValueError("CBOR reserved additional info %d at %d" % (ai, i - 1))
    n, i = _arg(data, i, ai, end)
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major == 2 or major == 3:
        if n > end - i:
            raise ValueError("CBOR string of %d bytes past the end at %d" % (n, i))
        b = bytes(data[i:i + n])
        if major == 2:
            return b, i + n
        try:
            return str(b, "utf-8"), i + n
        except Exception:  # UnicodeError: a ValueError on both, but say why
            raise ValueError("CBOR text string is not UTF-8 at %d" % i)
    if major == 4:
        if n > end - i:  # every item takes a byte at least
            raise ValueError("CBOR array of %d items past the end at %d" % (n, i))
        out = []
        for _ in range(n):
            v, i = _dec(data, i, end, depth + 1)
            out.append(v)
        return out, i
    if major == 5:
        if 2 * n > end - i:
            raise ValueError("CBOR map of %d pairs past the end at %d" % (n, i))
        out = {}
        for _ in range(n):
            at = i
            k, i = _dec(data, i, end, depth + 1)
            v, i = _dec(data, i, end, depth + 1)
            if isinstance(k, (list, dict, Tag)):  # not hashable
                raise ValueError("CBOR map key at %d cannot be a dict key" % at)
            if k in out:
                raise ValueError("CBOR duplicate map key at %d" % at)
            out[k] = v
        return out, i
    # major 6: a tag
    v, i = _dec(data, i, end, depth + 1)
    return Tag(n, v), i


def decode(data, start=0):
    """One item from data[start:] -> (obj, end index); more may follow."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("CBOR input must be bytes")
    return _dec(data, start, len(data), 0)


def loads(data):
    """The single item that is the whole of data."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("CBOR input must be bytes")
    obj, i = _dec(data, 0, len(data), 0)
    if i != len(data):
        raise ValueError("CBOR trailing bytes: %d after the item" % (len(data) - i))
    return obj
