"""The fleet side of the downlink (issue 16): what a sleeping node is sent,
sealed so that only that node accepts it and nobody on the broker can read a
secret in it. The wire format is the node's (lib/downlink.py); this is an
implementation of its own (cbor2, hmac, `cryptography`), not the node's code.

    k_mac, k_enc = downlink.keys(hmac_key, down_key=None)
    data = downlink.seal("config", "p-a1b2c3", version, downlink.config_body(raw), k_mac)
    data = downlink.seal("secrets", dev, version, downlink.secrets_body({"wifi_psk": "..."}, k_enc), k_mac)
    data = downlink.seal("update", dev, version, downlink.update_body("app", 7, "0.7.0", z, h, c, f, p), k_mac)
    with downlink.Versions("devices.sqlite") as v:   # one counter per device, in the registry
        version = v.next("p-a1b2c3")
        ... publish ...
        v.published("p-a1b2c3", "config", version)
    with downlink.Link("broker.lan", 8883, ca="ca.pem") as link:
        link.publish(downlink.topic("p-a1b2c3", "config"), data, retain=True)   # waits for the PUBACK

Message: COSE_Mac0 (tag 17) [protected {1: 5, -65537: version}, {4: kid},
payload (a CBOR map with text keys, "k" = the kind), HMAC-SHA256 tag over
["MAC0", protected, b"petrel down " + kind, payload]]. The aad names the kind,
so a message published on one kind's topic is never taken for another.

Keys: root = the device's provisioned down_key (a registry column, when the
registry has one), else HMAC-SHA256(hmac_key, "petrel downlink key"): a key
distinct from the uplink key, but one whoever holds the uplink key can
compute (the collector does, to answer time requests); only a provisioned
down_key keeps downlink authority away from an uplink key's holder. K_mac
and K_enc are derived from the root.

Versions: one counter per device across every kind, strictly increasing,
max(last + 1, Unix ms), kept in the registry's down_versions table under the
registry's write lock (BEGIN IMMEDIATE), so two invocations or two processes
never hand out the same number.
"""

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

KINDS = ("config", "secrets", "hold", "time", "update")
MAX_MESSAGE = 3072
MAX_CONFIG = 2048
MAX_HOLD_MIN = 120
MAX_VERSION = (1 << 63) - 1
SECRET_KEYS = ("psk_key", "wifi_psk")  # what a push may set (hmac_key: see secrets_body)
ALG_HMAC_256 = 5
VERSION_LABEL = -65537
KID = 4
PUBACK_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS down_versions (device TEXT PRIMARY KEY, last_version INTEGER NOT NULL,
  updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS down_published (device TEXT NOT NULL, kind TEXT NOT NULL,
  version INTEGER NOT NULL, published_at REAL NOT NULL, PRIMARY KEY (device, kind));
"""


class Refused(Exception):
    """The push cannot go on; the message is one line, names keys never
    values. code: the exit code (2 bad usage, 1 failure)."""

    def __init__(self, msg, code=1):
        super().__init__(msg)
        self.code = code


# ------------------------------------------------------------ keys
def _hmac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def root_key(hmac_key, down_key=None):
    return bytes(down_key) if down_key else _hmac(bytes(hmac_key), b"petrel downlink key")


def keys(hmac_key, down_key=None):
    """-> (K_mac, K_enc), 32 bytes each, as the format derives them."""
    root = root_key(hmac_key, down_key)
    return _hmac(root, b"petrel down mac"), _hmac(root, b"petrel down enc")


def _down_key(device, v):
    """A registry's down_key value (32 bytes, as a BLOB or hex text) -> bytes or None."""
    if v is None or v == "" or v == b"":
        return None
    if isinstance(v, str):
        try:
            v = bytes.fromhex(v)
        except ValueError:
            raise Refused("the registry's down_key of device %s is not hex" % device)
    v = bytes(v)
    if len(v) != 32:
        raise Refused("the registry's down_key of device %s is %d bytes, not 32" % (device, len(v)))
    return v


def load_device_keys(registry):
    """{device: (hmac_key, down_key or None)} from the registry (read only).
    down_key comes from a down_key column of the devices table if the
    registry has one (provision may add it), else every root is derived."""
    path = Path(registry)
    if not path.is_file():
        raise Refused("no registry at %s (petrel provision writes it)" % registry, 2)
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        cols = [r[1] for r in db.execute("PRAGMA table_info(devices)")]
        if "hmac_key" not in cols:
            raise Refused("%s is not a Petrel registry (no devices table)" % registry)
        sql = "SELECT device_id, hmac_key, %s FROM devices" % ("down_key" if "down_key" in cols else "NULL")
        return dict((d, (bytes(h), _down_key(d, dk))) for d, h, dk in db.execute(sql))
    except sqlite3.Error as e:
        raise Refused("cannot read the registry %s: %s" % (registry, e))
    finally:
        db.close()


def load_down_keys(registry):
    """{device: down_key} for the devices that have a provisioned one."""
    return dict((d, dk) for d, (_h, dk) in load_device_keys(registry).items() if dk)


# ------------------------------------------------------------ messages
def topic(device, kind, prefix="petrel"):
    return "%s/%s/down/%s" % (prefix, device, kind)


def aad(kind):
    return b"petrel down " + kind.encode()


def seal(kind, device, version, body, k_mac):
    """A COSE_Mac0 of body (a dict, "k" added) for device -> bytes; Refused
    when it would be larger than the node takes."""
    import cbor2

    if kind not in KINDS:
        raise ValueError("kind must be one of " + ", ".join(KINDS))
    if not isinstance(version, int) or not 0 < version <= MAX_VERSION:
        raise ValueError("version must be 1..2**63-1")
    payload = cbor2.dumps(dict(body, k=kind))
    protected = cbor2.dumps({1: ALG_HMAC_256, VERSION_LABEL: version})
    tag = _hmac(k_mac, cbor2.dumps(["MAC0", protected, aad(kind), payload]))
    data = cbor2.dumps(cbor2.CBORTag(17, [protected, {KID: device.encode()}, payload, tag]))
    if len(data) > MAX_MESSAGE:
        raise Refused("the %s message for %s would be %d bytes; the node takes at most %d"
                      % (kind, device, len(data), MAX_MESSAGE))
    return data


def config_body(raw):
    """raw: the config.json's bytes, sent as they are."""
    if len(raw) > MAX_CONFIG:
        raise Refused("config.json is %d bytes; a pushed one may be at most %d" % (len(raw), MAX_CONFIG))
    return {"cfg": bytes(raw)}


def encrypt(k_enc, plaintext, iv):
    """AES-256-CBC with PKCS#7 padding."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    p = padding.PKCS7(128).padder()
    padded = p.update(plaintext) + p.finalize()
    e = Cipher(algorithms.AES(k_enc), modes.CBC(iv)).encryptor()
    return e.update(padded) + e.finalize()


def secrets_body(secrets, k_enc, iv=None):
    """secrets: {name: hex} to set on the node. hmac_key is refused: the
    collector would refuse everything the node sent under a key it does not
    know yet (rotating it needs the collector to learn it first)."""
    if not secrets:
        raise Refused("no secret to push", 2)
    for k in secrets:
        if k == "hmac_key":
            raise Refused("hmac_key cannot be pushed: the collector must learn a new uplink key "
                          "first (not supported yet); provision the device again instead", 2)
        if k == "down_key":
            raise Refused("down_key cannot be pushed: every later push is sealed with the registry's "
                          "key, which would no longer be the node's (not supported yet)", 2)
        if k not in SECRET_KEYS:
            raise Refused("secret %r is not one a node takes (%s)" % (k, ", ".join(SECRET_KEYS)), 2)
    iv = os.urandom(16) if iv is None else iv
    pt = json.dumps(secrets, sort_keys=True, separators=(",", ":")).encode()
    return {"iv": iv, "ct": encrypt(k_enc, pt, iv)}


def hold_body(minutes, exp):
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_HOLD_MIN:
        raise Refused("a hold is 1..%d minutes" % MAX_HOLD_MIN, 2)
    return {"min": minutes, "exp": int(exp)}


def time_body(t_ms, nonce):
    return {"t": int(t_ms), "n": int(nonce)}


UPDATE_TARGETS = ("app", "fw")
MAX_UPDATE_NAME = 32
MAX_UPDATE_PREFIX = 64
MAX_UPDATE_SIZE = {"app": 262_144, "fw": 2_000_000}
MAX_UPDATE_VERSION = 0xFFFFFFFF  # the node keeps an image's version in 32 bits


def update_body(target, version, name, size, sha, chunk, first, prefix):
    """The manifest of an update (issue 17): target "app" or "fw", the
    image's version, a name for people, its size and SHA-256, the chunk
    size, the SHA-256 of chunk 0's message and the chunks' topic prefix.
    ValueError (one line) for a field the node would refuse."""
    if target not in UPDATE_TARGETS:
        raise ValueError("target must be app or fw")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_UPDATE_VERSION:
        raise ValueError("the image's version must be an integer 1..%d" % MAX_UPDATE_VERSION)
    if not isinstance(name, str) or len(name.encode()) > MAX_UPDATE_NAME:
        raise ValueError("the update's name must be text of at most %d bytes" % MAX_UPDATE_NAME)
    if not 1 <= size <= MAX_UPDATE_SIZE[target]:
        raise ValueError("a %s image is 1..%d bytes, not %d" % (target, MAX_UPDATE_SIZE[target], size))
    if len(sha) != 32 or len(first) != 32:
        raise ValueError("h and f are SHA-256 digests (32 bytes)")
    if target == "fw" and (chunk < 512 or 4096 % chunk):
        raise ValueError("a firmware's chunk size must divide 4096 (512, 1024, 2048)")
    if target == "app" and not 512 <= chunk <= 3584:
        raise ValueError("an app's chunk size must be 512..3584")
    if not isinstance(prefix, str) or not 0 < len(prefix.encode()) <= MAX_UPDATE_PREFIX:
        raise ValueError("the chunks' topic prefix must be 1..%d bytes" % MAX_UPDATE_PREFIX)
    return {"t": target, "v": version, "n": name, "z": int(size), "h": bytes(sha), "c": int(chunk),
            "f": bytes(first), "p": prefix}


# ------------------------------------------------------------ versions
class Versions:
    """The registry's down_versions (the per-device counter) and
    down_published (per device and kind: the last version published, when)."""

    def __init__(self, registry):
        from . import provision

        path = Path(registry)
        if not path.is_file():
            raise Refused("no registry at %s (petrel provision writes it)" % registry, 2)
        try:
            provision._check_registry_mode(path)  # it holds every key: its owner's alone
        except provision.Refused as e:
            raise Refused(str(e))
        try:
            self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("BEGIN IMMEDIATE")
            for stmt in SCHEMA.split(";")[:-1]:
                self.db.execute(stmt)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            raise Refused("cannot write the registry %s: %s" % (registry, e))

    def next(self, device, now_ms=None):
        """A new version for device: above every one given before, and at least
        the Unix time in ms (so a registry restored from a backup still counts up)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.db.execute("BEGIN IMMEDIATE")  # the write lock: no other process between read and write
        try:
            row = self.db.execute("SELECT last_version FROM down_versions WHERE device = ?",
                                  (device,)).fetchone()
            v = max((row[0] if row else 0) + 1, now_ms)
            if v > MAX_VERSION:
                raise Refused("device %s's downlink versions are used up" % device)
            self.db.execute("INSERT INTO down_versions (device, last_version, updated_at) VALUES (?, ?, ?)"
                            " ON CONFLICT (device) DO UPDATE SET last_version = excluded.last_version,"
                            " updated_at = excluded.updated_at", (device, v, time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return v

    def published(self, device, kind, version):
        self.db.execute("INSERT INTO down_published (device, kind, version, published_at) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (device, kind) DO UPDATE SET version = excluded.version,"
                        " published_at = excluded.published_at", (device, kind, version, time.time()))

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def published_versions(registry):
    """{device: {kind: (version, published_at)}} from the registry (read
    only); {} when nothing was ever pushed."""
    db = sqlite3.connect(Path(registry).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'down_published'").fetchone():
            return {}
        out = {}
        for d, k, v, at in db.execute("SELECT device, kind, version, published_at FROM down_published"):
            out.setdefault(d, {})[k] = (v, at)
        return out
    finally:
        db.close()


# ------------------------------------------------------------ the time service
class TimeService:
    """Answers a node's time request (its health record's treq) with a
    sealed `time` message. Versions here are this process's own counter
    (max(last + 1, Unix ms)), not the registry's: a collector reads the
    registry only, and the node matches an answer by its nonce."""

    def __init__(self, hmac_keys, down_keys=None, prefix="petrel"):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.last = {}
        self.update(hmac_keys, down_keys)

    def update(self, hmac_keys, down_keys=None):
        down_keys = down_keys or {}
        self.k_mac = dict((d, keys(k, down_keys.get(d))[0]) for d, k in hmac_keys.items())

    def answer(self, device, nonce, now_ms=None):
        """-> (topic, sealed message), or None for a device without keys."""
        k_mac = self.k_mac.get(device)
        if k_mac is None:
            return None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self.lock:
            v = self.last[device] = max(self.last.get(device, 0) + 1, now_ms)
        return topic(device, "time", self.prefix), seal("time", device, v, time_body(now_ms, nonce), k_mac)


def time_request(health):
    """The nonce of a health record's time request, or None (absent, 0, not an int)."""
    n = (health or {}).get("treq")
    if isinstance(n, bool) or not isinstance(n, int) or n == 0 or abs(n) > MAX_VERSION:
        return None
    return n


# ------------------------------------------------------------ the broker
class Link:
    """One MQTT connection for pushing: TLS verifying the broker (or plain on
    loopback, by name only), clean session, publish QoS 1 and wait for the
    PUBACK. Failures raise Refused with one line saying what to check."""

    def __init__(self, host, port, *, ca=None, cert=None, key=None, insecure_plain=False,
                 username=None, password=None, timeout=PUBACK_TIMEOUT_S, client_id=None):
        if ca is None and not insecure_plain:
            raise Refused("give the broker's CA (--ca ca.pem), or --insecure-plain for a loopback "
                          "test broker", 2)
        self.host, self.port, self.timeout = host, port, timeout
        self.ca, self.cert, self.key, self.plain = ca, cert, key, insecure_plain
        self.username, self.password = username, password
        self.client_id = client_id or "petrel-push-%d-%s" % (os.getpid(), os.urandom(3).hex())
        self.client = None

    def connect(self):
        import ssl

        import paho.mqtt.client as paho

        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=paho.MQTTv311, clean_session=True)
        c.connect_timeout = self.timeout
        if not self.plain:
            try:
                c.tls_set(ca_certs=str(self.ca), certfile=self.cert and str(self.cert),
                          keyfile=self.key and str(self.key))
            except (OSError, ssl.SSLError, ValueError) as e:
                raise Refused("cannot load the TLS files (--ca/--cert/--key): %s" % e, 2)
        if self.username:
            c.username_pw_set(self.username, self.password)
        answered = threading.Event()
        result = []
        c.on_connect = lambda cl, u, flags, rc, props=None: (result.append(rc), answered.set())
        try:
            c.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise Refused("cannot connect to the broker %s:%d: %s" % (self.host, self.port, e))
        c.loop_start()
        if not answered.wait(self.timeout):
            c.loop_stop()
            raise Refused("the broker %s:%d did not answer the connection within %.0f s"
                          % (self.host, self.port, self.timeout))
        if result[0].is_failure:
            c.loop_stop()
            raise Refused("the broker %s:%d refused the connection: %s" % (self.host, self.port, result[0]))
        self.client = c
        return self

    def publish(self, topic_, payload, retain):
        """QoS 1; -> seconds until the PUBACK; Refused when none came in time."""
        t0 = time.monotonic()
        info = self.client.publish(topic_, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as e:  # not connected, or the queue refused it
            raise Refused("publishing to %s failed: %s" % (topic_, e))
        if not info.is_published():
            raise Refused("the broker did not acknowledge the message on %s within %.0f s (nothing "
                          "recorded as published; run again)" % (topic_, self.timeout))
        return time.monotonic() - t0

    def close(self):
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()
