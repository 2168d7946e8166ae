"""Fuzz the collector's verifier (tools/petrel/verify.py) and store: mutated
valid v2 messages (bit flips, truncation, splices, every field swapped for
other types, huge ints and lengths, deep nesting; structural mutations are
re-MACed with the right key so they reach the SenML reader) and random bytes.
Whatever comes in must be answered with a Message or a Rejected within
MAX_S, the process must not grow, and what is accepted must be sane and
commit (into SQLite) or be refused as duplicate/replay.

    .venv/bin/python host_tests/fuzz_collector.py --inputs 100000 --seed 1   # make fuzz-collector

host/test_verify_fuzz.py runs a slice of it in make test.
"""

import argparse
import hashlib
import hmac
import math
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import cbor2  # noqa: E402

from petrel import store, testmsg  # noqa: E402
from petrel.verify import SEQ_LIMIT, Rejected, Verifier  # noqa: E402

MAX_S = 0.1
KEYS = {"p-A": b"a" * 31 + b"1", "p-B": b"b" * 31 + b"2"}
T0 = 1767225600


def _nest(depth, leaf=0):
    x = leaf
    for k in range(depth):
        x = [x] if k % 2 else {1: x}
    return x


ODD = [0, 1, -1, 23, 24, 255, 256, 65536, (1 << 31), (1 << 32), (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(1 << 64),
       1 << 200, 0.5, -0.0, 1e300, -1e300, float("nan"), float("inf"), 21.53, "", "x", "p-A/t", "p-A/t\x00", "é" * 40,
       "y" * 70000, b"", b"\x00", b"z" * 300, True, False, None, [], {}, [1, 2], {"a": 1}, _nest(40), _nest(8, "s"),
       cbor2.CBORTag(4, [-2, 2153]), cbor2.CBORTag(4, [1 << 40, 1]), cbor2.CBORTag(4, ["a", 1]),
       cbor2.CBORTag(4, [-1]), cbor2.CBORTag(2, b"\xff" * 200), cbor2.CBORTag(1, 0), cbor2.CBORTag(17, []),
       cbor2.CBORTag(28, [1]), cbor2.CBORTag(258, [1, 2]), cbor2.CBORTag(24, b"\x80")]



def _fresh(x):
    if isinstance(x, list):
        return [_fresh(y) for y in x]
    if isinstance(x, dict):
        return dict((k, _fresh(y)) for k, y in x.items())
    return x


def odd(rng):
    """An odd value, its lists and maps fresh (mutations must not change the table)."""
    return _fresh(rng.choice(ODD))


LABELS = [-2, -3, -4, 0, 1, 2, 3, 4, 6, -1, -5, -6, 5, 7, 8, "i", "is", "flags", "undated_", "n_", "x"]


def seeds(rng):
    """A few valid messages of every kind (layouts, times, health)."""
    out = []
    for seq in range(1, 9):
        dev = "p-A" if seq % 2 else "p-B"
        n = rng.choice((1, 3, 20, 60))
        rows = [(rng.choice("thp"), rng.choice(("Cel", "%RH", "Pa", "V")), rng.randrange(-5000, 5000),
                 rng.choice((1, 2, 10, 16, 100, 1000)), T0 + 60 * i if seq % 3 == 0 else -60 * i, 100 * seq + i,
                 rng.choice((0, 0, 1, 6))) for i in range(n)]
        time_kind = ("relative", "undated", "dated")[seq % 3]
        payload = testmsg.pack(dev, rows, time=time_kind, layout=rng.choice(("compact", "named")))
        out.append(("petrel/%s/up" % dev, dev, payload))
        hp = testmsg.health_pack(dev, {"fw": "0.7.0", "batt": 3000 + seq, "q": seq, "uplink_s": 3600},
                                 bt=T0 if seq % 2 else None)
        out.append(("petrel/%s/health" % dev, dev, hp))
    return out


def _seal(dev, seq, payload, alg=5, kid=None, tag=None):
    protected = cbor2.dumps({1: alg, -65537: seq})
    if tag is None:
        tag = hmac.new(KEYS[dev], cbor2.dumps(["MAC0", protected, b"", payload]), hashlib.sha256).digest()
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {4: dev.encode() if kid is None else kid}, payload, tag]))


def _mutate_pack(rng, payload):
    pack = cbor2.loads(payload)
    for _ in range(rng.choice((1, 1, 2, 3))):
        what = rng.random()
        if not pack or what < 0.05:
            pack = odd(rng)
            break
        k = rng.randrange(len(pack))
        rec = pack[k]
        if what < 0.1:
            pack[k] = odd(rng)
        elif what < 0.15:
            pack.insert(rng.randrange(len(pack) + 1), dict(rec) if isinstance(rec, dict) else rec)
        elif what < 0.2:
            del pack[k]
        elif isinstance(rec, dict):
            label = rng.choice(list(rec) + LABELS) if rng.random() < 0.7 else rng.choice(ODD[:20])
            if rng.random() < 0.15:
                rec.pop(label, None)
            else:
                try:
                    rec[label] = odd(rng)
                except TypeError:  # an unhashable key
                    pass
    return cbor2.dumps(pack)


def _mutate_bytes(rng, data, other):
    data = bytearray(data)
    what = rng.random()
    if what < 0.3:
        for _ in range(rng.choice((1, 1, 2, 8))):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif what < 0.45:
        if data:
            data[rng.randrange(len(data))] = rng.choice((0x00, 0x18, 0x1b, 0x3b, 0x5b, 0x5f, 0x7b, 0x9b, 0x9f, 0xbb,
                                                         0xbf, 0xc4, 0xd1, 0xf9, 0xfb, 0xff))
    elif what < 0.6:
        data = data[:rng.randrange(len(data) + 1)]
    elif what < 0.75:
        cut = rng.randrange(len(data) + 1)
        data = data[:cut] + other[rng.randrange(len(other) + 1):]
    elif what < 0.85:
        i = rng.randrange(len(data) + 1)
        data[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9)))
    else:
        i = rng.randrange(len(data) + 1)
        data[i:i] = data[i:i + rng.randrange(1, 200)] * rng.randrange(2, 50)
    return bytes(data)


def inputs(rng, n):
    """n (kind, topic, data) fuzz inputs."""
    base = seeds(rng)
    seq = 10
    for _ in range(n):
        topic, dev, payload = rng.choice(base)
        seq += 1
        r = rng.random()
        if r < 0.05:
            yield "random", topic, bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400)))
        elif r < 0.45:
            other = _seal(*rng.choice(base)[1:2], seq, rng.choice(base)[2])
            yield "bytes", topic, _mutate_bytes(rng, _seal(dev, seq, payload), other)
        elif r < 0.85:
            yield "pack", topic, _seal(dev, seq, _mutate_pack(rng, payload))
        elif r < 0.95:  # the COSE fields: seq, alg, kid, tag swapped for anything
            field = rng.randrange(4)
            x = odd(rng)
            if field == 0:
                data = _seal(dev, x, payload)
            elif field == 1:
                data = _seal(dev, seq, payload, alg=x)
            elif field == 2:
                data = _seal(dev, seq, payload, kid=x)
            else:
                data = _seal(dev, seq, payload, tag=x)
            yield "cose", topic, data
        else:
            yield "valid", topic, _seal(dev, seq, payload)


def _sane(m):
    assert m.device in KEYS and isinstance(m.seq, int) and 0 <= m.seq < SEQ_LIMIT
    for r in m.readings:
        assert r.device == m.device and 0 < len(r.channel) <= 64 and "/" not in r.channel
        assert math.isfinite(r.value) and r.value == float(r.exact) and len(r.exact) < 100
        assert r.time is None or math.isfinite(r.time)
        assert 0 <= r.rid < SEQ_LIMIT and 0 <= r.flags < 65536
    for k, v in (m.health or {}).items():
        assert isinstance(k, str) and isinstance(v, (int, float, str)) and not isinstance(v, bool)


def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def run(n, seed=1, db=None, out=None):
    """Feed n inputs; -> stats dict (inputs, outcomes, escapes, slowest answer
    (the verifier's CPU time: on a shared 2-core machine the wall time holds
    other processes' turns; slowest_wall has it), slowest commit, rss growth)."""
    rng = random.Random(seed)
    v = Verifier(KEYS)
    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="petrel-fuzz-")
        db = os.path.join(tmp.name, "fuzz.sqlite")
    st = store.open(db)
    stats = dict(inputs=0, accepted=0, reasons={}, escapes=[], slowest=(0.0, None, 0), kinds={},
                 slowest_wall=0.0, slowest_commit=0.0)
    rss0 = peak0 = None
    try:
        for k, (kind, topic, data) in enumerate(inputs(rng, n)):
            if k == min(1000, n // 10):  # after warm-up: the code, caches and the store's pages are in
                rss0, peak0 = rss_kb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            stats["inputs"] += 1
            stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
            t, c = time.perf_counter(), time.thread_time()
            try:
                m = v.open(topic, data, received=T0 + k)
                dt, dc = time.perf_counter() - t, time.thread_time() - c
                _sane(m)
                tc = time.perf_counter()
                try:
                    if kind == "cose":  # an odd seq the key accepts would end the device's window for the rest
                        raise Rejected("replay")
                    st.commit(m)
                    stats["accepted"] += 1
                    stats["slowest_commit"] = max(stats["slowest_commit"], time.perf_counter() - tc)
                except Rejected as e:
                    if e.reason not in ("duplicate", "replay"):
                        raise AssertionError("store refused %s" % e.reason) from None
                    stats["reasons"][e.reason] = stats["reasons"].get(e.reason, 0) + 1
            except Rejected as e:
                dt, dc = time.perf_counter() - t, time.thread_time() - c
                stats["reasons"][e.reason] = stats["reasons"].get(e.reason, 0) + 1
                if len(str(e)) > 300:
                    stats["escapes"].append((kind, "refusal text of %d chars" % len(str(e)), data[:64].hex()))
            except BaseException as e:  # an escape: anything but Rejected
                if isinstance(e, KeyboardInterrupt):
                    raise
                dt, dc = time.perf_counter() - t, time.thread_time() - c
                stats["escapes"].append((kind, "%s: %s" % (type(e).__name__, str(e)[:200]), data[:64].hex()))
            if dc > stats["slowest"][0]:
                stats["slowest"] = (dc, kind, len(data))
            stats["slowest_wall"] = max(stats["slowest_wall"], dt)
            if out and stats["inputs"] % 20000 == 0:
                out.write("  %d inputs, %d escapes\n" % (stats["inputs"], len(stats["escapes"])))
    finally:
        st.close()
        if tmp is not None:
            tmp.cleanup()
    rss1, peak1 = rss_kb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats["rss_growth_kb"] = rss1 - (rss0 or rss1)
    stats["peak_growth_kb"] = peak1 - (peak0 or peak1)
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    t = time.time()
    s = run(a.inputs, a.seed, out=sys.stdout)
    dt, kind, size = s["slowest"]
    print("fuzz-collector: %d inputs (seed %d) in %.0f s: %d accepted and committed, refused %s" % (
        s["inputs"], a.seed, time.time() - t, s["accepted"],
        ", ".join("%s %d" % kv for kv in sorted(s["reasons"].items()))))
    print("  inputs by mutation: %s" % ", ".join("%s %d" % kv for kv in sorted(s["kinds"].items())))
    print("  escapes (anything but Rejected): %d; slowest answer %.1f ms of CPU (%s, %d bytes), %.1f ms of wall"
          " time (other processes' turns included); slowest commit of an accepted one %.1f ms; RSS growth after"
          " warm-up %d KiB, peak RSS growth %d KiB" % (
              len(s["escapes"]), dt * 1000, kind, size, s["slowest_wall"] * 1000, s["slowest_commit"] * 1000,
              s["rss_growth_kb"], s["peak_growth_kb"]))
    for e in s["escapes"][:10]:
        print("  ESCAPE %s %s %s" % e)
    ok = not s["escapes"] and dt < MAX_S and s["peak_growth_kb"] < 8192
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
