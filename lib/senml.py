"""What a Petrel node sends: SenML (RFC 8428) packs of fixed-point readings, in
CBOR (what goes on the wire) or JSON. This module is the format's reference
(host-only; the node writes the same bytes with uplink.encoder) and its reader.

    p = Pack("p-a1b2c3/", [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)])
    p.add(0, 2153, t, flags=0, id=seq)  # 21.53 Cel; t: Unix s, minus an age, or None
    data = p.cbor()                     # or p.json(); layout="named": n in every record
    decode_cbor(data)                   # [(name, unit, value, time, flags, id)]

Format v2 (agreed with the collector, issue 12 / 19). The message on
`petrel/<device_id>/up` is a COSE_Mac0 (lib/cose.py) whose payload is a SenML
CBOR pack (RFC 8428 section 6): an array of maps, one record per reading.

- Labels: -2 bn, -3 bt, -4 bu, 0 n, 2 v, 6 t, and the text labels "i", "is",
  "flags", "undated_". Base fields apply to the record that carries them and
  to those after it (RFC 8428 section 4.1). A reading's name is
  "<device_id>/<channel>". Keys go out in the order of RFC 8949 section
  4.2.1 (n, v, t, bn, bt, bu, "i", "is", "flags", "undated_"), so a pack is
  deterministic CBOR.
- Values (v): the node measured an int m in 1/scale of the unit; scale is
  2**a * 5**b (1, 2, 4, 5, 8, 10, 16, 20, 25, 100, 1000, 1024, ...), so m/scale
  is a finite decimal. An int when scale divides m, else a decimal fraction
  (RFC 8949 section 3.4.4, CBOR tag 4 [exponent, mantissa], allowed for SenML
  numbers by RFC 8428 section 6) equal to exactly m/scale, the mantissa not a
  multiple of 10: 2153 at scale 100 is c4 82 21 19 08 69 (21.53), 2150 is
  [-1, 215], 2100 is 21. cbor2 reads tag 4 as decimal.Decimal. No floats: the
  node computes it in integers. In JSON the number is the same decimal text.
- Flags: "flags", a uint bitmask, left out when 0: 1 STALE (re-sent by a
  timeout filter), 2 CLAMPED, 4 REPLACED (hampel), lib/filterprog's bits. Not
  must-understand: a reader that ignores it still reads the value.
- Identity: every reading's id is its outbox sequence number (unique per
  device, never reused). Resolution in pack order, step = 1 at first: a
  record with "is" sets step to it; with "i" its id is that; else its id is
  the previous record's + step. The first record always carries "i". The
  node writes nothing when the id is the previous + step, "is" when it is
  above the previous by another step, "i" otherwise (a 60-reading 3-channel
  batch: 25 bytes of ids). The collector stores a reading once per (device,
  name, id): a resend after a lost PUBACK (new COSE seq, perhaps new ages)
  is the same readings.
- Time, one kind per pack:
  dated: the first record carries bt (Unix seconds, its own time) and the
  records t = their time - bt, left out when 0. The node dates a reading of
  the current power-on as soon as its clock is known (those stamped before
  too) and one of an earlier power-on whose clock offset it had recorded.
  relative: no bt; t = minus the reading's age in seconds at encoding
  (<= 0, RFC 8428 section 4.5.3 "relative to now"): only readings of the
  current power-on while its clock is still unknown. A reader dates them at
  its receive time + t (off by the delivery delay; the collector stores them
  with time_quality "relative"); one that processes a message late, from a
  persistent session's backlog, must use the time the message arrived.
  undated: readings the node cannot date (stamped on the clock of an earlier
  power-on that never learnt the wall clock): every record carries
  "undated_": true and no t. The label is must-understand (ends in "_",
  RFC 8428 section 4.4): a reader that does not know it refuses the pack
  rather than misdating it. The collector stores them with no time.
- Layouts (the node's "senml_layout"): "compact" (default): grouped by
  channel in order of first appearance, time order inside (an undated group
  in outbox order); a channel's first record carries bn "<device_id>/<ch>"
  and, when the unit changes, bu; no n. "named": bn "<device_id>/" once and
  n = the channel in every record, for readers that need n everywhere
  (kpn-senml, micropython-lib's senml): about 2.6 bytes a reading more.

A reader that must not lose the exact value decodes tag 4 (cbor2 does); one
that treats v as a double gets m/scale rounded once, as from JSON.
"""

import json

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
# Petrel's own labels (text, as RFC 8428 section 4.4 wants for extensions)
I = "i"  # noqa: E741  the reading's id (outbox sequence number)
IS = "is"  # the id step from here on
FLAGS = "flags"
UNDATED = "undated_"
for _k in (I, IS, FLAGS, UNDATED):
    _JSON[_k] = _k

EPOCH_2000 = 946684800  # Unix time of 2000-01-01, the ESP32 port's epoch
RELATIVE = 1 << 28  # times below this are relative to now (RFC 8428 section 4.5.3)
LAYOUTS = ("compact", "named")


class Dec:
    """An exact decimal m * 10**e, what a CBOR decimal fraction (tag 4) holds:
    compares equal to an int or Dec of the same value; str() is the number."""

    def __init__(self, m, e):
        if m == 0:
            e = 0
        while m and m % 10 == 0:
            m //= 10
            e += 1
        self.m = m
        self.e = e

    def __eq__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            other = Dec(other, 0)
        return isinstance(other, Dec) and self.m == other.m and self.e == other.e

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.m, self.e))

    def __str__(self):
        if self.e >= 0:
            return str(self.m) + "0" * self.e if self.m else "0"
        digits = "%d" % abs(self.m)
        d = -self.e
        digits = "0" * (d + 1 - len(digits)) + digits
        return ("-" if self.m < 0 else "") + digits[:-d] + "." + digits[-d:]

    def __repr__(self):
        return "Dec('%s')" % self

    def __float__(self):
        return float(str(self))


def digits(scale):
    """Decimal places of v/scale, or ValueError: the scale must be 2**a * 5**b."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError("SenML scale must be an int >= 1, got %r" % (scale,))
    s = scale
    for p in (2, 5):
        while s % p == 0:
            s //= p
    if s != 1:
        raise ValueError("SenML scale %d is not 2**a * 5**b: no finite decimal" % scale)
    d = 0
    while 10 ** d % scale:
        d += 1
    return d


def _exact(v, scale):
    """v/scale as (mantissa, exponent), the exponent the largest possible."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError("SenML value must be an int in 1/scale units, got %r" % (v,))
    digits(scale)
    e = 0
    while v % scale:  # ends: scale divides 10**digits(scale)
        v *= 10
        e -= 1
    return v // scale, e


def value(v, scale):
    """The fixed-point v/scale as CBOR will carry it: an int, or the decimal
    fraction cbor.Tag(4, [exponent, mantissa]) (exact, reduced)."""
    m, e = _exact(v, scale)
    return m if e == 0 else cbor.Tag(4, [e, m])


def decimal(v, scale):
    """v/scale as JSON number text, exact."""
    m, e = _exact(v, scale)
    return str(Dec(m, e))


def _check_name(name):
    # RFC 8428 section 4.5.1: [A-Za-z0-9][A-Za-z0-9:./_-]*
    if not name:
        raise ValueError("SenML name is empty")
    for i in range(len(name)):
        c = name[i]
        if not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")
                or (i and c in "-:./_")):
            raise ValueError("SenML name %r: character %r not allowed" % (name, c))


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def kind(t):
    """The time kind of a reading's SenML time: "dated", "relative", "undated"."""
    if t is None:
        return "undated"
    if not _is_int(t):
        raise ValueError("SenML time must be an int or None, got %r" % (t,))
    if t >= RELATIVE:
        return "dated"
    if -RELATIVE < t <= 0:
        return "relative"
    raise ValueError("SenML time %d is neither Unix time nor minus an age" % t)


def records(base_name, readings, layout="compact", conv=value):
    """The pack as a list of records, each a list of (label, value) pairs.

    readings: [(name, unit, value, scale, time, flags, id)] in any order;
    they go out grouped by name in order of first appearance, each group in
    time order. time: Unix seconds, minus the age, or None (undated): one
    kind for all. conv(v, scale) makes the value field (value for CBOR,
    decimal for JSON)."""
    if layout not in LAYOUTS:
        raise ValueError("SenML layout must be 'compact' or 'named'")
    if not isinstance(base_name, str):
        raise ValueError("SenML base name must be a str")
    groups = []
    index = {}
    k = None
    for r in readings:
        if not isinstance(r, tuple) or len(r) != 7:
            raise ValueError("SenML reading must be (name, unit, value, scale, time, flags, id)")
        if not isinstance(r[0], str) or not isinstance(r[1], str) or not r[1]:
            raise ValueError("SenML name and unit must be str (a unit is required)")
        if not _is_int(r[5]) or not 0 <= r[5] < 256 or not _is_int(r[6]) or r[6] < 0:
            raise ValueError("SenML flags must be 0..255 and the id an int >= 0")
        if k is None:
            k = kind(r[4])
        elif kind(r[4]) != k:
            raise ValueError("SenML pack mixes %s and %s times" % (k, kind(r[4])))
        g = index.get(r[0])
        if g is None:
            g = index[r[0]] = len(groups)
            groups.append([])
        groups[g].append(r)
    for g in groups:
        if k != "undated":
            g.sort(key=lambda r: r[4])
    out = []
    base = groups[0][0][4] if k == "dated" else 0
    unit = None
    last = None
    step = 1
    for g in groups:
        name = g[0][0]
        _check_name(base_name + name)
        for j in range(len(g)):
            _, u, v, scale, t, flags, id_ = g[j]
            rec = []
            if layout == "named":
                rec.append((N, name))
            rec.append((V, conv(v, scale)))
            if k != "undated" and t != base:
                rec.append((T, t - base))
            if layout == "named" and not out:
                rec.append((BN, base_name))
            elif layout == "compact" and j == 0:
                rec.append((BN, base_name + name))
            if k == "dated" and not out:
                rec.append((BT, base))
            if u != unit:
                rec.append((BU, u))
                unit = u
            if last is None or id_ <= last:
                rec.append((I, id_))
            elif id_ - last != step:
                step = id_ - last
                rec.append((IS, step))
            last = id_
            if flags:
                rec.append((FLAGS, flags))
            if k == "undated":
                rec.append((UNDATED, True))
            out.append(rec)
    return out


def encode_cbor(base_name, readings, layout="compact"):
    return cbor.dumps([cbor.Map(r) for r in records(base_name, readings, layout)])


def encode_json(base_name, readings, layout="compact"):
    parts = []
    for rec in records(base_name, readings, layout, decimal):
        fields = []
        for k, v in rec:
            if k == V:
                pass  # already number text
            elif v is True:
                v = "true"
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
            digits(ch[2])
        self.base_name = base_name
        self.channels = channels
        self.readings = []

    def add(self, ch, v, t, flags=0, id=None):  # noqa: A002  (the format's word)
        """Channel ch's value v (int, 1/scale units) at SenML time t (Unix
        seconds, minus the age, or None: undated), its filter flags and id
        (None: the previous reading's id + 1, 1 for the first)."""
        if not isinstance(ch, int) or not 0 <= ch < len(self.channels):
            raise ValueError("SenML channel %r not in 0..%d" % (ch, len(self.channels) - 1))
        if not _is_int(v):
            raise ValueError("SenML value must be an int in 1/scale units, got %r" % (v,))
        kind(t)
        if id is None:
            id = self.readings[-1][6] + 1 if self.readings else 1
        name, unit, scale = self.channels[ch]
        self.readings.append((name, unit, v, scale, t, flags, id))

    def __len__(self):
        return len(self.readings)

    def clear(self):
        self.readings = []

    def cbor(self, layout="compact"):
        return encode_cbor(self.base_name, self.readings, layout)

    def json(self, layout="compact"):
        return encode_json(self.base_name, self.readings, layout)


# ---------------------------------------------------------------- reading
def resolve(pack):
    """Records (maps keyed by label) -> [(name, unit, value, time, flags, id)]
    by RFC 8428 section 4.6 and the labels above. value: int, float, Dec
    (a decimal fraction, exact), str, bool or bytes; time: bt + t (Unix
    seconds, or relative to now when < 2**28), None when undated; id None in
    a pack without ids (the health record). Any other must-understand label
    refuses the pack (ValueError)."""
    if not isinstance(pack, list):
        raise ValueError("SenML pack must be an array")
    bn = ""
    bt = 0
    bu = None
    bv = 0
    last = None
    step = 1
    out = []
    for rec in pack:
        if not isinstance(rec, dict):
            raise ValueError("SenML record must be a map")
        for k in rec:
            if isinstance(k, str) and k.endswith("_") and k != UNDATED:
                raise ValueError("SenML must-understand field %r not supported" % k)
        bn = _field(rec, BN, str, bn)
        bt = _number(rec, BT, bt)
        bu = _field(rec, BU, str, bu)
        bv = _number(rec, BV, bv)
        name = bn + _field(rec, N, str, "")
        _check_name(name)
        unit = _field(rec, U, str, bu)
        t = bt + _number(rec, T, 0)
        if UNDATED in rec:
            if rec[UNDATED] is not True or T in rec or BT in rec:
                raise ValueError("SenML undated_ must be true, in a record without a time")
            t = None
        if V in rec:
            v = _number(rec, V, 0)
            if bv:
                if isinstance(v, Dec) or isinstance(bv, Dec):
                    raise ValueError("SenML base value with a decimal fraction: not supported")
                v += bv
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
        flags = _field(rec, FLAGS, int, 0)
        step = _field(rec, IS, int, step)
        if I in rec:
            last = _field(rec, I, int, 0)
        elif last is not None:
            last += step
        elif IS in rec:
            raise ValueError("SenML is without a first i")
        if flags < 0 or step < 1 or last is not None and last < 0:
            raise ValueError("SenML flags, i and is must be uints (is >= 1)")
        out.append((name, unit, v, t, flags, last))
    return out


def _field(rec, label, types, default):
    if label not in rec:
        return default
    v = rec[label]
    if isinstance(v, bool) and types is not bool:
        raise ValueError("SenML field %s has the wrong type" % _JSON.get(label, label))
    if not isinstance(v, types):
        raise ValueError("SenML field %s has the wrong type" % _JSON.get(label, label))
    return v


def _number(rec, label, default):
    """A number field: int, float, or a decimal fraction (tag 4) as Dec."""
    if label not in rec:
        return default
    v = rec[label]
    if isinstance(v, cbor.Tag) and v.tag == 4:
        x = v.value
        if not (isinstance(x, list) and len(x) == 2 and _is_int(x[0]) and _is_int(x[1])
                and -400 < x[0] < 400):
            raise ValueError("SenML field %s: a decimal fraction is [int, int], |exponent| < 400"
                             % _JSON[label])
        return Dec(x[1], x[0])
    return _field(rec, label, (int, float), default)


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
