"""Wire format v2 messages written with cbor2 and Python's hmac, independent of
the node's encoder: for the verifier's and the store's tests, the fuzz
campaign and anyone who needs a valid message without a node.

    data = up(key, "p-A", seq=7, readings=[("t", "Cel", 2153, 100, 1767225600, 40)])
    data = up(key, "p-A", 8, [("t", "Cel", 2153, 100, -30, 41)], time="relative")
    data = health(key, "p-A", 9, {"fw": "0.7.0", "batt": 3010, "uplink_s": 3600}, bt=1767225600)

A reading is (channel, unit, m, scale, time, rid[, flags]): the value is m/scale,
time is Unix seconds ("dated"), minus the age ("relative") or ignored
("undated"); the pack is laid out as format.md says ("compact": grouped by
channel with bn per channel; "named": bn "<device>/" once and n in every record).
"""

import hashlib
import hmac
from decimal import Decimal

import cbor2


def value(m, scale):
    """m/scale as the node sends it: an int, or a reduced decimal fraction (tag 4)."""
    if m % scale == 0:
        return m // scale
    d = (Decimal(m) / Decimal(scale)).normalize()  # exact: scale is 2^a 5^b
    sign, digits, e = d.as_tuple()
    mant = int("".join(map(str, digits))) * (-1 if sign else 1)
    return cbor2.CBORTag(4, [e, mant])


def pack(device, readings, time="dated", layout="compact"):
    """The SenML CBOR payload of readings."""
    rows = sorted(readings, key=lambda r: (r[0], r[4] if time != "undated" else 0))
    order = []
    for r in rows:
        if r[0] not in order:
            order.append(r[0])
    rows = [r for ch in order for r in rows if r[0] == ch]
    out = []
    bt = rows[0][4] if time == "dated" else None
    last_rid, step, unit = None, 1, None
    for k, r in enumerate(rows):
        ch, u, m, scale, t, rid = r[:6]
        flags = r[6] if len(r) > 6 else 0
        rec = {}
        if layout == "named":
            if k == 0:
                rec[-2] = device + "/"
            rec[0] = ch
        elif k == 0 or rows[k - 1][0] != ch:
            rec[-2] = "%s/%s" % (device, ch)
        if u != unit:
            rec[-4] = unit = u
        if k == 0 and bt is not None:
            rec[-3] = bt
        rec[2] = value(m, scale)
        if time == "dated" and t - bt:
            rec[6] = t - bt
        elif time == "relative" and t:
            rec[6] = t
        elif time == "undated":
            rec["undated_"] = True
        if last_rid is None or rid != last_rid + step:
            if last_rid is not None and rid > last_rid:
                step = rid - last_rid
                rec["is"] = step
            else:
                rec["i"] = rid
        last_rid = rid
        if flags:
            rec["flags"] = flags
        out.append(rec)
    return cbor2.dumps(out)


def mac0(key, device, seq, payload, alg=5):
    """COSE_Mac0 (tag 17) of payload under key, kid = device."""
    protected = cbor2.dumps({1: alg, -65537: seq})
    tag = hmac.new(key, cbor2.dumps(["MAC0", protected, b"", payload]), hashlib.sha256).digest()
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {4: device.encode()}, payload, tag[:8 if alg == 4 else 32]]))


def up(key, device, seq, readings, time="dated", layout="compact"):
    return mac0(key, device, seq, pack(device, readings, time, layout))


def health_pack(device, fields, bt=None):
    out = []
    for k, (name, v) in enumerate(sorted(fields.items())):
        rec = {0: name}
        if k == 0:
            rec[-2] = device + "/health/"
            if bt is not None:
                rec[-3] = bt
        rec[3 if isinstance(v, str) else 2] = v
        out.append(rec)
    return cbor2.dumps(out)


def health(key, device, seq, fields, bt=None):
    return mac0(key, device, seq, health_pack(device, fields, bt))
