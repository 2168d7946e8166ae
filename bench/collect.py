"""The collector's benchmark (make bench-collect, about 5 minutes): readings
stored per second and publish-to-commit latency, through a real Mosquitto on
loopback, into SQLite (WAL) and PostgreSQL 15, with 1, 2 and 4 `petrel
collect` collectors (each its own process, one shared group), beside the naive
pattern: one paho subscriber that verifies each message the same way and
writes one row per reading, one transaction each.

The load is tools/petrel/fleetsim.py's: NODES provisioned nodes (their own
keys), each message the node encoder's batch of 36 readings (12 samples x 3
channels, hourly) plus a health record per uplink, published at QoS 1 over one
connection. Two runs per row: a flood (everything at once: throughput), then
the same amount paced at --rate readings/s (or 80% of the flood's rate when
that is lower: latency at a rate the row sustains). Every reading is checked
to be stored exactly once (a count from the database against what was sent).
PostgreSQL runs with fsync and synchronous_commit on (the test server's
defaults are off; set back for this run).

    .venv/bin/python bench/collect.py [--readings 50000] [--nodes 200] [--rate 20000] [--only sqlite-1,naive]
"""

import argparse
import functools
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

# time and the rest are imported before fleetsim installs the simulated board's
# import hook (bench/ is one of its firmware-side folders): CPython's clock here.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from petrel import broker as _broker, fleetsim, pgserver, simnode, store  # noqa: E402


def collector_proc(url, keys, port, group, cid, ready, stop, progress, out):
    """One `petrel collect` in its own process; sends back {(device, seq): commit time}."""
    import logging

    from petrel import collect

    logging.disable(logging.WARNING)
    st = store.open(url)
    times = {}
    c = collect.Collector(st, keys, "127.0.0.1", port, insecure_plain=True, client_id=cid,
                          group=group, on_stored=lambda m, s, d: times.__setitem__(
                              (m.device, m.seq), time.time()))
    c.start()
    c.subscribed.wait(10)
    t0 = os.times()
    ready.set()
    while not stop.wait(0.02):
        progress.value = c.counts["messages"] + c.counts["refused"]
    c.stop()
    st.close()
    t1 = os.times()
    out.send((times, t1.user + t1.system - t0.user - t0.system, dict(c.counts)))


def naive_proc(path, keys, port, group, cid, ready, stop, progress, out, wal=True):
    """The naive pattern: on_message verifies, then one INSERT per reading, one
    transaction each; wal: the store's SQLite settings (WAL, synchronous
    NORMAL), else SQLite's defaults (rollback journal, synchronous FULL: a
    sync per transaction), which is what naive code gets."""
    import paho.mqtt.client as paho

    from petrel import verify

    db = sqlite3.connect(path, check_same_thread=False)
    if wal:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE readings (device TEXT, channel TEXT, rid INTEGER, time REAL, value REAL, "
               "unit TEXT, PRIMARY KEY (device, channel, rid))")
    db.execute("CREATE TABLE health (device TEXT, seq INTEGER, fields TEXT, PRIMARY KEY (device, seq))")
    v = verify.Verifier(keys)
    times = {}

    def on_message(cl, u, m):
        msg = v.open(m.topic, m.payload)
        for r in msg.readings:
            with db:
                db.execute("INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?)",
                           (r.device, r.channel, r.rid, r.time, r.value, r.unit))
        if msg.kind == "health":
            with db:
                db.execute("INSERT OR IGNORE INTO health VALUES (?, ?, ?)",
                           (msg.device, msg.seq, repr(msg.health)))
        times[(msg.device, msg.seq)] = time.time()
        progress.value += 1

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe([("petrel/+/up", 1), ("petrel/+/health", 1)])
    c.on_subscribe = lambda *a: ready.set()
    c.connect("127.0.0.1", port)
    t0 = os.times()
    c.loop_start()
    stop.wait()
    c.disconnect()
    c.loop_stop()
    t1 = os.times()
    n = db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    db.close()
    out.send((times, t1.user + t1.system - t0.user - t0.system, {"readings": n}))


NAIVE_MESSAGES = 200


def _cpu(pid):
    """CPU seconds of a process so far (utime + stime), from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def forget_session(broker, client_id):
    """End a stopped collector's persistent session (a clean start with no
    expiry), so the broker stops queueing for it."""
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    c.connect("127.0.0.1", broker.ports["plain"], clean_start=True, properties=props)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


class Row:
    def __init__(self, name, url, n, keys, broker, naive=False, pg=None):
        self.name, self.url, self.n, self.keys, self.broker, self.naive = name, url, n, keys, broker, naive
        self.pg = pg

    def pg_cpu(self):
        """CPU seconds of the PostgreSQL server and its live backends (0 without one)."""
        if self.pg is None or not self.name.startswith("pg"):
            return 0.0
        total = _cpu(self.pg.proc.pid)
        for pid in os.listdir("/proc"):
            try:
                with open("/proc/%s/stat" % pid) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.pg.proc.pid:
                        total += _cpu(int(pid))
            except (OSError, ValueError, IndexError):
                continue
        return total

    def run(self, msgs, speedup_rate=None):
        """Publish msgs (flood, or paced at speedup_rate readings/s) into fresh
        collectors; -> dict of results."""
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        procs = []
        target = collector_proc
        if self.naive:
            target = functools.partial(naive_proc, wal=self.naive == "wal")
        # a group and client ids of its own per run: an earlier run's offline
        # sessions in the same group would be handed a share of the messages
        tag = "%s-%d-%d" % (self.name, os.getpid(), int(time.time() * 1000) % 10 ** 8)
        group = "bench-" + tag if self.n > 1 else None
        for i in range(self.n):
            ready, progress = ctx.Event(), ctx.Value("q", 0)
            rx, tx = ctx.Pipe(False)
            p = ctx.Process(target=target, args=(self.url, self.keys, self.broker.ports["plain"], group,
                                                 "b-%s-%d" % (tag, i),
                                                 ready, stop, progress, tx))
            p.start()
            procs.append((p, ready, progress, rx))
        for _p, ready, _, _ in procs:
            if not ready.wait(30):
                raise RuntimeError("a collector did not subscribe within 30 s")
        pub = fleetsim.Publisher("127.0.0.1", self.broker.ports["plain"], insecure_plain=True,
                                 client_id="bench-pub-%d" % os.getpid())
        broker_cpu0, me0, pg_cpu0 = _cpu(self.broker.proc.pid), os.times(), self.pg_cpu()
        t0 = time.time()
        if speedup_rate:
            per_s = speedup_rate / 36.0 * 2  # messages per second (readings and health alike)
            start = time.monotonic()
            for k, m in enumerate(msgs):
                due = start + k / per_s
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                pub.publish(m)
        else:
            for m in msgs:
                pub.publish(m)
        t_pub = time.time()
        deadline = time.monotonic() + 300
        while sum(pr.value for _, _, pr, _ in procs) < len(msgs) and time.monotonic() < deadline:
            time.sleep(0.01)
        acked = pub.wait(30)
        broker_cpu, me = _cpu(self.broker.proc.pid) - broker_cpu0, os.times()
        pg_cpu = self.pg_cpu() - pg_cpu0
        stop.set()
        commits, cpu, counts = {}, 0.0, []
        for p, _, _, rx in procs:
            times, c, cn = rx.recv()
            commits.update(times)
            cpu += c
            counts.append(cn)
            p.join(30)
        pub.close()
        for i in range(self.n):
            forget_session(self.broker, "b-%s-%d" % (tag, i))
        last = max(commits.values()) if commits else t0
        lat = [commits[(m.device, m.seq)] - pub.sent[(m.device, m.seq)] for m in msgs
               if (m.device, m.seq) in commits]
        wall = last - t0
        return {"readings": sum(m.readings for m in msgs), "messages": len(msgs), "acked": acked,
                "answered": len(commits), "wall": wall, "publish_s": t_pub - t0,
                "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "cpu_collect": cpu / wall,
                "cpu_broker": broker_cpu / wall, "cpu_db": pg_cpu / wall,
                "cpu_pub": (me.user + me.system - me0.user - me0.system) / wall, "counts": counts}


def stored(url, naive):
    if naive:
        db = sqlite3.connect(url)
        try:
            return db.execute("SELECT COUNT(*), COUNT(DISTINCT device || '/' || channel || '/' || rid) "
                              "FROM readings").fetchone()
        finally:
            db.close()
    with store.open(url) as st:
        n = st.counts()["readings"]
    return n, n  # (device, channel, rid) is the table's primary key


def fleet_scale(a):
    """make fleet-scale: `petrel fleet-sim` (the command, its own process)
    publishing NODES nodes x HOURS hours as fast as the broker takes them,
    into 2 collectors of one group sharing PostgreSQL; every reading and
    message stored exactly once, asserted from the database."""
    import re
    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="petrel-fleet-scale-"))
    reg = tmp / "fleet.sqlite"
    keys, _ = fleetsim.provision_fleet(reg, a.nodes, tmp / "nodes")
    with _broker.Broker(tmp / "broker") as b, pgserver.PgServer() as pg:
        with open(b.folder / "mosquitto.conf", "a") as f:
            f.write("max_queued_messages 1000000\n")
        b.restart()
        url = pg.database("fleet_scale")
        store.open(url).close()
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        procs = []
        for i in range(2):
            ready, progress = ctx.Event(), ctx.Value("q", 0)
            rx, tx = ctx.Pipe(False)
            p = ctx.Process(target=collector_proc, args=(url, keys, b.ports["plain"], "scale",
                                                         "scale-%d" % i, ready, stop, progress, tx))
            p.start()
            procs.append((p, ready, progress, rx))
        for _p, ready, _, _ in procs:
            assert ready.wait(30), "a collector did not subscribe"
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "petrel.cli", "fleet-sim", "--nodes", str(a.nodes),
                            "--registry", str(reg), "--hours", str(a.hours), "--speedup", "0",
                            "--port", str(b.ports["plain"]), "--insecure-plain", "--timeout", "600"],
                           capture_output=True, text=True, timeout=3600)
        print(r.stdout.strip())
        if r.returncode:
            print(r.stderr[-2000:])
            return 1
        m = re.search(r"published (\d+) messages \((\d+) readings\)", r.stdout)
        n_msgs, n_readings = int(m.group(1)), int(m.group(2))
        deadline = time.monotonic() + 600
        while sum(pr.value for _, _, pr, _ in procs) < n_msgs and time.monotonic() < deadline:
            time.sleep(0.1)
        took = time.time() - t0
        stop.set()
        shares = []
        for p, _, _, rx in procs:
            shares.append(rx.recv()[2])
            p.join(30)
        with store.open(url) as st:
            counts = st.counts()
            per_device = dict((d["device"], d["readings"]) for d in st.devices())
    expected = a.hours * 36
    ok = (counts["readings"] == n_readings and counts["messages"] == n_msgs and not counts["refused"]
          and sorted(per_device) == sorted(keys) and set(per_device.values()) == {expected})
    print("fleet-scale: %d nodes x %g h: %d messages, %d readings published; stored %d readings, "
          "%d messages (%d health), refused %s; each device %s readings (expected %d); collectors "
          "took %s messages; %.0f s end to end, %.0f readings/s: %s" % (
              a.nodes, a.hours, n_msgs, n_readings, counts["readings"], counts["messages"],
              counts["health"], counts["refused"] or "none", sorted(set(per_device.values())),
              expected, " + ".join(str(c["messages"]) for c in shares), took, n_readings / took,
              "every reading stored exactly once" if ok else "MISMATCH"))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fleet-scale", action="store_true",
                    help="the long run instead (make fleet-scale): fleet-sim into 2 collectors")
    ap.add_argument("--hours", type=int, default=48, help="--fleet-scale's virtual hours (default 48)")
    ap.add_argument("--readings", type=int, default=50000, help="readings per run (default 50000)")
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20000, help="paced run's rate, readings/s")
    ap.add_argument("--only", help="comma-separated row names to run (sqlite-1, naive-wal, naive, pg-1, pg-2, pg-4)")
    a = ap.parse_args()
    if a.fleet_scale:
        return fleet_scale(a)
    tmp = Path(tempfile.mkdtemp(prefix="petrel-bench-collect-"))
    keys, _ = fleetsim.provision_fleet(tmp / "fleet.sqlite", a.nodes, tmp / "nodes")
    cfg = simnode.node_config(type("P", (), {"ports": {"psk": 1}})())
    hours = max(1, round(a.readings / (a.nodes * 36.0)))

    def load():
        return list(fleetsim.fleet(keys, cfg, hours))

    sample = load()
    ups = [m for m in sample if m.topic.endswith("/up")]
    print("conditions: %d cores (%s); broker Mosquitto on loopback, plain MQTT, QoS 1, one publishing "
          "connection; %d nodes x %d h: %d messages per run (%d readings, %d health), up message %d B "
          "(%d readings, %.1f B/reading), health %d B; collectors are separate processes; "
          "PostgreSQL 15 with fsync on; SQLite WAL, synchronous NORMAL; broker max_queued_messages raised "
          "above a run's messages"
          % (os.cpu_count(), "shared by broker, database, load generator and collectors",
             a.nodes, hours, len(sample), sum(m.readings for m in sample), len(sample) - len(ups),
             sum(len(m.payload) for m in ups) / len(ups), ups[0].readings,
             sum(len(m.payload) for m in ups) / sum(m.readings for m in ups),
             len([m for m in sample if m not in ups][0].payload)))
    rows = []
    with _broker.Broker(tmp / "broker") as b, pgserver.PgServer() as pg:  # its own folder, which the server user can enter
        # Mosquitto drops what is queued for a client beyond 1000 messages by
        # default: a flood would lose messages to that, not to the collector
        with open(b.folder / "mosquitto.conf", "a") as f:
            f.write("max_queued_messages %d\n" % (4 * len(sample)))
        b.restart()
        import psycopg

        with psycopg.connect(pg.url, autocommit=True) as c:
            for s in ("fsync = on", "synchronous_commit = on", "full_page_writes = on"):
                c.execute("ALTER SYSTEM SET " + s)
            c.execute("SELECT pg_reload_conf()")
        plan = [("sqlite-1", "sqlite", 1, False), ("naive-wal", "naive", 1, "wal"),
                ("naive", "naive", 1, "default"), ("pg-1", "pg", 1, False),
                ("pg-2", "pg", 2, False), ("pg-4", "pg", 4, False)]
        for name, kind, n, naive in plan:
            if a.only and name not in a.only.split(","):
                continue
            res = []
            for phase in ("flood", "paced"):
                if kind == "pg":
                    url = pg.database("bench_%s_%s" % (name.replace("-", "_"), phase))
                else:
                    url = str(tmp / ("%s-%s.sqlite" % (name, phase)))
                    if not naive:
                        store.open(url).close()
                row = Row(name, url, n, keys, b, naive, pg)
                msgs = sample if phase == "flood" else load()
                if naive == "default":  # a sync per reading: a slice is enough to time it
                    msgs = msgs[:NAIVE_MESSAGES]
                rate = None
                if phase == "paced":
                    rate = min(a.rate, 0.8 * res[0]["readings"] / res[0]["wall"])
                r = row.run(msgs, rate)
                r["rate"] = rate
                total, distinct = stored(url, naive)
                r["stored"], r["once"] = total, total == distinct == r["readings"]
                res.append(r)
                if phase == "flood":
                    sample = load()  # new seqs and ids for the next row's flood
            rows.append((name, res))
            f, p = res
            print("%-8s flood %6.0f readings/s (%d stored of %d, once: %s; publish %.1f s, all "
                  "stored %.1f s; CPU (cores): collectors %.2f, PostgreSQL %.2f, broker %.2f, publisher %.2f) | paced "
                  "at %6.0f/s: p50 %.0f ms p99 %.0f ms (once: %s)" % (
                      name, f["readings"] / f["wall"], f["stored"], f["readings"], f["once"],
                      f["publish_s"], f["wall"], f["cpu_collect"], f["cpu_db"], f["cpu_broker"], f["cpu_pub"],
                      p["rate"], p["p50"] * 1000, p["p99"] * 1000, p["once"]), flush=True)
    print()
    print("| row | collectors | store | readings/s (flood) | p50 / p99 at paced rate | stored once "
          "| CPU (cores): collectors / PostgreSQL / broker / publisher |")
    print("|---|---|---|---|---|---|---|")
    for name, (f, p) in rows:
        print("| %s | %s | %s | %.0f | %.0f ms / %.0f ms at %.0f/s | %s | %.2f / %.2f / %.2f / %.2f |" % (
            name, "naive" if name.startswith("naive") else name.split("-")[1],
            "PostgreSQL" if name.startswith("pg") else "SQLite", f["readings"] / f["wall"],
            p["p50"] * 1000, p["p99"] * 1000, p["rate"], "yes" if f["once"] and p["once"] else "NO",
            f["cpu_collect"], f["cpu_db"], f["cpu_broker"], f["cpu_pub"]))
    one = dict(rows).get("sqlite-1")
    naive = dict(rows).get("naive")
    naive_wal = dict(rows).get("naive-wal")
    if one:
        rate = one[0]["readings"] / one[0]["wall"]
        print("\none collector (SQLite) at %.0f readings/s carries %.0f nodes sampling 3 channels "
              "every 5 min and sending hourly (36 readings/node/hour), as a sustained rate; the "
              "broker's connections, not the collector, bound a real fleet long before that"
              % (rate, rate * 3600 / 36))
        for what, n in (("SQLite's defaults", naive), ("the store's WAL settings", naive_wal)):
            if n:
                print("one collector vs the naive pattern with %s: %.1fx" % (
                    what, rate / (n[0]["readings"] / n[0]["wall"])))
    ok = all(f["once"] and p["once"] for _, (f, p) in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
