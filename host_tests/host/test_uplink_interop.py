"""The node's real messages, made on the MicroPython VM by uplink.drain and
uplink.encoder from a real outbox, read by code that is not Petrel's: cbor2,
pycose and Python's hmac for COSE_Mac0, a SenML resolver written here from
RFC 8428 section 4.6 alone (and the same with format v2's labels, from the
format's text), and kpn-senml. Every resolved record must be what the node
measured: name, unit, exact value (Decimal), time or undated, flags, id; the
resend after a lost PUBACK is the same readings (same ids) under a new COSE
sequence number. The interop table (reader x kind of pack) is printed
(pytest -s) and asserted."""

import hashlib
import hmac
import re
from decimal import Decimal, Inexact, localcontext
from fractions import Fraction

import cbor2
import pytest
from kpn_senml import SenmlPack
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

from petrel.vm import run_source as run_vm

KEY = bytes(range(40, 72))
DEV = "p-a1b2c3"
CH = [("t", "Cel", 100), ("h", "%RH", 1024), ("p", "Pa", 1), ("v", "V", 1000)]
U = 1767225600
NODE_NOW = (1300, 1600)  # the node's RTC seconds at the first drain (PUBACKs lost) and the second
RECEIVED = (U + 20000, U + 20300)  # when the reader got each drain's messages: no delivery delay

NODE = """
import sys, machine, vfs
from norflash import NorFlash
import outbox, rtcmem, seqcounter, uplink

layout = sys.argv[1]
dev = NorFlash(64)
vfs.VfsLfs2.mkfs(dev.block_device())
vfs.mount(vfs.VfsLfs2(dev.block_device()), "/fl")
ob = outbox.Outbox("/fl/ob")
counter = seqcounter.SeqCounter("/fl/seq", rtcmem.Region(machine.RTC(), 1344, 64))
CH = %r
U = %d


class Clock:
    # clock.Clock's senml_time(stamp, seq) contract with its answers set here:
    # readings of a power-on that never learnt the wall clock (seq in undated)
    # cannot be dated; stamps >= 2**28 are Unix time; the others are RTC
    # seconds of this power-on, sent as minus their age at now
    def __init__(self):
        self.now = 0
        self.undated = set()

    def senml_time(self, stamp, seq=None):
        if seq in self.undated:
            return None
        return stamp if stamp >= 1 << 28 else stamp - self.now


class Client:
    window = 4

    def __init__(self, lose):
        self.lose = lose
        self.acked = []
        self.pid = 0

    def publish(self, topic, msg, qos=0):
        self.pid += 1
        print("M", drain, msg.hex())
        if not self.lose:
            self.acked.append(self.pid)
        return self.pid

    def wait_all(self):
        if self.lose:
            raise OSError(110)  # the PUBACKs never came


clk = Clock()
for kind, t0 in (("undated", 5000), ("relative", 100), ("dated", U)):
    for i in range(4):  # samples 300 s apart, a reading per channel
        values = (2153 + 7 * i, 46081 + 517 * i, 100325 - 3 * i, 3712 - i)
        values = [(-505, 2 ** 31 - 1, 0, -2 ** 31)[c] if i == 2 and kind == "dated" else values[c] for c in range(4)]
        for c in range(4):
            flags = {(0, 1): 2, (1, 2): 4, (2, 3): 1, (3, 0): 5}.get((c, i), 0)
            seq = ob.append(uplink.pack_reading(c, values[c], flags), t0 + 300 * i)
            if kind == "undated":
                clk.undated.add(seq)
            print("R", seq, c, values[c], flags, t0 + 300 * i, kind)
enc = uplink.encoder("p-a1b2c3", CH, bytes(range(40, 72)), counter, clk, layout=layout)
for drain, lose, now in ((1, True, %d), (2, False, %d)):
    clk.now = now
    try:
        uplink.drain(Client(lose), ob, "petrel/p-a1b2c3/up", enc, batch=36, kind=uplink.time_kind(clk))
    except OSError as e:
        print("LOST", e)
print("LEFT", len(ob), "REJECTED", enc.rejected)
""" % (CH, U, NODE_NOW[0], NODE_NOW[1])


@pytest.fixture(scope="module")
def node():
    """Per layout: ({seq: (channel, value, flags, stamp, kind)}, [(drain, message)])."""
    out = {}
    for layout in ("compact", "named"):
        rc, text = run_vm(NODE, [layout], timeout=120, sim=True)
        assert rc == 0 and "LEFT 0 REJECTED 0" in text, text
        measured, msgs = {}, []
        for line in text.splitlines():
            f = line.split()
            if f[:1] == ["R"]:
                measured[int(f[1])] = (int(f[2]), int(f[3]), int(f[4]), int(f[5]), f[6])
            elif f[:1] == ["M"]:
                msgs.append((int(f[1]), bytes.fromhex(f[2])))
        assert len(measured) == 48 and len(msgs) == 6, text
        out[layout] = (measured, msgs)
    return out


# ------------------------------------------------------------------ COSE, not Petrel's code
def open_cose(data):
    """-> (COSE seq, payload), verified by pycose and by hmac over the MAC_structure."""
    tag = cbor2.loads(data)
    assert tag.tag == 17
    p, u, payload, t = tag.value
    msg = Mac0Message.from_cose_obj([p, dict(u), payload, t], True)
    msg.key = SymmetricKey(k=KEY)
    assert msg.verify_tag()
    mac = hmac.new(KEY, cbor2.dumps(["MAC0", p, b"", payload]), hashlib.sha256).digest()
    assert hmac.compare_digest(mac, t)
    header = cbor2.loads(p)
    assert header[1] == 5 and dict(u) == {4: DEV.encode()}
    return header[-65537], payload


# ------------------------------------------------------------------ SenML readers
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*\Z")  # RFC 8428 section 4.5.1


def rfc8428(pack, now, v2=False):
    """Resolved records, RFC 8428 section 4.6: base fields added in, relative
    times (< 2**28) made absolute with the receiver's now (4.5.3), a pack with
    a must-understand label (ending in "_") this reader does not know refused
    (4.4). v2: also format v2's labels: "undated_" (no time), "flags", and
    ids ("i" sets the id, "is" the step, else previous id + step)."""
    out = []
    bn, bt, bu, bv = "", 0, None, 0
    last, step = None, 1
    for rec in pack:
        for k in rec:
            if isinstance(k, str) and k.endswith("_") and not (v2 and k == "undated_"):
                raise ValueError("must-understand label %r" % k)
        bn, bt, bu, bv = rec.get(-2, bn), rec.get(-3, bt), rec.get(-4, bu), rec.get(-5, bv)
        name = bn + rec.get(0, "")
        if not NAME.match(name):
            raise ValueError("bad name %r" % name)
        r = {"name": name, "unit": rec.get(1, bu), "value": rec[2] + bv if 2 in rec else bv}
        t = bt + rec.get(6, 0)
        r["time"] = now + t if t < 2 ** 28 else t
        if v2:
            if rec.get("undated_") is True:
                r["time"] = None
            step = rec.get("is", step)
            last = rec["i"] if "i" in rec else last + step
            r["flags"], r["id"] = rec.get("flags", 0), last
        out.append(r)
    return out


def kpn(payload, now):
    """kpn-senml 1.0.1: what its pack holds after from_cbor."""
    pack = SenmlPack("")
    pack.from_cbor(payload)
    out = []
    for dev in pack._data:
        for rec in getattr(dev, "_data", [dev]):
            out.append({"name": dev.name + rec.name if dev is not rec else rec.name, "unit": rec.unit,
                        "value": rec.value, "time": rec.time})
    return out


def petrel(payload, now):
    """lib/senml's own reader (not independent: for comparison)."""
    import senml

    out = []
    for name, unit, v, t, flags, id_ in senml.decode_cbor(payload):
        out.append({"name": name, "unit": unit, "value": Decimal(str(v)) if isinstance(v, senml.Dec) else v,
                    "time": None if t is None else now + t if t < 2 ** 28 else t, "flags": flags, "id": id_})
    return out


READERS = {
    "RFC 8428 4.6, strict": lambda payload, now: rfc8428(cbor2.loads(payload), now),
    "RFC 8428 4.6 + v2 labels": lambda payload, now: rfc8428(cbor2.loads(payload), now, v2=True),
    "kpn-senml 1.0.1": kpn,
    "Petrel lib/senml": petrel,
}
KINDS = ("undated", "relative", "dated")  # a drain's messages, in outbox order


def expected(measured, kind, drain):
    """The readings of one kind as a reader must get them: as the node measured them."""
    out = []
    for seq in sorted(measured):
        c, v, flags, stamp, k = measured[seq]
        if k != kind:
            continue
        name, unit, scale = CH[c]
        with localcontext() as ctx:
            ctx.traps[Inexact] = True
            value = Decimal(v) / Decimal(scale)
        # a relative stamp: the reader's receive time + (stamp - the node's now)
        time = {"dated": stamp, "relative": RECEIVED[drain - 1] + stamp - NODE_NOW[drain - 1],
                "undated": None}[kind]
        out.append({"name": DEV + "/" + name, "unit": unit, "value": value, "time": time, "flags": flags,
                    "id": seq})
    return out


def verdict(reader, payload, kind, drain, measured):
    """ok / refuses / misreads: all of the message's readings exactly, in what
    the reader gives (a reader without ids or flags: name, unit, value, time)."""
    try:
        got = READERS[reader](payload, RECEIVED[drain - 1])
    except Exception:
        return "refuses"
    want = expected(measured, kind, drain)
    keys = sorted(got[0]) if got else ["name"]

    def key(r):  # exact: the Fraction of a float that approximates a value is not the value's
        return repr([Fraction(r[k]) if k == "value" and r[k] is not None else r[k] for k in keys])
    return "ok" if sorted(map(key, got)) == sorted(map(key, want)) else "misreads"


def messages(node, layout):
    """[(drain, kind, COSE seq, payload)] of one layout, every message verified."""
    out = []
    for j, (drain, data) in enumerate(node[layout][1]):
        seq, payload = open_cose(data)
        out.append((drain, KINDS[j % 3], seq, payload))
    return out


def test_every_reading_resolves_to_exactly_what_the_node_measured(node):
    for layout in ("compact", "named"):
        measured = node[layout][0]
        msgs = messages(node, layout)
        seqs = [m[2] for m in msgs]
        assert seqs == sorted(set(seqs)), seqs  # the COSE sequence number never repeats
        for drain, kind, _, payload in msgs:
            got = rfc8428(cbor2.loads(payload), RECEIVED[drain - 1], v2=True)
            assert sorted(got, key=lambda r: r["id"]) == expected(measured, kind, drain), (layout, kind, drain)
            assert all(type(r["value"]) in (int, Decimal) for r in got)
        flagged = {s: m[2] for s, m in measured.items() if m[2]}
        assert len(flagged) == 12  # every kind has its flagged readings, and they arrived flagged


def test_a_resend_after_a_lost_puback_is_the_same_readings(node):
    for layout in ("compact", "named"):
        msgs = messages(node, layout)
        stored = {}
        for (d1, k1, s1, p1), (d2, k2, s2, p2) in zip(msgs[:3], msgs[3:]):
            assert (d1, d2, k1) == (1, 2, k2) and s2 > s1  # a new COSE seq
            a = rfc8428(cbor2.loads(p1), RECEIVED[0], v2=True)
            b = rfc8428(cbor2.loads(p2), RECEIVED[1], v2=True)
            assert [r["id"] for r in a] == [r["id"] for r in b]
            assert a == b  # relative readings too: older by 300 s, received 300 s later
            if k1 == "relative":
                t1 = [r.get(6, 0) for r in cbor2.loads(p1)]
                assert [t - 300 for t in t1] == [r.get(6, 0) for r in cbor2.loads(p2)]
            for r in a + b:  # the collector's rule: one reading per (device, name, id)
                stored.setdefault((r["name"], r["id"]), r)
        assert len(stored) == 48 and {i for _, i in stored} == set(node[layout][0])


def test_both_layouts_resolve_to_the_same_readings(node):
    a, b = messages(node, "compact"), messages(node, "named")
    for (_, _, _, pa), (_, _, _, pb) in zip(a, b):
        assert rfc8428(cbor2.loads(pa), 0, v2=True) == rfc8428(cbor2.loads(pb), 0, v2=True)
        assert len(pb) > len(pa)


EXPECTED_TABLE = {
    # the strict reader refuses undated packs (must-understand undated_), as designed;
    # kpn-senml needs n in every record (compact) and refuses tag 4 values (named)
    "RFC 8428 4.6, strict": ["ok", "ok", "ok", "ok", "refuses", "refuses"],
    "RFC 8428 4.6 + v2 labels": ["ok"] * 6,
    "kpn-senml 1.0.1": ["refuses"] * 6,
    "Petrel lib/senml": ["ok"] * 6,
}


def test_interop_table(node):
    cols = [(k, layout) for k in ("dated", "relative", "undated") for layout in ("compact", "named")]
    table = {}
    for reader in READERS:
        row = []
        for kind, layout in cols:
            cells = {verdict(reader, p, k, d, node[layout][0]) for d, k, _, p in messages(node, layout)
                     if k == kind}
            row.append(cells.pop() if len(cells) == 1 else "/".join(sorted(cells)))
        table[reader] = row
    print("\n%-26s" % "reader" + "".join("%-19s" % ("%s %s" % c) for c in cols))
    for reader, row in table.items():
        print("%-26s" % reader + "".join("%-19s" % c for c in row))
    assert table == EXPECTED_TABLE
