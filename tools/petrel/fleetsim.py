"""`petrel fleet-sim`: publish what N provisioned nodes would, for load tests
of the collector and the benchmark.

    petrel fleet-sim --nodes 200 --registry fleet.sqlite --hours 6 --speedup 3600 \\
        --host broker.lan --port 8883 --ca broker-ca.pem

Each node is a device of the registry (fleet-0000, fleet-0001, ...: the
missing ones are provisioned with `petrel provision --psk`'s code, real
per-device keys, files in --nodes-dir) and follows the simulated node's
configuration (tools/petrel/simnode.py node_config: sample_s, uplink_every,
batch, the board's channels with their units and scales): at each uplink it
publishes its readings in batches sealed by the node's own encoder
(lib/uplink.py encoder: SenML CBOR in COSE_Mac0 under the device's key, QoS 1)
on petrel/<id>/up, then a health record on petrel/<id>/health. Uplinks are
spread evenly over the interval. Every message has a COSE sequence number and
every reading an id that no earlier run used (both start from the wall clock),
so a second run into the same store is stored again, not refused as replays.

Virtual time runs --speedup times faster than real time (0: as fast as the
broker takes it) and ends now: the readings are dated in the --hours before the
run started, as if the fleet had been running.
"""

import argparse
import collections
import math
import random
import sys
import threading
import time
from pathlib import Path

PREFIX = "fleet-"
Msg = collections.namedtuple("Msg", "at device seq topic payload readings")


def device_ids(n):
    return ["%s%04d" % (PREFIX, i) for i in range(n)]


def provision_fleet(registry, n, folder):
    """{device_id: HMAC key} for fleet-0000.. fleet-<n-1>, provisioning into
    the registry (and folder/<id>/) those it does not have yet. -> (keys, new)."""
    from . import provision

    have = provision.load_keys(registry) if Path(registry).exists() else {}
    parser = argparse.ArgumentParser()
    provision.register(parser.add_subparsers())
    new = 0
    for dev in device_ids(n):
        if dev in have:
            continue
        args = parser.parse_args(["provision", "--out", str(Path(folder) / dev), "--registry",
                                  str(registry), "--device-id", dev, "--psk",
                                  "--broker-host", "localhost"])
        provision.provision(args, out=lambda *a: None)
        new += 1
    keys = provision.load_keys(registry)
    return dict((d, keys[d]) for d in device_ids(n)), new


def channels(cfg):
    """[(name, unit, scale)] of a node configuration, units from the node's
    own table of sensor quantities when the channel names none."""
    from . import harness

    harness.install()
    from app import hardware

    return [(c["name"], c.get("unit") or hardware.quantity(c["sensor"])[1], c.get("scale", 1))
            for c in cfg["channels"]]


class _Counter:
    def __init__(self, start):
        self.n = start

    def next(self):
        self.n += 1
        return self.n


class _Clock:
    """The encoder's clock: the fleet's stamps are already Unix seconds."""

    def senml_time(self, stamp, seq=None):
        return stamp


class Node:
    """One simulated node: its readings and its sealed messages."""

    def __init__(self, device_id, key, cfg, chans, seed):
        from . import harness

        harness.install()
        import uplink

        self.device_id = device_id
        self.key = key
        self.cfg = cfg
        self.chans = chans
        now_us = int(time.time() * 1e6)
        self.counter = _Counter(now_us)  # COSE seq: above any earlier run's
        self.rid = now_us  # reading ids (outbox sequence numbers), the same way
        self.encode = uplink.encoder(device_id, chans, key, self.counter, _Clock())
        self.pack = uplink.pack_reading
        self.rnd = random.Random(seed)
        self.phase = self.rnd.random() * 2 * math.pi
        self.topic = "petrel/%s/" % device_id

    def value(self, c, t):
        """A plausible reading of channel c at Unix time t, in 1/scale units."""
        name, unit, scale = self.chans[c]
        day = math.sin(2 * math.pi * t / 86400 + self.phase)
        if unit == "Cel":
            x = 21 + 3 * day + self.rnd.gauss(0, 0.1)
        elif unit == "%RH":
            x = 50 - 10 * day + self.rnd.gauss(0, 0.5)
        elif unit == "V":
            x = 3.0 - 1e-8 * (t % 10 ** 7)
        else:
            x = self.rnd.gauss(100, 1)
        return int(round(x * scale))

    def uplink(self, t):
        """The messages of the uplink at Unix time t: the readings of the
        uplink_every samples up to t in batches, then the health record."""
        cfg = self.cfg
        records = []
        for k in range(cfg["uplink_every"] - 1, -1, -1):
            ts = int(t - k * cfg["sample_s"])
            for c in range(len(self.chans)):
                self.rid += 1
                flags = 1 if self.rid % 97 == 0 else 0  # now and then a STALE re-send
                records.append((self.rid, ts, self.pack(c, self.value(c, ts), flags)))
        out = []
        batch = cfg["batch"]
        for i in range(0, len(records), batch):
            chunk = records[i:i + batch]
            data = self.encode(chunk)
            out.append(Msg(t, self.device_id, self.counter.n, self.topic + "up", data, len(chunk)))
        out.append(Msg(t, self.device_id, self.counter.n + 1, self.topic + "health",
                       self.health(t), 0))
        return out

    def health(self, t):
        """The health record as format v2 has it: a SenML pack, bn
        "<id>/health/", one record per field, sealed like the readings."""
        import cbor2
        import cose

        cfg = self.cfg
        fields = [("fw", "0.6.0"), ("boot", 1), ("q", 0), ("rssi", -61), ("batt", 3000),
                  ("awake", 300), ("sample_s", cfg["sample_s"]),
                  ("uplink_s", cfg["sample_s"] * cfg["uplink_every"])]
        pack = []
        for name, v in fields:
            rec = {0: name, 3 if isinstance(v, str) else 2: v}
            if not pack:
                rec[-2] = self.device_id + "/health/"
                rec[-3] = int(t)
            pack.append(rec)
        return cose.mac0(self.key, self.device_id.encode(), self.counter.next(), cbor2.dumps(pack))


def fleet(keys, cfg, hours, end=None):
    """Every node's messages over `hours` of virtual time ending at `end`
    (Unix, default now), in publish order; uplinks spread over the interval."""
    chans = channels(cfg)
    nodes = [Node(d, keys[d], cfg, chans, seed=i) for i, d in enumerate(sorted(keys))]
    every = cfg["sample_s"] * cfg["uplink_every"]
    end = time.time() if end is None else end
    start = end - hours * 3600
    k = 0
    while True:
        for i, node in enumerate(nodes):
            at = start + k * every + (i + 0.5) * every / len(nodes)
            if at > end:
                return
            for m in node.uplink(at):
                yield m._replace(at=at - start)  # virtual seconds since the start
        k += 1


class Publisher:
    """One MQTT connection publishing at QoS 1; publish() returns at once,
    wait() until every PUBACK is in. sent[(device, seq)] = time.time() of the
    publish, for latency."""

    def __init__(self, host, port, ca=None, insecure_plain=False, client_id=None, inflight=1000):
        import paho.mqtt.client as paho

        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=client_id or "petrel-fleet-sim-%d" % id(self))
        if not insecure_plain:
            self.c.tls_set(ca_certs=ca)
        self.c.max_inflight_messages_set(inflight)
        self.c.max_queued_messages_set(0)
        self.connected = threading.Event()
        self.c.on_connect = lambda cl, u, f, rc, p=None: rc == 0 and self.connected.set()
        self.c.connect(host, port, keepalive=60)
        self.c.loop_start()
        if not self.connected.wait(10):
            self.c.loop_stop()
            raise OSError("no MQTT connection to %s:%d within 10 s" % (host, port))
        self.infos = []
        self.sent = {}

    def publish(self, m):
        self.sent[(m.device, m.seq)] = time.time()
        self.infos.append(self.c.publish(m.topic, m.payload, qos=1))

    def wait(self, timeout=60):
        """-> how many PUBACKs arrived within timeout."""
        deadline = time.monotonic() + timeout
        n = 0
        for info in self.infos:
            left = deadline - time.monotonic()
            if left > 0:
                info.wait_for_publish(left)
            n += info.is_published()
        return n

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def run(msgs, pub, speedup):
    """Publish msgs at speedup x their virtual times (0: at once).
    -> (messages, readings, seconds taken, seconds behind schedule at most)."""
    t0 = time.monotonic()
    n = readings = 0
    behind = 0.0
    for m in msgs:
        if speedup:
            due = t0 + m.at / speedup
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                behind = max(behind, now - due)
        pub.publish(m)
        n += 1
        readings += m.readings
    return n, readings, time.monotonic() - t0, behind


def _cmd(args):
    from . import simnode

    if args.nodes < 1 or args.hours <= 0 or args.speedup < 0:
        print("petrel fleet-sim: --nodes >= 1, --hours > 0 and --speedup >= 0", file=sys.stderr)
        return 2
    if not args.insecure_plain and not args.ca:
        print("petrel fleet-sim: give --ca (the CA of the broker's certificate) or, for a "
              "loopback test broker only, --insecure-plain", file=sys.stderr)
        return 2
    folder = Path(args.nodes_dir or Path(args.registry).resolve().parent / "fleet-nodes")
    try:
        keys, new = provision_fleet(args.registry, args.nodes, folder)
    except Exception as e:
        print("petrel fleet-sim: cannot provision into %s: %s" % (args.registry, e), file=sys.stderr)
        return 1
    print("%d nodes (%d provisioned now) from %s" % (len(keys), new, args.registry))

    class _Broker:
        ports = {"psk": args.port}

    cfg = simnode.node_config(_Broker())
    try:
        pub = Publisher(args.host, args.port, args.ca, args.insecure_plain)
    except (OSError, ValueError) as e:
        print("petrel fleet-sim: %s" % e, file=sys.stderr)
        return 1
    try:
        n, readings, took, behind = run(fleet(keys, cfg, args.hours), pub, args.speedup)
        acked = pub.wait(args.timeout)
    finally:
        pub.close()
    print("published %d messages (%d readings) over %.1f s, %.0f readings/s; %d acknowledged"
          "%s" % (n, readings, took, readings / took if took else 0, acked,
                  "; up to %.1f s behind schedule" % behind if behind > 1 else ""))
    return 0 if acked == n else 1


def register(sub):
    p = sub.add_parser(
        "fleet-sim", help="publish what N provisioned nodes would, at any speed-up (load tests)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split(": ", 1)[1].strip() + """

Exit codes: 0 every message acknowledged by the broker; 1 failed; 2 bad usage.""",
        epilog="""example:
  petrel fleet-sim --nodes 100 --registry fleet.sqlite --hours 24 --speedup 0 \\
      --host 127.0.0.1 --port 1883 --insecure-plain
  petrel collect --registry fleet.sqlite --db fleet-readings.sqlite ...   (beside it)""")
    p.add_argument("--nodes", type=int, required=True, metavar="N")
    p.add_argument("--registry", required=True, metavar="REGISTRY.sqlite",
                   help="device registry (created if missing); devices fleet-0000.. are added")
    p.add_argument("--nodes-dir", metavar="DIR",
                   help="where provisioning writes the nodes' files (default: fleet-nodes/ "
                        "beside the registry)")
    p.add_argument("--hours", type=float, default=1.0,
                   help="virtual time to play (default 1: one hourly uplink per node)")
    p.add_argument("--speedup", type=float, default=60.0,
                   help="virtual seconds per real second (default 60; 0: as fast as possible)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--ca", metavar="CA.pem", help="CA that signed the broker's certificate")
    p.add_argument("--insecure-plain", action="store_true",
                   help="plain MQTT without TLS: only for a test broker on loopback")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for the last PUBACKs")
    p.set_defaults(func=_cmd)
