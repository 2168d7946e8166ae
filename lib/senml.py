"""SenML (RFC 8428) packs of fixed-point readings, in CBOR (few bytes) or JSON.

    p = Pack("p-a1b2c3/", [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)])
    p.add(0, 2153, t)           # channel 0: 21.53 Cel at Unix time t (seconds)
    data = p.cbor()             # or p.json(); p.cbor(now=n): times on the node's own clock
    decode_cbor(data)           # [(name, unit, value, time)], base fields resolved

Layout, chosen for bytes on the wire: records go channel by channel, oldest
first, and each record is only {v, t}. The first record of a channel carries
the base name (the pack's base name + the channel name: "p-a1b2c3/t") and the
base unit (required), so a reading costs about 11 bytes (a float32 value,
t < 65536), against 14 with n in every record and 17-19 with n and u too.
The first record also carries the base time (its own time); t is then a
small offset in seconds, left out when 0. Base fields apply to the records
after them, so any SenML reader resolves this. `names="n"` gives the textbook
layout instead: the base name once, n in every record.

Values are ints in 1/scale of the unit. Each goes out as the smallest exact
form: an int when the scale divides it, else a float (float16 when exact,
float32 when it reads back within half a unit of the scale, else float64; on
the ESP32, whose floats are float32, never float64).

Time: absolute times are Unix seconds (the ESP32's time.time() counts from
2000: add EPOCH_2000). A node that does not know the wall clock yet stamps its
readings on its own clock and passes that clock's `now` at send: there is then
no base time and each t is the (negative) age of the reading, which RFC 8428
reads as relative to the receiver's now (any time < 2**28 is relative).
"""

import json
import struct

import cbor

# CBOR labels, RFC 8428 section 6
BVER = -1
BN = -2
BT = -3
BU = -4
BV = -5
BS = -6
N = 0
U = 1
V = 2
VS = 3
VB = 4
S = 5
T = 6
UT = 7
VD = 8
_JSON = {BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", BS: "bs", N: "n", U: "u",
         V: "v", VS: "vs", VB: "vb", S: "s", T: "t", UT: "ut", VD: "vd"}
_LABEL = {}
for _k in _JSON:
    _LABEL[_JSON[_k]] = _k

EPOCH_2000 = 946684800  # Unix time of 2000-01-01, the ESP32 port's epoch
RELATIVE = 1 << 28  # times below this are relative to now (RFC 8428 section 4.5.3)
_F32_MAX = 3.4028234663852886e38


def value(v, scale):
    """The fixed-point v/scale as the smallest exact int or float."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError("SenML value must be an int in 1/scale units, got %r" % (v,))
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError("SenML scale must be an int >= 1, got %r" % (scale,))
    if v % scale == 0:
        return v // scale
    try:
        x = v / scale
    except OverflowError:
        raise ValueError("SenML value %d/%d too large" % (v, scale))
    if -_F32_MAX <= x <= _F32_MAX:
        f = struct.unpack(">f", struct.pack(">f", x))[0]
        if abs(f * scale - v) < 0.5:
            return f  # cbor picks float16 if f happens to be one exactly
    return x


def decimal(v, scale):
    """v/scale as JSON number text: exact digits when scale is a power of ten."""
    value(v, scale)
    d = 0
    s = scale
    while s % 10 == 0:
        s //= 10
        d += 1
    if s != 1:
        return repr(value(v, scale))
    if d == 0:
        return str(v)
    digits = "%d" % abs(v)
    digits = "0" * (d + 1 - len(digits)) + digits
    frac = digits[-d:]
    while frac and frac[-1] == "0":
        frac = frac[:-1]
    return ("-" if v < 0 else "") + digits[:-d] + ("." + frac if frac else "")


def _check_name(name):
    # RFC 8428 section 4.5.1: [A-Za-z0-9][A-Za-z0-9:./_-]*
    if not name:
        raise ValueError("SenML name is empty")
    for i in range(len(name)):
        c = name[i]
        if not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")
                or (i and c in "-:./_")):
            raise ValueError("SenML name %r: character %r not allowed" % (name, c))


def records(base_name, readings, now=None, names="bn", conv=value):
    """The pack as a list of records, each a list of (label, value) pairs.

    readings: [(name, unit, value, scale, time)] in any order; they go out
    grouped by name in order of first appearance, each group in time order.
    now: None when times are Unix seconds, else the node clock's now.
    conv(v, scale) makes the value field (value for CBOR, decimal for JSON)."""
    if names not in ("bn", "n"):
        raise ValueError("SenML names must be 'bn' or 'n'")
    if not isinstance(base_name, str):
        raise ValueError("SenML base name must be a str")
    groups = []
    index = {}
    for r in readings:
        if not isinstance(r, tuple) or len(r) != 5:
            raise ValueError("SenML reading must be (name, unit, value, scale, time)")
        if not isinstance(r[0], str) or not isinstance(r[1], str) or not r[1]:
            raise ValueError("SenML name and unit must be str (a unit is required)")
        if not isinstance(r[4], int) or isinstance(r[4], bool):
            raise ValueError("SenML time must be an int, got %r" % (r[4],))
        g = index.get(r[0])
        if g is None:
            g = index[r[0]] = len(groups)
            groups.append([])
        groups[g].append(r)
    if now is not None and (not isinstance(now, int) or isinstance(now, bool)):
        raise ValueError("SenML now must be an int")
    for g in groups:
        g.sort(key=lambda r: r[4])
    out = []
    base = None
    if groups and now is None:
        base = groups[0][0][4]  # the first record's time
    unit = None
    for g in groups:
        name = g[0][0]
        _check_name(base_name + name)
        for j in range(len(g)):
            _, u, v, scale, t = g[j]
            if now is None and t < RELATIVE:
                raise ValueError("SenML time %d is not Unix time (pass now= for relative)" % t)
            rec = []
            if not out:
                if names == "n":
                    rec.append((BN, base_name))
                if base is not None:
                    rec.append((BT, base))
            if j == 0 and names == "bn":
                rec.append((BN, base_name + name))
            if u != unit:
                rec.append((BU, u))
                unit = u
            if names == "n":
                rec.append((N, name))
            rec.append((V, conv(v, scale)))
            dt = t - base if base is not None else t - now
            if now is not None and not -RELATIVE < dt < RELATIVE:
                raise ValueError("SenML relative time %d out of range" % dt)
            if dt:
                rec.append((T, dt))
            out.append(rec)
    return out


def encode_cbor(base_name, readings, now=None, names="bn"):
    return cbor.dumps([cbor.Map(r) for r in records(base_name, readings, now, names)])


def encode_json(base_name, readings, now=None, names="bn"):
    parts = []
    for rec in records(base_name, readings, now, names, decimal):
        fields = []
        for k, v in rec:
            if k == V:
                pass  # already number text
            elif isinstance(v, str):
                v = json.dumps(v)
            else:
                v = str(v)
            fields.append('"%s":%s' % (_JSON[k], v))
        parts.append("{" + ",".join(fields) + "}")
    return "[" + ",".join(parts) + "]"


class Pack:
    """Readings of a few channels [(name, unit, scale)] for one uplink batch."""

    def __init__(self, base_name, channels):
        for ch in channels:
            _check_name(base_name + ch[0])
            value(0, ch[2])
        self.base_name = base_name
        self.channels = channels
        self.readings = []

    def add(self, ch, v, t):
        if not isinstance(ch, int) or not 0 <= ch < len(self.channels):
            raise ValueError("SenML channel %r not in 0..%d" % (ch, len(self.channels) - 1))
        value(v, 1)  # an int, or ValueError now rather than at send
        name, unit, scale = self.channels[ch]
        self.readings.append((name, unit, v, scale, t))

    def __len__(self):
        return len(self.readings)

    def clear(self):
        self.readings = []

    def cbor(self, now=None, names="bn"):
        return encode_cbor(self.base_name, self.readings, now, names)

    def json(self, now=None, names="bn"):
        return encode_json(self.base_name, self.readings, now, names)


# ---------------------------------------------------------------- reading
def resolve(pack):
    """Records (dicts keyed by CBOR label) -> [(name, unit, value, time)].
    time is bt + t: Unix seconds, or relative to now when < 2**28."""
    if not isinstance(pack, list):
        raise ValueError("SenML pack must be an array")
    bn = ""
    bt = 0
    bu = None
    bv = 0
    out = []
    for rec in pack:
        if not isinstance(rec, dict):
            raise ValueError("SenML record must be a map")
        for k in rec:
            if isinstance(k, str) and k.endswith("_"):
                raise ValueError("SenML must-understand field %r not supported" % k)
        bn = _field(rec, BN, str, bn)
        bt = _field(rec, BT, (int, float), bt)
        bu = _field(rec, BU, str, bu)
        bv = _field(rec, BV, (int, float), bv)
        name = bn + _field(rec, N, str, "")
        _check_name(name)
        unit = _field(rec, U, str, bu)
        t = bt + _field(rec, T, (int, float), 0)
        if V in rec:
            v = bv + _field(rec, V, (int, float), 0)
        elif VS in rec:
            v = _field(rec, VS, str, "")
        elif VB in rec:
            v = _field(rec, VB, bool, False)
        elif VD in rec:
            v = _field(rec, VD, bytes, b"")
        elif S in rec:
            v = None  # a sum only
        else:
            v = bv  # RFC 8428: a missing value is the base value
        out.append((name, unit, v, t))
    return out


def _field(rec, label, types, default):
    if label not in rec:
        return default
    v = rec[label]
    if isinstance(v, bool) and types is not bool:
        raise ValueError("SenML field %s has the wrong type" % _JSON[label])
    if not isinstance(v, types):
        raise ValueError("SenML field %s has the wrong type" % _JSON[label])
    return v


def decode_cbor(data):
    return resolve(cbor.loads(data))


def decode_json(text):
    try:
        pack = json.loads(text)
    except Exception:
        raise ValueError("SenML JSON does not parse")
    if not isinstance(pack, list):
        raise ValueError("SenML pack must be an array")
    out = []
    for rec in pack:
        if not isinstance(rec, dict):
            raise ValueError("SenML record must be an object")
        r = {}
        for k in rec:
            r[_LABEL.get(k, k)] = rec[k]
        out.append(r)
    return resolve(out)
