"""The strict CBOR (RFC 8949) decoder behind cbor.loads() and cbor.decode(),
in a module of its own: the node only encodes, so it never loads this.

Maps become dicts, tags cbor.Tag(tag, value) (cbortypes), byte strings bytes.
Anything malformed raises ValueError with the reason (see cbor's docstring).
"""

import struct

from cbortypes import MAX_DEPTH, Tag

try:  # decoding float16 with struct where the port has it
    _HAS_E = struct.unpack(">e", struct.pack(">e", 1.5))[0] == 1.5
except Exception:
    _HAS_E = False


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
