"""Uplink benchmark: what a node's upload costs, lib/mqtt on the MicroPython VM
against a real Mosquitto with TLS on loopback, everything from one run.

    make bench-uplink       (.venv/bin/python bench/uplink.py)

Prints, with the conditions beside each figure:
- per wake kind (an hourly uplink: 36 readings in one message; a catch-up
  after an outage: 144 readings, 4 messages), TLS-PSK and certificate TLS:
  connect, connect -> last PUBACK (what the radio is on for) and the
  DISCONNECT, median of REPS uploads. Each upload is what the firmware does:
  readings in a real outbox (lib/outbox), drained by uplink.drain() with the
  node's encoder (uplink.encoder, a new COSE sequence number per message),
  acknowledged in the outbox on their PUBACKs. Every message is verified by
  the collector's verifier (tools/petrel/verify.py) on an independent
  subscriber, sequence numbers seen twice counted;
- the same for lib/mqtt without TCP_NODELAY on the node's socket (nodelay =
  False: Nagle, and each packet in one write), and for the
  umqtt.simple pattern (umqtt_pattern.py: its writes, one publish at a time to
  its PUBACK, no TCP_NODELAY) doing the same job with the same encoder, outbox
  and TLS; each on a broker with `set_tcp_nodelay true` and with Mosquitto's
  default (false), since a user's broker is not ours to configure;
- readings/s end to end (peek, encode, publish, PUBACK, outbox ack) over one
  connection, the encoder alone beside it;
- bytes on the wire per reading for a 36-reading batch, counted by a TCP
  proxy between the node and the broker (SenML + COSE + MQTT + TLS);
- the smallest -X heapsize that completes a TLS connect + one 60-reading
  QoS 1 batch + disconnect with the modules as deployed (petrel.deploy.build:
  mpy-cross, lib/mqtt*.py at -O3), lib/mqtt alone and the umqtt.simple
  pattern alone, compiled alike (the pattern with the client's options,
  deploy.mpy_cross_args), then both again with mpy-cross's default options;
  and lib/mqtt with the node's encoder: each the smallest size from which
  every larger size tried completes too (1k steps, then 128 B steps within
  the last kilobyte), the largest of three client ids (README, "Memory
  budget"); beside it the live heap after each part of the same job (code,
  client made, connected, batch acknowledged) at a large heap.
On loopback a round trip is ~0: what remains is CPU and the TCP stalls (Nagle
against Linux's 40 ms delayed ACK). Compare rows, not absolute radio times;
`petrel energy` prices the stalls on a Wi-Fi link from sourced figures.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from petrel import deploy, paths  # noqa: E402
from petrel.broker import Broker  # noqa: E402

# The heap measurement runs this alone, so that the benchmark's own code does
# not take heap from the client being measured.
HEAP_SCRIPT = r"""
import sys, mqtt
f = open(sys.argv[4], "rb"); msg = f.read(); f.close()
f = open(sys.argv[3], "rb"); ca = f.read(); f.close()
c = mqtt.MQTTClient(sys.argv[1], "127.0.0.1", int(sys.argv[2]), ssl_context=mqtt.tls_context(ca=ca),
                    server_hostname="localhost")
c.connect()
c.publish("petrel/bench/up", msg, qos=1)
c.wait_all()
c.disconnect()
print("RESULT heap_ok 1")
"""

# umqtt.simple's pattern doing the same job, as its users write it: its own
# TLS context (tls.SSLContext), nothing of lib/mqtt loaded.
HEAP_UMQTT_SCRIPT = r"""
import sys, tls, umqtt_pattern
f = open(sys.argv[4], "rb"); msg = f.read(); f.close()
f = open(sys.argv[3], "rb"); ca = f.read(); f.close()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = tls.CERT_REQUIRED
ctx.load_verify_locations(ca)
c = umqtt_pattern.MQTTClient(sys.argv[1], "127.0.0.1", int(sys.argv[2]), ssl=ctx)
c.connect()
c.publish("petrel/bench/up", msg, qos=1)
c.disconnect()
print("RESULT heap_ok 1")
"""

# The same two jobs at a large heap, the live heap (gc.mem_alloc after a
# collect) after each part: the client's code (its import), the TLS context
# and the client made, connected (the handshake done, lib/mqtt's set-up code
# let go), the batch published and acknowledged. Written like the heap
# scripts above with no name they lack (each new name is a qstr, and one past
# the pool's end costs 1.1 KB: it would be counted in the part that crosses it).
PARTS_SCRIPT = r"""
import sys, gc
f = open(sys.argv[4], "rb"); msg = f.read(); f.close()
f = open(sys.argv[3], "rb"); ca = f.read(); f.close()
n = []
gc.collect(); n.append(gc.mem_alloc())
import mqtt
gc.collect(); n.append(gc.mem_alloc())
c = mqtt.MQTTClient(sys.argv[1], "127.0.0.1", int(sys.argv[2]), ssl_context=mqtt.tls_context(ca=ca),
                    server_hostname="localhost")
gc.collect(); n.append(gc.mem_alloc())
c.connect()
gc.collect(); n.append(gc.mem_alloc())
c.publish("petrel/bench/up", msg, qos=1)
c.wait_all()
gc.collect(); n.append(gc.mem_alloc())
c.disconnect()
print("ROW parts", n[1] - n[0], n[2] - n[1], n[3] - n[2], n[4] - n[3])
"""
PARTS_UMQTT_SCRIPT = r"""
import sys, gc, tls
f = open(sys.argv[4], "rb"); msg = f.read(); f.close()
f = open(sys.argv[3], "rb"); ca = f.read(); f.close()
n = []
gc.collect(); n.append(gc.mem_alloc())
import umqtt_pattern
gc.collect(); n.append(gc.mem_alloc())
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = tls.CERT_REQUIRED
ctx.load_verify_locations(ca)
c = umqtt_pattern.MQTTClient(sys.argv[1], "127.0.0.1", int(sys.argv[2]), ssl=ctx)
gc.collect(); n.append(gc.mem_alloc())
c.connect()
gc.collect(); n.append(gc.mem_alloc())
c.publish("petrel/bench/up", msg, qos=1)
gc.collect(); n.append(gc.mem_alloc())
c.disconnect()
print("ROW parts", n[1] - n[0], n[2] - n[1], n[3] - n[2], n[4] - n[3])
"""

# The 36- and 60-reading messages of the wire and heap rows, encoded by the node's encoder.
ENCODE_SCRIPT = r"""
import sys, uplink
class Clock:
    def senml_time(self, stamp, seq=None):
        return stamp
class Counter:
    def next(self):
        return 1001
enc = uplink.encoder("p-a1b2c3", [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)],
                     bytes(range(32)), Counter(), Clock())
for n in (36, 60):
    recs = []
    for k in range(n):
        i = k // 3
        recs.append((k, 1767225600 + 300 * i, uplink.pack_reading(k % 3, (2153 + i, 4512 - i, 100325 + i)[k % 3])))
    f = open("%s/batch%d.bin" % (sys.argv[1], n), "wb")
    f.write(enc(recs))
    f.close()
print("RESULT encoded 1")
"""

# Ten 36-reading publishes, each to its PUBACK, for the byte count on the wire.
WIRE_SCRIPT = r"""
import sys, time, mqtt
msg = open(sys.argv[3], "rb").read()
c = mqtt.MQTTClient("bench-wire", "127.0.0.1", int(sys.argv[1]), ssl_context=mqtt.tls_context(ca=open(sys.argv[2], "rb").read()),
                    server_hostname="localhost")
c.connect()
print("RESULT payload_bytes", len(msg))
time.sleep_ms(300)
for i in range(10):
    c.publish("petrel/bench/up", msg, qos=1)
    c.wait_all()
time.sleep_ms(300)
c.disconnect()
"""

DEVICE = "p-bench1"
KEY = bytes(range(32))  # the device key the VM's encoder seals with

# The same with the payload encoded in the VM as the node does it, in the order
# uplink.drain() goes: connected first, then the batch's outbox records (as
# outbox.peek gives them) encoded by uplink.encoder and published.
HEAPALL_SCRIPT = r"""
import sys, mqtt, uplink
f = open(sys.argv[3], "rb"); ca = f.read(); f.close()
c = mqtt.MQTTClient(sys.argv[1], "127.0.0.1", int(sys.argv[2]), ssl_context=mqtt.tls_context(ca=ca),
                    server_hostname="localhost")
c.connect()
class Clock:  # outbox stamps already in Unix time
    def senml_time(self, stamp, seq=None):
        return stamp
class Counter:
    def next(self):
        return 1001
enc = uplink.encoder("p-a1b2c3", [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)],
                     bytes(range(32)), Counter(), Clock())
recs = []
for i in range(20):
    t = 1767225600 + 300 * i
    recs.append((3 * i, t, uplink.pack_reading(0, 2153 + i)))
    recs.append((3 * i + 1, t, uplink.pack_reading(1, 4512 - i)))
    recs.append((3 * i + 2, t, uplink.pack_reading(2, 100325 + i)))
c.publish("petrel/bench/up", enc(recs), qos=1)
c.wait_all()
c.disconnect()
print("RESULT heap_ok 1")
"""

HEAPS = ["%dk" % k for k in range(10, 65)] + ["96k", "128k"]
# Client ids of three lengths: a few bytes more or less early on move where the
# heap's holes fall, which alone decides a kilobyte either way (measured: the
# same code read 42k or 43k by the id's length). The result is the largest.
CLIENT_IDS = ("p-a1b2c3", "bench-heap", "bench-heap-0001")


def smallest_heap(args, path, script):
    """The smallest -X heapsize from which every larger size tried completes
    too, for each client id; the largest of those. Fragmentation can let one
    size pass while a larger one fails, or one id pass where another fails,
    and that luck is not a result. -> "15k (14,464 B)": in steps of 1k, then
    within the last kilobyte in steps of 128 B (what the kilobyte hides)."""
    worst = fine = 0
    for cid in CLIENT_IDS:
        found = None
        for heap in reversed(HEAPS):
            if not run_vm([cid] + args, heapsize=heap, path=path, script=script).get("heap_ok"):
                break
            found = heap
        if found is None:
            return None
        k = int(found[:-1])
        worst = max(worst, k)
        least = k * 1024
        for size in range(least - 128, (k - 1) * 1024, -128):
            if not run_vm([cid] + args, heapsize=str(size), path=path, script=script).get("heap_ok"):
                break
            least = size
        fine = max(fine, least)
    return "%dk (%s B)" % (worst, format(fine, ","))


def mpy_cross(src, target, rel, optimize):
    """src compiled into target as deploy compiles the module at board path
    rel (deploy.mpy_cross_args), -O3 or not as `optimize` says."""
    p = subprocess.run([deploy.mpy_cross(), "-march=x64"] + deploy.mpy_cross_args(rel, optimize)
                       + ["-o", str(target), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def compile_pattern(lib, optimize):
    """bench/umqtt_pattern.py into lib/ as umqtt_pattern.mpy, compiled as deploy would."""
    mpy_cross(ROOT / "bench" / "umqtt_pattern.py", lib / "umqtt_pattern.mpy", "lib/umqtt_pattern.py", optimize)


def compiled_with(lib, optimize, out):
    """lib/ as deployed (lib: deploy.build's) copied to out, with the client's
    modules (deploy.OPTIMIZED) and the umqtt.simple pattern compiled -O3 or
    not as `optimize` says: the two clients compiled alike, either way."""
    shutil.copytree(lib, out)
    for src in sorted(paths.LIB.glob("*.py")):
        if ("lib/" + src.name).startswith(deploy.OPTIMIZED):
            mpy_cross(src, out / (src.stem + ".mpy"), "lib/" + src.name, optimize)
    compile_pattern(out, optimize)
    return out

# A node's upload, as firmware/app/session.py does it: readings in a real
# outbox (lib/outbox on the VM's filesystem), drained by uplink.drain() in
# batches the node's encoder (uplink.encoder: SenML CBOR in a COSE_Mac0, the
# next sequence number each) makes, connect -> last PUBACK -> DISCONNECT.
# Beside it the umqtt.simple pattern (umqtt_pattern.py) doing the same job:
# the same outbox, encoder and TLS, one publish at a time to its PUBACK.
UPLOAD_SCRIPT = r"""
import sys, os, time
import uplink
from outbox import Outbox
who, mode, port, secret, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
reps, seq0, jobs = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8].split(",")
NODELAY = sys.argv[9] == "1"  # lib/mqtt's TCP_NODELAY: off, it is Nagle and one write a packet
DEV = "%(dev)s"
TOPIC = "petrel/%%s/up" %% DEV
CHANNELS = [("t", "Cel", 100), ("h", "%%RH", 100), ("p", "Pa", 1)]

class Clock:  # outbox stamps already in Unix time
    def senml_time(self, stamp, seq=None):
        return stamp

class Counter:  # the COSE sequence number: a new one for every message
    n = seq0
    def next(self):
        self.n += 1
        return self.n

ENC = uplink.encoder(DEV, CHANNELS, bytes(range(32)), Counter(), Clock())
BOX = [0]

def outbox(readings):
    BOX[0] += 1
    path = "%%s/ob%%d" %% (folder, BOX[0])
    os.mkdir(path)
    ob = Outbox(path, capacity=262144)  # the rate run's 3600 readings, none dropped
    ob.start_at(seq0 * 10 + 1)  # reading ids distinct across the run too
    for k in range(readings):
        i = k // 3
        ob.append(uplink.pack_reading(k %% 3, (2153 + i, 4512 - i, 100325 + i)[k %% 3]), 1767225600 + 300 * i)
    return ob

def petrel_context():
    import mqtt
    if mode == "psk":
        return mqtt.tls_context(psk_identity=b"node-1", psk_key=bytes.fromhex(secret))
    return mqtt.tls_context(ca=open(secret, "rb").read())

def umqtt_context():  # as a umqtt.simple user sets one up, without lib/mqtt
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    if mode == "psk":
        ctx.verify_mode = tls.CERT_NONE
        ctx.psk_identity = b"node-1"
        ctx.psk_key = bytes.fromhex(secret)
        ctx.set_ciphers([c for c in ctx.get_ciphers() if c.startswith("TLS-PSK-WITH-")])
    else:
        ctx.verify_mode = tls.CERT_REQUIRED
        ctx.load_verify_locations(open(secret, "rb").read())
    return ctx

def upload(ob, batch):
    # -> (connect us, connect -> last PUBACK us, connect -> disconnected us, readings)
    if who == "umqtt":
        import umqtt_pattern
        c = umqtt_pattern.MQTTClient("bench-node", "127.0.0.1", port, ssl=umqtt_context())
        t0 = time.ticks_us()
        c.connect()
        t1 = time.ticks_us()
        n = 0
        while True:
            recs = ob.peek(batch)
            if not recs:
                break
            c.publish(TOPIC, ENC(recs), qos=1)  # returns on its PUBACK
            ob.ack(recs[-1][0])
            n += len(recs)
    else:
        import mqtt
        c = mqtt.MQTTClient("bench-node", "127.0.0.1", port, ssl_context=petrel_context(),
                            server_hostname="localhost", timeout_ms=10000, window=4)
        c.nodelay = NODELAY
        t0 = time.ticks_us()
        c.connect()
        t1 = time.ticks_us()
        n = uplink.drain(c, ob, TOPIC, ENC, batch=batch)  # ends with wait_all(): the last PUBACK
    t2 = time.ticks_us()
    c.disconnect()
    t3 = time.ticks_us()
    return time.ticks_diff(t1, t0), time.ticks_diff(t2, t0), time.ticks_diff(t3, t0), n

for job in jobs:
    name, readings, batch = job.split(":")
    readings, batch = int(readings), int(batch)
    if name == "rate":  # end to end on an open connection: peek, encode, publish, PUBACK, ack
        ob = outbox(readings)
        recs = ob.peek(readings)
        t0 = time.ticks_us()
        for i in range(0, readings, batch):
            ENC(recs[i:i + batch])
        enc_us = time.ticks_diff(time.ticks_us(), t0)
        recs = None
        conn, radio, total, n = upload(ob, batch)
        print("ROW", name, readings, batch, enc_us, conn, radio - conn, n, ENC.counter.n)
        continue
    for r in range(reps):
        conn, radio, total, n = upload(outbox(readings), batch)
        print("ROW", name, readings, batch, conn, radio, total, n, ENC.counter.n)
"""

class CountingProxy:
    """Forwards one TCP connection to the broker and counts the bytes the node sends."""

    def __init__(self, target_port):
        self.target = target_port
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.sent_chunks = []  # (time, bytes) node -> broker
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import time

        a, _ = self.srv.accept()
        b = socket.create_connection(("127.0.0.1", self.target))

        def pump(src, dst, record):
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                if record:
                    self.sent_chunks.append((time.monotonic(), len(data)))
                try:
                    dst.sendall(data)
                except OSError:
                    break
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(b, a, False), daemon=True)
        t.start()
        pump(a, b, True)


def run_vm(args, heapsize=None, path=None, script=None):
    env = dict(os.environ, MICROPYPATH=path or ".frozen:%s" % paths.LIB)
    # the script in a folder of its own: the VM looks for modules first where
    # the script is, and a stray mqtt.mpy in /tmp would be measured instead
    tmp = tempfile.mkdtemp(prefix="petrel-bench-")
    name = os.path.join(tmp, "run.py")
    with open(name, "w") as f:
        f.write(script)
    cmd = [paths.micropython_binary()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    p = subprocess.run(cmd + [name] + [str(a) for a in args], env=env, capture_output=True,
                       text=True, timeout=600)
    shutil.rmtree(tmp)
    out = {"rows": []}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT"):
            _, k, v = line.split()
            out[k] = int(v)
        elif line.startswith("ROW"):
            f = line.split()
            out["rows"].append([f[1]] + [int(x) for x in f[2:]])
    if p.returncode or (len(out) == 1 and not out["rows"]):
        out["error"] = (p.stdout + p.stderr).strip().splitlines()[-3:] or ["no output"]
    return out


class Verified:
    """Every message the node published, as the collector receives it: an
    independent subscriber (paho, plain listener, QoS 1) hands each to the
    collector's verifier (tools/petrel/verify.py, no code shared with the
    node). Counts what verified, refusals by reason, and sequence numbers
    seen twice (a replay the collector would refuse)."""

    def __init__(self, broker):
        import paho.mqtt.client as paho

        from petrel.verify import Verifier

        self.verifier = Verifier({DEVICE: KEY})
        self.messages = self.readings = 0
        self.refused = {}
        self.seqs = set()
        self.repeated = 0
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-collector")
        self.c.on_message = self._on_message
        ready = threading.Event()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_connect = lambda c, *a: c.subscribe("petrel/%s/up" % DEVICE, qos=1)
        self.c.connect("127.0.0.1", broker.ports["plain"])
        self.c.loop_start()
        assert ready.wait(5)

    def _on_message(self, c, u, m):
        from petrel.verify import Rejected

        with self.lock:
            try:
                msg = self.verifier.open(m.topic, m.payload)
            except Rejected as e:
                self.refused[e.reason] = self.refused.get(e.reason, 0) + 1
                return
            if msg.seq in self.seqs:
                self.repeated += 1
            self.seqs.add(msg.seq)
            self.messages += 1
            self.readings += len(msg.readings)

    def settled(self, quiet=0.5):
        import time

        n = -1
        while n != self.messages + sum(self.refused.values()):
            n = self.messages + sum(self.refused.values())
            time.sleep(quiet)
        self.c.loop_stop()
        self.c.disconnect()
        return self


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


# Wake kinds (the firmware's defaults: a sample every 5 min, 3 channels,
# uplink every 12 samples, batch 36 readings, window 4):
WAKES = (("hourly", 36, 36),  # an uplink wake: 12 samples x 3 channels, one message
         ("catch-up", 144, 36))  # after an outage: a full window, 4 messages
RATE = ("rate", 3600, 60)  # end to end over one connection: 60 messages of 60 readings
REPS = 7


def main():
    build = Path(tempfile.mkdtemp(prefix="petrel-mpy-"))
    deploy.build(build, "x64")  # lib/ as `petrel deploy` puts it on a node (the VM's arch)
    lib = build / "lib"
    # the pattern compiled as deploy compiles the client's modules (-O3), so
    # that the two are compared as alike as a node would run them
    compile_pattern(lib, "-O3" in deploy.mpy_cross_args("lib/mqtt.py"))
    # lib/mqtt sets TCP_NODELAY by number, as on the ESP32: the unix port's socket
    # takes it too; the Nagle rows ask for none (MQTTClient.nodelay = False)
    node_path = ".frozen:%s" % lib
    jobs = ",".join("%s:%d:%d" % w for w in WAKES)
    print("uplink bench: a node's upload on the MicroPython VM (%s), lib/ as deployed (mpy-cross),"
          % sys.platform)
    from petrel.broker import mosquitto_binary, ensure_installed

    ensure_installed()
    v = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    print("%s with TLS on loopback; every message verified by the collector's verifier."
          % (v[0].strip() if v else "Mosquitto"))
    print("Each row: median of %d uploads, a new connection each (client id, TLS context and" % REPS)
    print("outbox new each time, as at a wake); lib/mqtt window 4, batch 36 (the firmware's defaults).")
    print("Loopback: round trips are ~0, so what remains is CPU and the TCP stalls (Nagle against a")
    print("delayed ACK, 40 ms on Linux): compare rows, not absolute radio times.")
    results = {}
    seq0 = 0
    for broker_nodelay in (True, False):
        with Broker(tcp_nodelay=broker_nodelay) as broker:
            ca = broker.pki["ca"].with_suffix(".der")
            ident, key = next(iter(broker.psk.items()))
            modes = {"psk": [broker.ports["psk"], key], "cert": [broker.ports["tls"], ca]}
            col = Verified(broker)
            published = [0, 0]  # messages, readings
            for who, node_nodelay in (("petrel", True), ("petrel", False), ("umqtt", False)):
                for mode in ("psk", "cert"):
                    folder = tempfile.mkdtemp(prefix="petrel-ob-")
                    seq0 += 100000
                    more = "," + "%s:%d:%d" % RATE if (broker_nodelay and mode == "psk"
                                                      and node_nodelay) else ""
                    r = run_vm([who, mode] + modes[mode] + [folder, REPS, seq0, jobs + more, int(node_nodelay)],
                               path=node_path, script=UPLOAD_SCRIPT % {"dev": DEVICE})
                    shutil.rmtree(folder)
                    if "error" in r:
                        print("  %s %s: %s" % (who, mode, r["error"]))
                        continue
                    for row in r["rows"]:  # n readings confirmed, in messages of `batch`
                        published[0] += -(-row[-2] // row[2])
                        published[1] += row[-2]
                    for row in r["rows"]:
                        results.setdefault((broker_nodelay, who, node_nodelay, mode, row[0]), []).append(row)
            col.settled()
            results[("verified", broker_nodelay)] = (published, col)
    report(results)
    print()
    run_vm([build], path=node_path, script=ENCODE_SCRIPT)
    wire(build)
    heap(build, lib)
    shutil.rmtree(build)


def report(results):
    print()
    for broker_nodelay in (True, False):
        published, col = results[("verified", broker_nodelay)]
        print("broker set_tcp_nodelay %s%s:" % ("true" if broker_nodelay else "false",
                                               "" if broker_nodelay else " (Mosquitto's default)"))
        print("  %-34s %-5s %-9s %12s %16s %14s" % ("client", "TLS", "wake", "connect ms",
                                                   "connect->PUBACK", "+disconnect"))
        for who, nd, label in (("petrel", True, "lib/mqtt, TCP_NODELAY on the node"),
                               ("petrel", False, "lib/mqtt, Nagle on the node"),
                               ("umqtt", False, "umqtt.simple pattern")):
            for mode in ("psk", "cert"):
                for kind, readings, _batch in WAKES:
                    rows = results.get((broker_nodelay, who, nd, mode, kind))
                    if not rows:
                        print("  %-34s %-5s %-9s (no result)" % (label, mode, kind))
                        continue
                    print("  %-34s %-5s %-9s %12.1f %13.1f ms %11.1f ms" % (
                        label, mode, "%s %d" % (kind, readings), median([r[3] for r in rows]) / 1000,
                        median([r[4] for r in rows]) / 1000, median([r[5] for r in rows]) / 1000))
        print("  ratio umqtt.simple pattern / lib/mqtt (TCP_NODELAY), connect -> last PUBACK:")
        for mode in ("psk", "cert"):
            for kind, readings, _batch in WAKES:
                a = results.get((broker_nodelay, "petrel", True, mode, kind))
                b = results.get((broker_nodelay, "umqtt", False, mode, kind))
                if a and b:
                    print("    %-5s %-13s %.1fx" % (mode, "%s %d" % (kind, readings),
                                                   median([r[4] for r in b]) / median([r[4] for r in a])))
        print("  collector: %d of %d messages verified (%d readings of %d), refused %s, sequence numbers"
              " seen twice: %d" % (col.messages, published[0], col.readings, published[1], col.refused or "none",
                                   col.repeated))
        print()
    rate = results.get((True, "petrel", True, "psk", "rate"))
    if rate:
        _, readings, batch, enc_us, conn, drain_us, n, _ = rate[0]
        print("readings/s end to end, %d readings in messages of %d over one TLS-PSK connection"
              % (readings, batch))
        print("(peek, encode, publish, PUBACK, ack in the outbox; connect not counted; broker nodelay on):")
        print("  the node's encoder alone (outbox records -> sealed message)  %9d readings/s"
              % (readings * 1000000 // enc_us))
        print("  lib/mqtt drain, end to end                                   %9d readings/s (%d confirmed)"
              % (readings * 1000000 // drain_us, n))


def wire(build):
    with Broker() as broker:
        ca = broker.pki["ca"].with_suffix(".der")
        proxy = CountingProxy(broker.ports["tls"])
        r = run_vm([proxy.port, ca, build / "batch36.bin"], script=WIRE_SCRIPT)
        chunks = proxy.sent_chunks
        # the 10 publishes are what the node sent between its two 300 ms pauses
        # (each PUBLISH one write or two, as lib/mqtt's nodelay has it)
        gaps = [i for i in range(1, len(chunks)) if chunks[i][0] - chunks[i - 1][0] > 0.2]
        publish_bytes = [n for _, n in chunks[gaps[0]:gaps[1]]] if len(gaps) > 1 else []
        per_msg = sum(publish_bytes) / 10
        print("bytes on the wire, batch of 12 samples x 3 channels (36 readings):")
        print("  COSE_Mac0(SenML CBOR) payload   %d B" % r.get("payload_bytes", -1))
        print("  one QoS 1 PUBLISH as TLS records %.0f B (MQTT + TLS framing included)" % per_msg)
        print("  per reading                      %.1f B" % (per_msg / 36))
        print()


def heap(build, lib):
    deployed = "-O3" in deploy.mpy_cross_args("lib/mqtt.py")
    print("smallest -X heapsize for a TLS connect (certificate) + one 60-reading batch (QoS 1, its")
    print("PUBACK) + disconnect, modules as .mpy, the unix port's own socket (lib/mqtt sets")
    print("TCP_NODELAY on it, as on the ESP32, so its PUBLISH is two writes and the batch is not copied);")
    print("the smallest from which every larger size tried completes too, the largest of 3 client ids;")
    print("the client's modules (lib/mqtt*) and the umqtt.simple pattern compiled alike, each way:")
    with Broker() as broker:
        ca = broker.pki["ca"].with_suffix(".der")
        msg = build / "batch60.bin"
        path = ".frozen:%s" % lib
        args = [broker.ports["tls"], ca]
        parts = {}
        for who, script in (("petrel", PARTS_SCRIPT), ("umqtt", PARTS_UMQTT_SCRIPT)):
            rows = run_vm([CLIENT_IDS[0]] + args + [msg], heapsize="128k", path=path, script=script)["rows"]
            parts[who] = rows[0][1:] + [sum(rows[0][1:])] if rows else ["-"] * 5
        print("  %-44s %-18s %s" % ("mpy-cross options", "lib/mqtt alone", "umqtt.simple pattern, same job"))
        for label, optimize in (("-O3%s" % (", as `petrel deploy` compiles lib/mqtt*" if deployed else ""), True),
                                ("none (mpy-cross's default)%s" % (", as deployed" if not deployed else ""),
                                 False)):
            where = lib if optimize == deployed else compiled_with(lib, optimize, build / "lib-other")
            where = ".frozen:%s" % where
            print("  %-44s %-18s %s" % (label, smallest_heap(args + [msg], where, HEAP_SCRIPT),
                                        smallest_heap(args + [msg], where, HEAP_UMQTT_SCRIPT)))
        print("  lib/mqtt + the node's encoder (uplink.encoder), as deployed   %s"
              % smallest_heap(args, path, HEAPALL_SCRIPT))
        print("  (message encoded beforehand in the first rows; 64-bit VM: object sizes about twice the ESP32's)")
        print("live heap, bytes (gc.mem_alloc after a collect; -X heapsize=128k; as deployed), the same job by part:")
        print("  %-36s %9s %9s" % ("", "lib/mqtt", "umqtt.simple pattern"))
        for i, label in enumerate(("the client's code (import)", "+ TLS context and client made",
                                   "+ connected (handshake done)", "+ batch published, PUBACK read",
                                   "live at the end, all parts")):
            print("  %-36s %9s %9s" % (label, parts["petrel"][i], parts["umqtt"][i]))

if __name__ == "__main__":
    main()
