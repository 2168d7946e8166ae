"""cbor.dumps(), loaded on use: the generic encoder of Python values (see cbor's
docstring), built on cborput. A node's uplink batch never needs it; its
health record does, at the end of a wake.
"""

from cborput import put_float, put_head, put_int
from cbortypes import MAX_DEPTH, Map, Tag

_T = bytearray(9)  # one head or float at a time, copied out


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
        out.extend(_T[:put_int(_T, 0, x)])
    elif isinstance(x, float):
        out.extend(_T[:put_float(_T, 0, x)])
    elif isinstance(x, (bytes, bytearray, memoryview)):
        out.extend(_T[:put_head(_T, 0, 2, len(x))])
        out.extend(x)
    elif isinstance(x, str):
        b = x.encode("utf-8")
        out.extend(_T[:put_head(_T, 0, 3, len(b))])
        out.extend(b)
    elif isinstance(x, (list, tuple)):
        out.extend(_T[:put_head(_T, 0, 4, len(x))])
        for v in x:
            _enc(out, v, depth + 1)
    elif isinstance(x, (dict, Map)):
        pairs = x.pairs if isinstance(x, Map) else x.items()
        out.extend(_T[:put_head(_T, 0, 5, len(pairs))])
        for k, v in pairs:
            _enc(out, k, depth + 1)
            _enc(out, v, depth + 1)
    elif isinstance(x, Tag):
        if not isinstance(x.tag, int) or x.tag < 0:
            raise ValueError("CBOR tag must be an unsigned int")
        out.extend(_T[:put_head(_T, 0, 6, x.tag)])
        _enc(out, x.value, depth + 1)
    else:
        raise ValueError("cannot encode %s as CBOR" % type(x).__name__)


def dumps(obj):
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)
