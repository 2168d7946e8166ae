"""The collector's verifier: a node's message (COSE_Mac0 over a SenML CBOR
pack, wire format v2) checked and resolved into readings, independent of the
node's code. Pure: no database, no sequence state (the store keeps the
sequence window).

    v = Verifier({"p-a1b2c3": key})
    msg = v.open("petrel/p-a1b2c3/up", data)   # Message, or raises Rejected
    msg.readings[0]     # Reading(device, channel, unit, value, exact, time, quality, flags, rid)

Refusals (Rejected.reason): "oversized" (over MAX_MESSAGE, refused unread),
"topic" (not petrel/<device>/up|health, or another device than the kid),
"structure" (not the format: bad CBOR, wrong types, a must-understand label
it does not know, sizes out of bounds), "unknown_kid", "alg", "mac", "name"
(a record not named "<kid>/<channel>": a key speaks only for its device).
Rejected.device is the device when it is a known one (so refusals can be
counted per device without an attacker adding rows), else None.

Hostile input is the normal case: the CBOR decoder here is strict and small
(definite lengths only, every length checked against the bytes left before
anything is allocated, nesting bounded, only the tags the format uses), and
no refusal's text holds more than a few bounded words of the input.
"""

import hashlib
import hmac
import time as _time
from collections import namedtuple
import re
from decimal import Decimal

MAX_MESSAGE = 64 * 1024
MAX_DEPTH = 6  # COSE array > payload array > record map > tag 4 > [e, m]
MAX_NAME = 64  # device id, channel and health field names
MAX_TEXT = 256  # units, health's text values
SEQ_LIMIT = 1 << 63  # sequence numbers and reading ids fit a signed 64-bit column
TIME_LIMIT = 1 << 36  # Unix seconds beyond year 4000 are not a clock
RELATIVE = 1 << 28  # RFC 8428 4.5.3: a time below this is relative to now
ALG, SEQ, KID = 1, -65537, 4
TAG_LEN = {5: 32, 4: 8}
BVER, BN, BT, BU, N, U, V, VS, VB, T = -1, -2, -3, -4, 0, 1, 2, 3, 4, 6
_INT_LABELS = (BVER, BN, BT, BU, N, U, V, VS, VB, T)
_TEXT_LABELS = ("flags", "i", "is", "undated_")
_CONTROL = re.compile("[\x00-\x1f\x7f]")

Reading = namedtuple("Reading", "device channel unit value exact time quality flags rid")


class Message:
    """A verified message. kind "up": readings; kind "health": health
    {field: number | str} and time (the node's bt, or None)."""

    __slots__ = ("device", "seq", "kind", "readings", "health", "received", "time")

    def __init__(self, device, seq, kind, readings, health, received, time=None):
        self.device, self.seq, self.kind = device, seq, kind
        self.readings, self.health, self.received, self.time = readings, health, received, time

    def __repr__(self):
        return "Message(%s seq=%d %s, %d readings)" % (self.device, self.seq, self.kind, len(self.readings))


class Rejected(ValueError):
    def __init__(self, reason, detail="", device=None):
        ValueError.__init__(self, "%s: %s" % (reason, detail) if detail else reason)
        self.reason, self.detail, self.device = reason, detail, device


def _kind(x):
    """A bounded description of a decoded value for a refusal's text."""
    if isinstance(x, (bool, int, float)) and not (isinstance(x, int) and abs(x) >= 1 << 64):
        return repr(x)
    return type(x).__name__


# ------------------------------------------------------------ strict CBOR
class Tag:
    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        self.tag, self.value = tag, value


class _Bad(Exception):
    pass


_SIMPLE = {20: False, 21: True, 22: None}
_TAGS = (4, 17)  # decimal fraction (values), COSE_Mac0


def _head(data, pos):
    if pos >= len(data):
        raise _Bad("truncated")
    b = data[pos]
    major, info = b >> 5, b & 31
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:
        raise _Bad("indefinite or reserved length")
    n = 1 << (info - 24)
    if pos + n > len(data):
        raise _Bad("truncated")
    return major, int.from_bytes(data[pos:pos + n], "big"), pos + n


def _item(data, pos, depth):
    if depth > MAX_DEPTH:
        raise _Bad("nested too deep")
    b = data[pos] if pos < len(data) else 0
    major, arg, pos = _head(data, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if arg > len(data) - pos:  # a length is checked against what is left before anything is made
            raise _Bad("string longer than the message")
        raw = data[pos:pos + arg]
        if major == 2:
            return bytes(raw), pos + arg
        try:
            return str(raw, "utf-8"), pos + arg
        except UnicodeDecodeError:
            raise _Bad("text not UTF-8") from None
    if major == 4:
        if arg > len(data) - pos:  # every item takes at least a byte
            raise _Bad("array longer than the message")
        out = []
        for _ in range(arg):
            v, pos = _item(data, pos, depth + 1)
            out.append(v)
        return out, pos
    if major == 5:
        if arg * 2 > len(data) - pos:
            raise _Bad("map longer than the message")
        out = {}
        for _ in range(arg):
            k, pos = _item(data, pos, depth + 1)
            if not isinstance(k, (int, str)) or isinstance(k, bool):
                raise _Bad("map key not an int or text")
            if k in out:
                raise _Bad("duplicate map key")
            out[k], pos = _item(data, pos, depth + 1)
        return out, pos
    if major == 6:
        if arg not in _TAGS:
            raise _Bad("tag not used by the format")
        v, pos = _item(data, pos, depth + 1)
        return Tag(arg, v), pos
    info = b & 31  # major 7
    if info < 24:
        if arg in _SIMPLE:
            return _SIMPLE[arg], pos
        raise _Bad("simple value not used by the format")
    if info in (25, 26, 27):
        import struct

        n = 1 << (info - 24)
        return struct.unpack(">" + {2: "e", 4: "f", 8: "d"}[n], data[pos - n:pos])[0], pos
    raise _Bad("simple value not used by the format")


def loads(data):
    """One CBOR item, the whole of data, or _Bad."""
    v, pos = _item(data, 0, 0)
    if pos != len(data):
        raise _Bad("bytes after the item")
    return v


# ------------------------------------------------------------ verifier
def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _bstr_head(n):
    if n < 24:
        return bytes((0x40 | n,))
    if n < 256:
        return bytes((0x58, n))
    if n < 65536:
        return bytes((0x59,)) + n.to_bytes(2, "big")
    return bytes((0x5a,)) + n.to_bytes(4, "big")


class Verifier:
    def __init__(self, keys, algs=(5,), max_message=MAX_MESSAGE, prefix="petrel"):
        """keys: {device_id: HMAC key bytes} (provision.load_keys); algs: the
        COSE algs accepted (5 = HMAC 256/256; 4 = HMAC 256/64 only if asked);
        prefix: the topics' first levels (<prefix>/<device>/up|health)."""
        self.keys = dict(keys)
        self.algs = tuple(algs)
        self.max_message = max_message
        self.prefix = prefix + "/"

    def open(self, topic, data, received=None):
        """-> Message, or raises Rejected."""
        if received is None:
            received = _time.time()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise Rejected("structure", "message is %s, not bytes" % type(data).__name__)
        if len(data) > self.max_message:
            raise Rejected("oversized", "%d bytes > %d" % (len(data), self.max_message))
        ok = isinstance(topic, str) and len(topic) <= len(self.prefix) + 2 * MAX_NAME and topic.startswith(self.prefix)
        parts = topic[len(self.prefix):].split("/") if ok else ()
        if len(parts) != 2 or parts[1] not in ("up", "health") or not parts[0]:
            raise Rejected("topic", "not %s<device>/up|health" % self.prefix)
        kind = parts[1]
        data = bytes(data)
        try:
            msg = loads(data)
        except (_Bad, RecursionError) as e:
            raise Rejected("structure", "COSE: %s" % e) from None
        device, seq, alg, protected, payload, tag = self._cose(msg)
        key = self.keys.get(device)
        if key is None:
            raise Rejected("unknown_kid", "kid of %d bytes not in the registry" % len(device))
        if alg not in self.algs:
            raise Rejected("alg", "alg %s not accepted" % _kind(alg), device)
        if len(tag) != TAG_LEN[alg]:
            raise Rejected("mac", "tag of %d bytes" % len(tag), device)
        mac0 = b"\x84\x64MAC0" + _bstr_head(len(protected)) + protected + b"\x40" + _bstr_head(len(payload)) + payload
        if not hmac.compare_digest(hmac.new(key, mac0, hashlib.sha256).digest()[:len(tag)], tag):
            raise Rejected("mac", "", device)
        # authentic from here on: the key's holder sent it
        if not _is_int(seq) or not 0 <= seq < SEQ_LIMIT:
            raise Rejected("structure", "seq %s is not an int in [0, 2**63)" % _kind(seq), device)
        if parts[0] != device:
            raise Rejected("topic", "topic's device is not the kid", device)
        try:
            pack = loads(payload)
        except (_Bad, RecursionError) as e:
            raise Rejected("structure", "SenML: %s" % e, device) from None
        if kind == "up":
            readings = resolve(pack, device, received)
            return Message(device, seq, kind, readings, None, received)
        health, t = resolve_health(pack, device)
        return Message(device, seq, kind, [], health, received, t)

    def _cose(self, msg):
        if not isinstance(msg, Tag) or msg.tag != 17 or not isinstance(msg.value, list) or len(msg.value) != 4:
            raise Rejected("structure", "not a COSE_Mac0 (tag 17, 4 items)")
        protected, unprotected, payload, tag = msg.value
        if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(tag, bytes):
            raise Rejected("structure", "protected, payload and tag must be byte strings")
        if not isinstance(unprotected, dict) or not isinstance(unprotected.get(KID), bytes):
            raise Rejected("structure", "no kid (a byte string) in the unprotected header")
        kid = unprotected[KID]
        try:
            device = kid.decode() if 0 < len(kid) <= MAX_NAME else None
        except UnicodeDecodeError:
            device = None
        if device is None:
            raise Rejected("structure", "kid of %d bytes is not a device id" % len(kid))
        try:
            hdr = loads(protected)
        except (_Bad, RecursionError) as e:
            raise Rejected("structure", "protected header: %s" % e) from None
        if not isinstance(hdr, dict) or ALG not in hdr or SEQ not in hdr:
            raise Rejected("structure", "protected header must be a map with alg and seq")
        alg = hdr[ALG]
        if not _is_int(alg) or alg not in TAG_LEN:
            alg = "%s" % _kind(alg)  # refused as "alg" once the kid is known
        return device, hdr[SEQ], alg, protected, payload, tag


# ------------------------------------------------------------ SenML
def _bad(device, why):
    return Rejected("structure", why, device)


def number(x, device, what):
    """A SenML number -> (float, exact shortest decimal str)."""
    if _is_int(x):
        if abs(x) >= 1 << 64:
            raise _bad(device, "%s out of range" % what)
        return float(x), str(x)
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            raise _bad(device, "%s not finite" % what)
        return x, repr(x)
    if isinstance(x, Tag) and x.tag == 4 and isinstance(x.value, list) and len(x.value) == 2:
        e, m = x.value
        if _is_int(e) and _is_int(m) and -40 <= e <= 40 and abs(m) < 1 << 64:
            d = Decimal(m).scaleb(e).normalize()
            exact = format(d, "f")
            return float(exact), exact
    raise _bad(device, "%s is %s, not a number" % (what, _kind(x)))


def _when(x, device, what):
    if _is_int(x) or isinstance(x, float):
        if -TIME_LIMIT < x < TIME_LIMIT:
            return x
    raise _bad(device, "%s %s is not a time" % (what, _kind(x)))


def _text(x, device, what, limit=MAX_TEXT):
    """A bounded text with no control characters (PostgreSQL's text holds no NUL)."""
    if isinstance(x, str) and len(x) <= limit and (x.isprintable() or not _CONTROL.search(x)):
        return x
    raise _bad(device, "%s is not a text of at most %d printable characters" % (what, limit))


def _uint(x, device, what, limit=SEQ_LIMIT):
    if _is_int(x) and 0 <= x < limit:
        return x
    raise _bad(device, "%s %s is not an int in [0, %d)" % (what, _kind(x), limit))


def _records(pack, device):
    if not isinstance(pack, list) or not pack:
        raise _bad(device, "a pack is a non-empty array")
    for rec in pack:
        if not isinstance(rec, dict):
            raise _bad(device, "a record is a map")
        for k in rec:
            if k in _INT_LABELS or k in _TEXT_LABELS:
                continue
            if _is_int(k) or k.endswith("_"):  # a label that could change the meaning
                raise _bad(device, "label %s not understood" % (_kind(k) if _is_int(k) else repr(k[:MAX_NAME])))
        if BVER in rec and rec[BVER] != 10:
            raise _bad(device, "SenML version %s" % _kind(rec[BVER]))
        yield rec


def resolve(pack, device, received):
    """RFC 8428 resolution of an uplink pack -> [Reading]."""
    out = []
    bn, bt, bu = "", 0, None
    rid, step = None, 1
    prefix = device + "/"
    for rec in _records(pack, device):
        if BN in rec:
            bn = _text(rec[BN], device, "bn", 2 * MAX_NAME)
        if BT in rec:
            bt = _when(rec[BT], device, "bt")
        if BU in rec:
            bu = _text(rec[BU], device, "bu")
        name = bn + _text(rec.get(N, ""), device, "n", MAX_NAME)
        if not name.startswith(prefix) or not 0 < len(name) - len(prefix) <= MAX_NAME or "/" in name[len(prefix):]:
            raise Rejected("name", "a record not named %s/<channel>" % device, device)
        unit = _text(rec[U], device, "u") if U in rec else bu
        if V not in rec:
            raise _bad(device, "a reading without a numeric value (v)")
        value, exact = number(rec[V], device, "v")
        if "is" in rec:
            step = _uint(rec["is"], device, "is")
            if step == 0:
                raise _bad(device, "id step 0")
        if "i" in rec:
            rid = _uint(rec["i"], device, "i")
        elif rid is None:
            raise _bad(device, "the first record has no id (i)")
        else:
            rid += step
            if rid >= SEQ_LIMIT:
                raise _bad(device, "reading id beyond 2**63")
        flags = _uint(rec.get("flags", 0), device, "flags", 1 << 16)
        t = _when(rec.get(T, 0), device, "t") + bt
        if "undated_" in rec:
            if rec["undated_"] is not True or T in rec or bt:
                raise _bad(device, "undated_ must be true, with no time")
            when, quality = None, "undated"
        elif abs(t) >= RELATIVE:
            when, quality = float(t), "dated"
            if not 0 < t < TIME_LIMIT:
                raise _bad(device, "time before 1970")
        else:
            when, quality = float(received + t), "relative"
        out.append(Reading(device, name[len(prefix):], unit, value, exact, when, quality, flags, rid))
    quality = set(r.quality for r in out)
    if len(quality) > 1 and "undated" in quality:
        raise _bad(device, "undated and dated readings in one pack")
    return out


def resolve_health(pack, device):
    """A health pack -> ({field: number | str}, the node's time or None)."""
    out = {}
    bn, bt, when = "", None, None
    prefix = device + "/health/"
    for rec in _records(pack, device):
        if BN in rec:
            bn = _text(rec[BN], device, "bn", 2 * MAX_NAME)
        if BT in rec:
            bt = _when(rec[BT], device, "bt")
            if when is None and abs(bt) >= RELATIVE:
                when = float(bt)
        name = bn + _text(rec.get(N, ""), device, "n", MAX_NAME)
        field = name[len(prefix):]
        if not name.startswith(prefix) or not 0 < len(field) <= MAX_NAME or "/" in field:
            raise Rejected("name", "a health record not named %s/health/<field>" % device, device)
        if V in rec:
            x = rec[V]
            out[field] = x if _is_int(x) and abs(x) < 1 << 64 else number(x, device, field)[0]
        elif VS in rec:
            out[field] = _text(rec[VS], device, field)
        else:
            raise _bad(device, "health field without v or vs")
    return out, when
