"""A small CBOR (RFC 8949) codec: what the rest of Petrel calls. It holds
little itself; each part is loaded where it is used, so a node carries only
what it runs (README, "Memory budget"):

- cborput: put_head/put_int/put_float, items written into a buffer, all a
  node's uplink batch needs (uplink.encoder and cose.seal import it directly);
- cbortypes: Tag, Map and MAX_DEPTH, shared by the encoder and the decoder;
- cborenc: the generic encoder behind dumps(), loaded on its first call (a
  node's health record);
- cbordec: the strict decoder behind loads() and decode(), loaded on their
  first call; a node never decodes, and `petrel deploy` leaves it out.

None of them imports this module back.

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
put_head/put_int/put_float (cborput) write one item into a bytearray at an
index and return the next index: a streaming encoder (uplink.encoder) builds a
whole message in one buffer with them, and dumps() is made of the same pieces.

Decoding: maps become dicts, tags Tag(tag, value), byte strings bytes.
Anything malformed raises ValueError with the reason: truncated input, trailing
bytes (loads), indefinite lengths (not supported), reserved additional info,
lengths past the end of the input, nesting deeper than MAX_DEPTH, duplicate or
unhashable map keys, invalid UTF-8, unassigned simple values (undefined too).
Keys that differ in CBOR but not in Python (1, 1.0, True) count as duplicates.
"""

from cborput import put_float, put_head, put_int  # noqa: F401  (cbor.put_*, as ever)
from cbortypes import MAX_DEPTH, Map, Tag  # noqa: F401


def dumps(obj):
    """obj as CBOR bytes."""
    import cborenc

    return cborenc.dumps(obj)


def decode(data, start=0):
    """One item from data[start:] -> (obj, end index); more may follow."""
    import cbordec

    return cbordec.decode(data, start)


def loads(data):
    """The single item that is the whole of data."""
    import cbordec

    return cbordec.loads(data)
