"""`petrel collect`: the long-running service that receives what the nodes
publish, verifies it, stores it, and only then acknowledges it to the broker.

    paho network thread --(bounded queue)--> committer thread
      on_message: queue (topic,              verify (verify.Verifier), commit a
      payload, mid); retained up/health      batch in one transaction
      are acknowledged and dropped           (store.commit_many), then PUBACK
                                             every message of the batch

- MQTT v5, QoS 1, fixed client id, clean start off and a session that
  outlives the connection (SESSION_EXPIRY_S): what the nodes publish while
  the collector is down waits at the broker. Receive Maximum (--inflight)
  bounds what the broker sends before our acknowledgements, the queue bounds
  what waits for the committer: memory stays bounded under any load.
- --group NAME subscribes $share/NAME/<prefix>/+/up and .../health, so N
  collectors split the fleet. Mosquitto 2.0.11 (Debian 12) sends retained
  messages to every member of a group on subscribing: a retained up/health
  message is never data (nodes never retain them), it is dropped.
- A message is acknowledged only after its batch's commit (paho manual_ack):
  a collector killed between receive and commit loses nothing, the broker
  sends it again; the store refuses it the second time as "duplicate", so
  nothing is stored twice. A message received before a reconnect is never
  acknowledged after it (its packet id may name another message by then);
  the broker re-sends it.
- Every refusal is counted in the store (Store.refusal) and logged in one
  line "refused <device> <reason>"; never a secret, never the payload.
- Broker gone: paho reconnects with backoff (1 s doubling to 60 s). Store
  unreachable or locked: the batch is retried with backoff, unacknowledged.
- SIGTERM/SIGINT: stop queueing, commit and acknowledge what is queued,
  disconnect, exit 0.
- The time service (issue 16; on unless --no-time-service): a health record
  whose treq is a nonzero int is a node asking for trusted time within the
  same session (it waits about a second). It is verified and answered in the
  network thread as it arrives, ahead of the committer's queue and batches:
  a sealed `time` message (t: our clock in Unix ms, n: treq) under the
  device's downlink key on <prefix>/<device>/down/time, QoS 1, not retained.
  The record itself is then queued and stored as any other.
"""

import argparse
import collections
import logging
import queue
import signal
import socket
import sys
import threading
import time

from . import downlink, homeassistant

log = logging.getLogger("petrel.collect")

SESSION_EXPIRY_S = 7 * 86400  # how long the broker keeps queueing for a collector that is away
BATCH = 100                   # messages per transaction at most: a commit stays short (latency)
RETRY_S = (0.2, 30.0)         # store errors: first and longest wait


def _printable(s, n=40, space="?"):
    """A name from the network, safe for one log line."""
    s = "".join(c if c.isprintable() and c != " " else space if c == " " else "?" for c in str(s)[:n])
    return s or "-"


def _transient(e):
    # sqlite3's and psycopg's "database unreachable / locked" classes: wait and retry
    return type(e).__name__ in ("OperationalError", "InterfaceError")


class Collector:
    """One collector. store: a store.Store; keys: {device: hmac key}.
    on_stored(msg, stored, duplicates) is called in the committer thread after
    each message's commit. reload_keys: a callable returning fresh keys,
    tried (at most every 10 s) when a message names an unknown device.
    time_service: answer health records' time requests (treq); down_keys:
    {device: provisioned downlink root key} (others derive theirs from the
    hmac key); reload_down_keys: a callable returning them afresh; clock: a
    callable giving the time service's Unix ms (a simulated world's clock;
    None: this machine's)."""

    def __init__(self, store, keys, host="127.0.0.1", port=8883, *, ca=None, cert=None, key=None,
                 insecure_plain=False, client_id=None, group=None, topic_prefix="petrel",
                 username=None, password=None, inflight=500, batch=BATCH, on_stored=None,
                 homeassistant_prefix=None, reload_keys=None, time_service=True, down_keys=None, clock=None,
                 reload_down_keys=None):
        from . import verify

        if ca is None and not insecure_plain:
            raise ValueError("a broker CA (ca=) or insecure_plain=True (loopback tests only)")
        self.store = store
        self.verify = verify
        self.verifier = verify.Verifier(keys, prefix=topic_prefix)
        self.reload_keys = reload_keys
        self.reload_down_keys = reload_down_keys
        self._reloaded = 0.0
        self.timesvc = downlink.TimeService(keys, down_keys, topic_prefix) if time_service else None
        self.clock = clock  # -> Unix ms for the time service (None: this machine's clock)
        self.time_latency = collections.deque(maxlen=1000)  # s from a request's arrival to its answer
        self.host, self.port = host, port
        self.group = group
        self.prefix = topic_prefix
        self.batch = max(1, batch)
        self.on_stored = on_stored
        self.counts = {"messages": 0, "readings": 0, "duplicates": 0, "refused": 0, "retained": 0,
                       "time": 0}
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()
        self.connected = threading.Event()
        self._last_message = time.monotonic()
        self.failed = None
        self._q = queue.Queue(maxsize=max(16, inflight))
        self._closing = threading.Event()
        self._gen = 0  # bumped at every connect and disconnect: which acks are still valid
        self._gen_lock = threading.Lock()
        self._thread = None
        self.client = self._client(client_id or "petrel-collect-" + socket.gethostname(),
                                   ca, cert, key, insecure_plain, username, password, inflight)
        self.ha = None
        if homeassistant_prefix:
            self.ha = homeassistant.Publisher(self._publish, homeassistant_prefix, topic_prefix)

    # ------------------------------------------------------------ MQTT side
    def _client(self, client_id, ca, cert, key, plain, username, password, inflight):
        import paho.mqtt.client as paho
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=paho.MQTTv5, manual_ack=True)
        if not plain:
            c.tls_set(ca_certs=str(ca), certfile=cert and str(cert), keyfile=key and str(key))
        if username:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(1, 60)
        c.max_queued_messages_set(1000)  # our own publishes (Home Assistant) never pile up
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = max(1, min(inflight, 65535))
        self._connect_props = props
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = lambda *a: self.unsubscribed.set()
        c.on_message = self._on_message
        return c

    def topics(self):
        base = ["%s/+/up" % self.prefix, "%s/+/health" % self.prefix]
        return ["$share/%s/%s" % (self.group, t) for t in base] if self.group else base

    def _on_connect(self, client, userdata, flags, rc, props=None):
        from paho.mqtt.subscribeoptions import SubscribeOptions

        if rc.is_failure:
            log.warning("broker refused the connection: %s", rc)
            return
        with self._gen_lock:
            self._gen += 1
        self.connected.set()
        log.info("connected to %s:%d (session %s)", self.host, self.port,
                 "resumed" if flags.session_present else "new")
        # retainHandling 2: no retained messages (a group's members get them anyway on 2.0.11)
        opts = SubscribeOptions(qos=1, retainHandling=2)
        client.subscribe([(t, opts) for t in self.topics()])

    def _on_subscribe(self, client, userdata, mid, reasons, props=None):
        bad = [r for r in reasons if r.is_failure]
        if bad:
            log.error("subscription refused: %s", ", ".join(str(r) for r in bad))
            return
        log.info("subscribed %s", " ".join(self.topics()))
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, rc, props=None):
        with self._gen_lock:
            self._gen += 1
        self.connected.clear()
        if not self._closing.is_set():
            log.warning("disconnected from the broker (%s); reconnecting with backoff", rc)

    def _on_message(self, client, userdata, m):
        self._last_message = time.monotonic()
        if m.retain:  # never data: acknowledge and drop (see the module's docstring)
            self.counts["retained"] += 1
            self._ack(m.mid, m.qos, self._gen)
            return
        received = time.time()
        pre = None
        if self.timesvc is not None and m.topic.endswith("/health"):
            pre = self._time_answer(m.topic, m.payload, received)
        item = (m.topic, m.payload, m.mid, m.qos, received, self._gen, pre)
        while not self._closing.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        # closing: left unacknowledged, the broker sends it again next time

    def _time_answer(self, topic, payload, received):
        """A verified health record asking for the time: answered now, before
        it waits in the queue. -> the verified message (the committer does not
        verify it again), or None (the committer verifies and refuses it)."""
        t0 = time.monotonic()
        try:
            msg = self.verifier.open(topic, payload, received)
        except Exception:  # refused (or a verifier bug): the committer counts and logs it
            return None
        nonce = downlink.time_request(msg.health) if msg.kind == "health" else None
        if nonce is not None:
            try:
                answer = self.timesvc.answer(msg.device, nonce, self.clock() if self.clock else None)
                if answer is not None:
                    self.client.publish(answer[0], answer[1], qos=1, retain=False)
                    self.counts["time"] += 1
                    self.time_latency.append(time.monotonic() - t0)
                    log.debug("time answered %s", _printable(msg.device))
            except Exception as e:  # never lose the record over its answer
                log.error("time answer to %s failed: %s", _printable(msg.device), type(e).__name__)
        return msg

    def _ack(self, mid, qos, gen):
        with self._gen_lock:
            if gen == self._gen and qos:
                self.client.ack(mid, qos)

    def _publish(self, topic, payload, qos, retain):
        self.client.publish(topic, payload, qos=qos, retain=retain)

    # ------------------------------------------------------------ committer
    def _run(self):
        try:
            while True:
                try:
                    first = self._q.get(timeout=0.1)
                except queue.Empty:
                    if self._closing.is_set():
                        return
                    continue
                batch = [first]
                while len(batch) < self.batch:
                    try:
                        batch.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                self._handle(batch)
        except Exception as e:  # a bug, not a message: say so, stop cleanly
            self.failed = e
            log.exception("committer stopped: %s", e)
            self._closing.set()

    def _open(self, topic, payload, received):
        Rejected = self.verify.Rejected
        try:
            return self.verifier.open(topic, payload, received)
        except Rejected as e:
            if e.reason != "unknown_kid" or not self._reload():
                raise
        return self.verifier.open(topic, payload, received)

    def _reload(self):
        if self.reload_keys is None or time.monotonic() - self._reloaded < 10:
            return False
        self._reloaded = time.monotonic()
        try:
            keys = self.reload_keys()
            self.verifier = self.verify.Verifier(keys, prefix=self.prefix)
            if self.timesvc is not None:
                self.timesvc.update(keys, self.reload_down_keys() if self.reload_down_keys else None)
        except Exception as e:
            log.warning("cannot reload the device keys: %s", e)
            return False
        return True

    def _handle(self, batch):
        Rejected = self.verify.Rejected
        msgs, acks = [], []
        for topic, payload, mid, qos, received, gen, pre in batch:
            acks.append((mid, qos, gen))
            if pre is not None:
                msgs.append(pre)
                continue
            try:
                msgs.append(self._open(topic, payload, received))
            except Rejected as e:
                self._refuse(topic, e)
            except Exception as e:  # the verifier must not crash the service
                log.error("verifier failed on %s: %s", _printable(topic, 80), type(e).__name__)
                self._refuse(topic, Rejected("structure", type(e).__name__))
        results = self._commit(msgs) if msgs else []
        if results is None:
            return  # closing while the store fails: nothing acknowledged, all sent again
        for m, res in zip(msgs, results):
            if isinstance(res, Exception):
                self._refuse(m.device, res)
                continue
            stored, dups = res
            self.counts["messages"] += 1
            self.counts["readings"] += stored
            self.counts["duplicates"] += dups
            if self.on_stored is not None:
                self.on_stored(m, stored, dups)
            if self.ha is not None:
                self.ha.stored(m)
        for a in acks:
            self._ack(*a)

    def _commit(self, msgs):
        """[(stored, duplicates) or Rejected] per message, one transaction;
        None when closing while the store is unusable."""
        wait = RETRY_S[0]
        while True:
            try:
                return self._commit_once(msgs)
            except Exception as e:
                if not _transient(e):
                    return self._commit_each(msgs)
                log.warning("store error (%s: %s); retrying in %.1f s", type(e).__name__, e, wait)
            if self._closing.wait(wait):
                return None
            wait = min(wait * 2, RETRY_S[1])

    def _commit_once(self, msgs):
        many = getattr(self.store, "commit_many", None)
        if many is not None:
            return many(msgs)
        return self._commit_each(msgs, transient_raises=True)

    def _commit_each(self, msgs, transient_raises=False):
        out = []
        for m in msgs:
            try:
                out.append(self.store.commit(m))
            except self.verify.Rejected as e:
                out.append(e)
            except Exception as e:
                if transient_raises and _transient(e):
                    raise
                log.error("store failed on a message of %s: %s", _printable(m.device), type(e).__name__)
                out.append(self.verify.Rejected("structure", type(e).__name__))
        return out

    def _refuse(self, where, e):
        """where: the verified device, or the topic the message came on."""
        reason = getattr(e, "reason", None) or "structure"
        device = getattr(e, "device", None)
        named = device
        if named is None:
            named = str(where)
            if named.startswith(self.prefix + "/"):  # <prefix>/<device>/up|health
                rest = named[len(self.prefix) + 1:].split("/")
                named = rest[0] if len(rest) == 2 else named
            # only a registered device gets a row of its own: names from the
            # network must not grow the refusals table
            device = named if named in self.verifier.keys else None
        self.counts["refused"] += 1
        detail = getattr(e, "detail", "")
        log.warning("refused %s %s%s", _printable(named), reason,
                    " (%s)" % _printable(detail, 100, " ") if detail else "")
        try:
            self.store.refusal(device, reason)
        except Exception as err:
            log.error("could not count a refusal: %s", type(err).__name__)

    # ------------------------------------------------------------ life
    def start(self):
        if self.ha is not None:
            for d in self.store.devices():
                dev = d["device"] if isinstance(d, dict) else d.device
                h = d.get("health") if isinstance(d, dict) else getattr(d, "health", None)
                self.ha.seed(dev, h)
        self._thread = threading.Thread(target=self._run, name="petrel-collect-commit", daemon=True)
        self._thread.start()
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False,
                                  properties=self._connect_props)
        self.client.loop_start()
        return self

    def stop(self, timeout=30, end_session=False):
        """Stop queueing, commit and acknowledge what is queued, disconnect;
        end_session: the broker drops the session (nothing is kept for us)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        props = None
        if end_session:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()
        log.info("stopped: %(messages)d messages, %(readings)d readings stored, "
                 "%(refused)d refused, %(retained)d retained dropped", self.counts)
        return self.failed is None

    def retire(self, quiet_s=2.0, timeout=600):
        """Leave the group for good (after start()): store what the broker
        kept for this client id while it was away, unsubscribe, store what
        was still on its way, then end the session, so the broker no longer
        holds a share of the fleet's messages for a collector that will not
        come back. True when all of it was stored within timeout."""
        deadline = time.monotonic() + timeout

        def settle():  # no message for quiet_s and nothing waiting to be committed
            while time.monotonic() < deadline and self.failed is None:
                if time.monotonic() - self._last_message > quiet_s and self._q.empty():
                    return True
                time.sleep(0.1)
            return False

        ok = self.subscribed.wait(max(0, deadline - time.monotonic())) and settle()
        if ok:
            self.client.unsubscribe(self.topics())
            ok = self.unsubscribed.wait(max(0, deadline - time.monotonic())) and settle()
        self.stop(end_session=ok)
        log.info("retired: session %s", "ended" if ok else "kept (not drained; run --retire again)")
        return ok and self.failed is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ------------------------------------------------------------ command
def _cmd(args):
    from . import provision, store as _store

    if not args.ca and not args.insecure_plain:
        print("petrel collect: give the broker's CA (--ca ca.pem), or --insecure-plain for a "
              "loopback test broker", file=sys.stderr)
        return 2
    password = None
    if args.password_file:
        try:
            password = open(args.password_file).readline().rstrip("\n")
        except OSError as e:
            print("petrel collect: cannot read %s: %s" % (args.password_file, e.strerror), file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s collect: %(message)s")
    try:
        keys = provision.load_keys(args.registry)
    except Exception as e:
        print("petrel collect: cannot read the registry %s: %s" % (args.registry, e), file=sys.stderr)
        return 1
    try:
        down_keys = downlink.load_down_keys(args.registry)
    except Exception as e:
        print("petrel collect: cannot read the registry's downlink keys %s: %s" % (args.registry, e),
              file=sys.stderr)
        return 1
    try:
        st = _store.open(args.db)
    except Exception as e:
        print("petrel collect: cannot open the store %s: %s" % (args.db, e), file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    c = Collector(st, keys, args.host, args.port, ca=args.ca, cert=args.cert, key=args.key,
                  insecure_plain=args.insecure_plain, client_id=args.client_id, group=args.group,
                  topic_prefix=args.topic_prefix, username=args.username, password=password,
                  inflight=args.inflight,
                  homeassistant_prefix=None if args.no_homeassistant else args.ha_prefix,
                  reload_keys=lambda: provision.load_keys(args.registry),
                  time_service=not args.no_time_service, down_keys=down_keys,
                  reload_down_keys=lambda: downlink.load_down_keys(args.registry))
    log.info("%d devices in %s, storing into %s", len(keys), args.registry, args.db)
    c.start()
    if args.retire:
        ok = c.retire()
        st.close()
        return 0 if ok else 1
    while not stop.wait(0.5) and c.failed is None:
        pass
    ok = c.stop()
    st.close()
    return 0 if ok else 1


def register(sub):
    p = sub.add_parser(
        "collect", help="receive, verify and store what the nodes send (a long-running service)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[0].split(": ", 1)[1] + """

Subscribes to PREFIX/+/up and PREFIX/+/health with QoS 1 and a persistent
session (same --client-id: what arrives while it is down is delivered when it
comes back), verifies each message with its device's key from the registry,
stores readings and health records, and acknowledges a message only after its
commit. Refusals are counted in the store and logged as "refused DEVICE REASON".
With Home Assistant discovery on (the default) it publishes, retained, a
config per device and channel on HA_PREFIX/sensor/DEVICE/CHANNEL/config and the
latest value on PREFIX/DEVICE/state/CHANNEL: the broker account needs write
access there. As the fleet's time service (unless --no-time-service) it
answers a health record's time request (treq) at once with a sealed `time`
message on PREFIX/DEVICE/down/time (write access there too). SIGTERM or
Ctrl-C: commits what is in flight, exits 0.

Exit codes: 0 stopped by a signal (--retire: drained, session ended); 1 the
registry or store cannot be used, or the service failed; 2 bad usage.""",
        epilog="""examples:
  petrel collect --registry devices.sqlite --db readings.sqlite \\
      --host broker.lan --ca broker-ca.pem --username collector --password-file pw.txt
  petrel collect --registry devices.sqlite --db postgresql://petrel@db/petrel \\
      --host broker.lan --ca broker-ca.pem --group petrel --client-id collect-a
  petrel collect --registry devices.sqlite --db postgresql://petrel@db/petrel \
      --host broker.lan --ca broker-ca.pem --group petrel --client-id collect-a --retire""")
    p.add_argument("--registry", required=True, metavar="REGISTRY.sqlite",
                   help="the device registry written by petrel provision (the devices' keys)")
    p.add_argument("--db", required=True, metavar="URL",
                   help="the store: a file or sqlite:///path (SQLite), or postgresql://...")
    p.add_argument("--host", default="localhost", help="the broker (default localhost)")
    p.add_argument("--port", type=int, default=None, help="default 8883 (1883 with --insecure-plain)")
    p.add_argument("--ca", metavar="CA.pem", help="the CA that signed the broker's certificate (verified)")
    p.add_argument("--cert", metavar="CERT.pem", help="client certificate, for a broker that asks for one")
    p.add_argument("--key", metavar="KEY.pem", help="that certificate's key")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", metavar="FILE", help="broker password (first line of FILE)")
    p.add_argument("--insecure-plain", action="store_true",
                   help="plain MQTT, no TLS: for a test broker on loopback only, never across a network")
    p.add_argument("--client-id", help="MQTT client id, fixed so the session persists "
                   "(default petrel-collect-HOSTNAME); each collector needs its own")
    p.add_argument("--group", metavar="NAME",
                   help="join the shared subscription $share/NAME/...: collectors in one group split "
                        "the messages (give them one store)")
    p.add_argument("--topic-prefix", default="petrel", help="the nodes' topic prefix (default petrel)")
    p.add_argument("--inflight", type=int, default=500,
                   help="messages the broker may send before our acknowledgements (default 500)")
    p.add_argument("--ha-prefix", default=homeassistant.PREFIX,
                   help="Home Assistant's discovery prefix (default homeassistant)")
    p.add_argument("--no-homeassistant", action="store_true", help="publish no Home Assistant discovery")
    p.add_argument("--no-time-service", action="store_true",
                   help="do not answer the nodes' time requests (health treq) with authenticated time")
    p.add_argument("--retire", action="store_true",
                   help="take this --client-id out of service for good: store what the broker kept for "
                        "it, then end its session (a stopped group member otherwise keeps receiving its "
                        "share for 7 days), and exit")
    p.set_defaults(func=_cmd_checked)


def _cmd_checked(args):
    if args.port is None:
        args.port = 1883 if args.insecure_plain else 8883
    if args.inflight < 1:
        print("petrel collect: --inflight must be at least 1", file=sys.stderr)
        return 2
    return _cmd(args)

