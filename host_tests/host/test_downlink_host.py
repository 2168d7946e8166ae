"""The fleet side of the downlink (tools/petrel/downlink.py, tools/petrel/fleet.py)
and the collector's time service (tools/petrel/collect.py), against a real
Mosquitto. Every sealed message is checked by a path of its own: the keys
derived here by hand with hmac, the COSE_Mac0 verified by pycose under the
kind's external_aad, the secrets decrypted with `cryptography`."""

import argparse
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import paho.mqtt.client as paho
import pytest
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

from petrel import downlink, fleet, provision, store as _store, testmsg, verify
from petrel.collect import Collector

ROOT = Path(__file__).resolve().parents[2]


def h256(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def hand_keys(hmac_key, down_key=None):
    """The format's derivation, written out again."""
    root = down_key if down_key else h256(hmac_key, b"petrel downlink key")
    return h256(root, b"petrel down mac"), h256(root, b"petrel down enc")


def opened(data, k_mac, kind):
    """pycose's verdict on a sealed message under the kind's aad -> (ok, version, kid, body)."""
    tag = cbor2.loads(data)
    assert tag.tag == 17
    p, u, payload, t = tag.value  # pycose 1.1 cannot decode cbor2 6's frozendicts itself
    msg = Mac0Message.from_cose_obj([p, dict(u), payload, t], True)
    msg.key = SymmetricKey(k=k_mac)
    msg.external_aad = b"petrel down " + kind.encode()
    try:
        ok = msg.verify_tag()
    except Exception:
        ok = False
    prot = cbor2.loads(p)
    assert prot[1] == 5  # HMAC 256/256
    return ok, prot[-65537], u[4], cbor2.loads(payload)


def decrypt(k_enc, iv, ct):
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    d = Cipher(algorithms.AES(k_enc), modes.CBC(iv)).decryptor()
    u = padding.PKCS7(128).unpadder()
    return u.update(d.update(ct) + d.finalize()) + u.finalize()


def registry(path, devices, down_keys=None):
    """A registry as provision writes it (mode 0600); devices {id: hmac key};
    down_keys {id: key}: adds a down_key column as provision may."""
    db = sqlite3.connect(str(path))
    db.execute(provision.SCHEMA)
    if down_keys is not None:
        db.execute("ALTER TABLE devices ADD COLUMN down_key BLOB")
    for d, k in devices.items():
        db.execute("INSERT INTO devices (device_id, hmac_key, created) VALUES (?, ?, '2026-01-01')", (d, k))
        if down_keys and d in down_keys:
            db.execute("UPDATE devices SET down_key = ? WHERE device_id = ?", (down_keys[d], d))
    db.commit()
    db.close()
    os.chmod(path, 0o600)
    return path


def petrel(*argv):
    """The commands as the lead wires them into `petrel` -> exit code."""
    p = argparse.ArgumentParser(prog="petrel")
    sub = p.add_subparsers()
    fleet.register(sub)
    fleet.register_config_push(sub.add_parser("config").add_subparsers())
    try:
        args = p.parse_args([str(a) for a in argv])
    except SystemExit as e:
        return e.code
    return args.func(args)


def new_id(tag):
    return "p-%s%s" % (tag, os.urandom(3).hex())  # the session's broker keeps retained messages


class Watcher:
    """A plain subscriber with no key: what anyone allowed to subscribe sees."""

    def __init__(self, port, topic):
        self.got = []
        self.ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watch-" + os.urandom(4).hex())
        self.c.on_message = lambda cl, u, m: self.got.append((m.topic, bytes(m.payload), m.retain, time.monotonic()))
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe(topic, 1)
        assert self.ready.wait(5)

    def wait(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, "got %d of %d messages" % (len(self.got), n)
            time.sleep(0.02)
        return self.got

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def clear(port, topics):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for t in topics:
        c.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def broker_args(broker, reg):
    return ["--registry", reg, "--host", "localhost", "--port", broker.ports["tls"], "--ca", broker.pki["ca"]]


# ------------------------------------------------------------ keys and sealing
def test_keys_are_derived_as_the_format_says_and_a_down_key_replaces_the_root():
    hk, dk = os.urandom(32), os.urandom(32)
    assert downlink.keys(hk) == hand_keys(hk)
    assert downlink.keys(hk, dk) == hand_keys(hk, dk)
    k_mac, k_enc = downlink.keys(hk)
    assert len({hk, k_mac, k_enc, downlink.keys(hk, dk)[0]}) == 4  # all distinct from the uplink key


def test_each_kind_is_sealed_under_its_own_aad_and_verifies_with_pycose():
    hk = os.urandom(32)
    k_mac, k_enc = hand_keys(hk)
    raw = json.dumps({"format": 1, "device_id": "p-x1"}).encode()
    bodies = {"config": downlink.config_body(raw), "hold": downlink.hold_body(15, 1767225600),
              "time": downlink.time_body(1767225600123, 4242),
              "secrets": downlink.secrets_body({"wifi_psk": "ab" * 32}, k_enc)}
    for kind, body in bodies.items():
        data = downlink.seal(kind, "p-x1", 1767225600999, body, k_mac)
        ok, version, kid, payload = opened(data, k_mac, kind)
        assert ok and version == 1767225600999 and kid == b"p-x1" and payload["k"] == kind, kind
        for other in downlink.KINDS:  # never taken for another kind, nor an uplink message
            if other != kind:
                assert not opened(data, k_mac, other)[0]
        assert not opened(data, h256(hk, b"x"), kind)[0]  # nor under another key
        with pytest.raises(verify.Rejected):  # nor as an uplink message under the same key
            verify.Verifier({"p-x1": k_mac}).open("petrel/p-x1/health", data, 0)
    assert opened(downlink.seal("config", "p-x1", 5, bodies["config"], k_mac), k_mac, "config")[3]["cfg"] == raw
    hold = opened(downlink.seal("hold", "p-x1", 6, bodies["hold"], k_mac), k_mac, "hold")[3]
    assert hold == {"k": "hold", "min": 15, "exp": 1767225600}
    with pytest.raises(downlink.Refused):  # the node takes at most 3072 bytes
        downlink.seal("config", "p-x1", 7, {"cfg": b"x" * 3100}, k_mac)
    with pytest.raises(downlink.Refused):
        downlink.config_body(b" " * 2049)


def test_the_nodes_own_opener_takes_what_the_host_seals():
    """Interop with lib/downmsg.py (the node's code, under CPython): each kind
    opened with the node's keys, secrets decrypted by its cryptolib path, a
    message of one kind refused on another's topic as forged."""
    from petrel import harness

    harness.install()
    import downmsg

    hk, dk = os.urandom(32), os.urandom(32)
    for down in (None, dk):
        k_mac, k_enc = downlink.keys(hk, down)
        assert downmsg.keys(hk, down) == (k_mac, k_enc)
        raw = json.dumps({"format": 1, "device_id": "p-x1"}).encode()
        v, body = downmsg.open_message("config", downlink.seal("config", "p-x1", 1767225600999,
                                                               downlink.config_body(raw), k_mac), k_mac, b"p-x1")
        assert v == 1767225600999 and downmsg.config_text(body) == raw.decode()
        secret = {"wifi_psk": os.urandom(32).hex(), "psk_key": os.urandom(16).hex()}
        _, body = downmsg.open_message("secrets", downlink.seal("secrets", "p-x1", 2, downlink.secrets_body(
            secret, k_enc), k_mac), k_mac, b"p-x1")
        assert downmsg.secrets(body, k_enc) == secret
        _, body = downmsg.open_message("hold", downlink.seal("hold", "p-x1", 3, downlink.hold_body(
            120, 1767229200), k_mac), k_mac, b"p-x1")
        assert downmsg.hold(body) == (120, 1767229200)
        _, body = downmsg.open_message("time", downlink.seal("time", "p-x1", 4, downlink.time_body(
            1767225600123, -99), k_mac), k_mac, b"p-x1")
        assert downmsg.time_answer(body) == (1767225600123, -99)
        with pytest.raises(downmsg.Refused) as e:
            downmsg.open_message("hold", downlink.seal("config", "p-x1", 5, downlink.config_body(raw), k_mac),
                                 k_mac, b"p-x1")
        assert e.value.args[0] == "forged"


def test_secrets_are_encrypted_then_maced_and_decrypt_with_the_derived_key():
    hk = os.urandom(32)
    k_mac, k_enc = hand_keys(hk)
    secret = {"wifi_psk": os.urandom(32).hex(), "psk_key": os.urandom(32).hex()}
    b1, b2 = downlink.secrets_body(secret, k_enc), downlink.secrets_body(secret, k_enc)
    assert b1["iv"] != b2["iv"] and b1["ct"] != b2["ct"]  # a fresh IV each time
    data = downlink.seal("secrets", "p-x1", 9, b1, k_mac)
    for v in secret.values():
        for form in (v.encode(), bytes.fromhex(v), v[:16].encode()):
            assert form not in data
    assert b"wifi_psk" not in data and b"psk_key" not in data  # not even which ones
    ok, _, _, body = opened(data, k_mac, "secrets")
    assert ok and json.loads(decrypt(k_enc, body["iv"], body["ct"])) == secret
    try:  # another key does not decrypt it: bad padding, or bytes that are not the secrets
        assert decrypt(hand_keys(os.urandom(32))[1], body["iv"], body["ct"]) != json.dumps(secret).encode()
    except ValueError:
        pass
    with pytest.raises(downlink.Refused, match="must learn a new uplink key"):
        downlink.secrets_body({"hmac_key": "ab" * 32}, k_enc)
    with pytest.raises(downlink.Refused, match="registry's key"):
        downlink.secrets_body({"down_key": "ab" * 32}, k_enc)
    with pytest.raises(downlink.Refused, match="not one a node takes"):
        downlink.secrets_body({"wifi_ssid": "home"}, k_enc)


# ------------------------------------------------------------ versions
def test_versions_strictly_increase_and_never_fall_below_unix_ms(tmp_path):
    reg = registry(tmp_path / "devices.sqlite", {"p-v1": os.urandom(32)})
    with downlink.Versions(reg) as v:
        a = v.next("p-v1")
        assert abs(a - time.time() * 1000) < 5000
        b = v.next("p-v1", now_ms=1)  # a clock set back: still above the last
        c = v.next("p-v1", now_ms=a + 10 ** 6)
        assert b == a + 1 and c == a + 10 ** 6
    with downlink.Versions(reg) as v:  # a second invocation goes on from the registry
        assert v.next("p-v1", now_ms=1) == c + 1


TAKER = """
import sys
sys.path.insert(0, sys.argv[1])
from petrel import downlink
with downlink.Versions(sys.argv[2]) as v:
    print(" ".join(str(v.next("p-v1", now_ms=1)) for _ in range(int(sys.argv[3]))))
"""


def test_two_processes_never_get_the_same_version(tmp_path):
    reg = registry(tmp_path / "devices.sqlite", {"p-v1": os.urandom(32)})
    with downlink.Versions(reg) as v:
        first = v.next("p-v1")
    # now_ms=1: every version is last + 1, so any race between the two shows as a repeat
    procs = [subprocess.Popen([sys.executable, "-c", TAKER, str(ROOT / "tools"), str(reg), "300"],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    got = [list(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert all(len(g) == 300 and g == sorted(set(g)) for g in got)  # each increasing
    assert sorted(got[0] + got[1]) == list(range(first + 1, first + 601))  # none given twice


# ------------------------------------------------------------ the commands
def node_config(device, **extra):
    c = {"format": 1, "device_id": device, "topic": "petrel/" + device, "sample_s": 300, "uplink_every": 12}
    c.update(extra)
    return c


def write_config(folder, cfg):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return folder


def test_config_push_publishes_a_sealed_retained_config_over_verified_tls(broker, tmp_path, capsys):
    dev = new_id("cp")
    hk = os.urandom(32)
    reg = registry(tmp_path / "devices.sqlite", {dev: hk})
    node = write_config(tmp_path / "node", node_config(dev, sample_s=600))
    w = Watcher(broker.ports["plain"], "petrel/%s/down/#" % dev)
    try:
        assert petrel("config", "push", dev, node, *broker_args(broker, reg)) == 0
        out = capsys.readouterr()
        assert "published config v" in out.out and "connecting to localhost" in out.err
        assert petrel("config", "push", dev, node, *broker_args(broker, reg)) == 0  # a second invocation
        (t1, d1, _, _), (t2, d2, _, _) = w.wait(2)
        assert t1 == t2 == "petrel/%s/down/config" % dev
        k_mac = hand_keys(hk)[0]
        ok1, v1, kid, body = opened(d1, k_mac, "config")
        ok2, v2, _, _ = opened(d2, k_mac, "config")
        assert ok1 and ok2 and kid == dev.encode() and v2 > v1
        assert body["cfg"] == (node / "config.json").read_bytes()  # the file as it is
        assert downlink.published_versions(reg)[dev]["config"][0] == v2
        # retained: a node subscribing later (a lost session) still gets the newest one
        late = Watcher(broker.ports["plain"], "petrel/%s/down/config" % dev)
        (_, d, retained, _), = late.wait(1)
        late.close()
        assert retained and opened(d, k_mac, "config")[1] == v2
        # a broker whose certificate the CA did not sign: refused, nothing recorded as published
        rc = petrel("config", "push", dev, node, "--registry", reg, "--host", "localhost",
                    "--port", broker.ports["tls"], "--ca", broker.pki["other_ca"])
        assert rc == 1 and "cannot connect" in capsys.readouterr().err
        assert downlink.published_versions(reg)[dev]["config"][0] == v2
    finally:
        w.close()
        clear(broker.ports["plain"], ["petrel/%s/down/config" % dev])


def test_config_push_refuses_a_bad_config_before_publishing_anything(broker, tmp_path, capsys):
    good, bad = new_id("cg"), new_id("cb")
    reg = registry(tmp_path / "devices.sqlite", {good: os.urandom(32), bad: os.urandom(32)})
    nodes = tmp_path / "nodes"
    write_config(nodes / good, node_config(good))
    w = Watcher(broker.ports["plain"], "petrel/+/down/#")
    try:
        cases = [(node_config(bad, sample_s="300"), "sample_s"),        # wrong type
                 (node_config(bad, colour="red"), "colour"),            # unknown key
                 (node_config(good), "device_id"),                      # another device's config
                 (node_config(bad, topic="elsewhere/" + bad), "topic"),  # the node would leave its topic
                 ("{not json", "not JSON"),
                 (json.dumps(node_config(bad, pad="x" * 2100)), "2048")]
        for cfg, named in cases:
            write_config(nodes / bad, cfg)
            for argv in (("config", "push", bad, nodes / bad), ("config", "push", "--all", nodes)):
                assert petrel(*argv, *broker_args(broker, reg)) == 1, (cfg, argv)
                err = capsys.readouterr().err
                assert named in err and "nothing was published" in err, err
        time.sleep(0.3)
        assert w.got == [] and downlink.published_versions(reg) == {}
        # fixed: --all pushes both, with progress
        write_config(nodes / bad, node_config(bad))
        assert petrel("config", "push", "--all", nodes, *broker_args(broker, reg)) == 0
        assert "2/2 devices" in capsys.readouterr().err
        assert sorted(t for t, _, _, _ in w.wait(2)) == sorted("petrel/%s/down/config" % d for d in (good, bad))
    finally:
        w.close()
        clear(broker.ports["plain"], ["petrel/%s/down/config" % d for d in (good, bad)])


def test_a_plain_subscriber_sees_no_secret_and_nothing_secret_is_printed(broker, tmp_path, capsys):
    dev = new_id("sp")
    hk = os.urandom(32)
    reg = registry(tmp_path / "devices.sqlite", {dev: hk})
    (tmp_path / "wifi.txt").write_text("correct horse battery staple\n")
    psk = os.urandom(32)
    (tmp_path / "psk.hex").write_text(psk.hex())
    w = Watcher(broker.ports["plain"], "#")  # everything the broker carries
    try:
        assert petrel("secrets", "push", dev, "--wifi-passphrase-file", tmp_path / "wifi.txt",
                      "--wifi-ssid", "home", "--psk-key-file", tmp_path / "psk.hex",
                      *broker_args(broker, reg)) == 0
        out = capsys.readouterr()
        wifi_psk = hashlib.pbkdf2_hmac("sha1", b"correct horse battery staple", b"home", 4096, 32)
        mine = [m for m in w.wait(1) if m[0] == "petrel/%s/down/secrets" % dev]
        assert len(mine) == 1 and mine[0][2] is False  # live delivery; retained for later subscribers
        everything = b"".join(t.encode() + d for t, d, _, _ in w.got) + (out.out + out.err).encode()
        for s in (wifi_psk, wifi_psk.hex().encode(), psk, psk.hex().encode(), b"correct horse", hk,
                  hk.hex().encode()):
            assert s not in everything
        assert "secrets set: psk_key, wifi_psk (values not shown" in out.out and "psk_file" in out.out
        k_mac, k_enc = hand_keys(hk)
        ok, _, _, body = opened(mine[0][1], k_mac, "secrets")
        assert ok and json.loads(decrypt(k_enc, body["iv"], body["ct"])) == {
            "wifi_psk": wifi_psk.hex(), "psk_key": psk.hex()}
        # what is refused, before anything is published
        n = len(w.got)
        weak = tmp_path / "weak.hex"
        weak.write_text(bytes(range(32)).hex())
        assert petrel("secrets", "push", dev, "--psk-key-file", weak, *broker_args(broker, reg)) == 1
        assert "well-known" in capsys.readouterr().err
        other = new_id("so")
        reg2 = registry(tmp_path / "two.sqlite", {dev: hk, other: psk})  # the key is another device's
        assert petrel("secrets", "push", dev, "--psk-key-file", tmp_path / "psk.hex",
                      *broker_args(broker, reg2)) == 1
        assert other in capsys.readouterr().err
        reg3 = registry(tmp_path / "three.sqlite", {dev: hk})  # a revoked device's key is never used again
        db = sqlite3.connect(str(reg3))
        db.execute("CREATE TABLE revoked (device_id TEXT NOT NULL, hmac_key_sha256 TEXT NOT NULL, "
                   "psk_key_sha256 TEXT, revoked TEXT NOT NULL)")
        db.execute("INSERT INTO revoked VALUES ('p-gone', ?, ?, '2026-01-01')",
                   (hashlib.sha256(os.urandom(32)).hexdigest(), hashlib.sha256(psk).hexdigest()))
        db.commit()
        db.close()
        assert petrel("secrets", "push", dev, "--psk-key-file", tmp_path / "psk.hex",
                      *broker_args(broker, reg3)) == 1
        assert "p-gone" in capsys.readouterr().err
        assert petrel("secrets", "push", dev, *broker_args(broker, reg)) == 2  # nothing to push
        assert petrel("secrets", "push", dev, "--wifi-psk-hex", "12ab", *broker_args(broker, reg)) == 2
        assert petrel("secrets", "push", dev, "--wifi-passphrase-file", tmp_path / "wifi.txt",
                      *broker_args(broker, reg)) == 2  # no --wifi-ssid
        time.sleep(0.3)
        assert len(w.got) == n
    finally:
        w.close()
        clear(broker.ports["plain"], ["petrel/%s/down/secrets" % dev])


def test_hold_publishes_a_sealed_retained_hold_and_bad_usage_exits_2(broker, tmp_path, capsys):
    dev = new_id("h")
    hk = os.urandom(32)
    reg = registry(tmp_path / "devices.sqlite", {dev: hk})
    w = Watcher(broker.ports["plain"], "petrel/%s/down/#" % dev)
    try:
        t0 = time.time()
        assert petrel("hold", dev, "--minutes", 30, "--valid-h", 2, *broker_args(broker, reg)) == 0
        (topic, data, _, _), = w.wait(1)
        ok, _, _, body = opened(data, hand_keys(hk)[0], "hold")
        assert ok and topic.endswith("/down/hold") and body["min"] == 30
        assert t0 + 7200 - 2 <= body["exp"] <= time.time() + 7200
        for argv in (["hold", dev, "--minutes", 0], ["hold", dev, "--minutes", 121],
                     ["hold", dev, "--minutes", 5, "--valid-h", 0], ["hold", dev],
                     ["hold", "p-nobody", "--minutes", 5], ["config", "push", dev],
                     ["config", "push", "--all", tmp_path, dev], ["config", "push", dev, tmp_path / "none"]):
            assert petrel(*argv, *broker_args(broker, reg)) == 2, argv
        assert petrel("hold", dev, "--minutes", 5, "--registry", tmp_path / "missing.sqlite",
                      "--insecure-plain") == 2
        assert petrel("hold", dev, "--minutes", 5, "--registry", reg) == 2  # no --ca, no --insecure-plain
        assert petrel("fleet") == 2 and petrel("secrets") == 2
        for cmd in (["hold"], ["fleet", "status"], ["secrets", "push"], ["config", "push"]):
            assert petrel(*cmd, "--help") == 0
        assert "Exit codes" in capsys.readouterr().out
        time.sleep(0.3)
        assert len(w.got) == 1
    finally:
        w.close()
        clear(broker.ports["plain"], ["petrel/%s/down/hold" % dev])


def test_fleet_status_shows_applied_pending_refusals_and_clock(tmp_path, capsys):
    a, b, c = "p-fa", "p-fb", "p-fc"
    keys = {a: os.urandom(32), b: os.urandom(32), c: os.urandom(32)}
    reg = registry(tmp_path / "devices.sqlite", keys)
    with downlink.Versions(reg) as v:
        v.published(a, "config", 1767225600500)   # applied (cfgv equal): nothing pending
        v.published(b, "config", 1767225609000)   # above what b applied: pending
        v.published(c, "config", 1767225609999)   # c never seen
    st = _store.open(tmp_path / "r.sqlite")
    ver = verify.Verifier(keys)
    st.commit(ver.open("petrel/%s/health" % a, testmsg.health(keys[a], a, 1, {
        "cfgv": 1767225600500, "secv": 0, "dref": 0, "dwhy": "", "cfgerr": "", "tunc": 2}), 1000.0))
    st.commit(ver.open("petrel/%s/health" % b, testmsg.health(keys[b], b, 1, {
        "cfgv": 1767225600100, "secv": 0, "dref": 3, "dwhy": "forged:2 replay:1",
        "cfgerr": "config.json: key 'sample_s' must be an integer", "tunc": -1}), 1000.0))
    st.close()
    assert petrel("fleet", "status", "--db", tmp_path / "r.sqlite", "--registry", reg) == 0
    out = capsys.readouterr().out.splitlines()
    row = dict((line.split()[0], line) for line in out[1:] if line.split()[0] in keys)
    assert out[0].split()[:3] == ["DEVICE", "LAST", "SEEN"]
    assert "v1767225600500" in row[a] and "config v" not in row[a] and "±2 s" in row[a]
    assert "v1767225600100" in row[b] and "config v1767225609000 published" in row[b]
    assert "3 (forged:2 replay:1)" in row[b] and "no trusted time" in row[b]
    assert "never" in row[c] and "config v1767225609999" in row[c]
    assert any(line.startswith(b + ": ") and "sample_s" in line for line in out)
    # without the registry: what the nodes report, nothing pending
    assert petrel("fleet", "status", "--db", tmp_path / "r.sqlite") == 0
    out = capsys.readouterr().out
    assert "p-fc" not in out and "published" not in out
    assert petrel("fleet", "status", "--db", "mysql://x") == 1


# ------------------------------------------------------------ the time service
def test_the_collector_answers_a_time_request_with_the_devices_key_and_only_then(broker, tmp_path):
    plain, provisioned = new_id("ta"), new_id("tb")
    keys = {plain: os.urandom(32), provisioned: os.urandom(32)}
    down = {provisioned: os.urandom(32)}  # a provisioned down_key: the root, not derived
    reg = registry(tmp_path / "devices.sqlite", keys, down)
    assert downlink.load_down_keys(reg) == down
    port = broker.ports["plain"]
    st = _store.open(tmp_path / "r.sqlite")
    col = Collector(st, provision.load_keys(reg), "127.0.0.1", port, insecure_plain=True,
                    client_id="time-" + plain, down_keys=downlink.load_down_keys(reg)).start()
    w = Watcher(port, "petrel/+/down/#")
    node = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="node-" + plain)
    node.connect("127.0.0.1", port)
    node.loop_start()
    try:
        assert col.subscribed.wait(10)
        before = int(time.time() * 1000)
        node.publish("petrel/%s/health" % plain, testmsg.health(keys[plain], plain, 1, {"treq": 0, "batt": 3000}), qos=1)
        node.publish("petrel/%s/health" % plain, testmsg.health(keys[plain], plain, 2, {"batt": 3000}), qos=1)
        node.publish("petrel/%s/health" % plain, testmsg.health(keys[plain], plain, 3, {"treq": 918273}), qos=1)
        node.publish("petrel/%s/health" % provisioned,
                     testmsg.health(keys[provisioned], provisioned, 1, {"treq": -77}), qos=1)
        # forged: another key; answered never, refused and counted by the committer as before
        node.publish("petrel/%s/health" % plain, testmsg.health(os.urandom(32), plain, 4, {"treq": 5}), qos=1)
        got = w.wait(2)
        time.sleep(0.5)
        assert len(w.got) == 2 and col.counts["time"] == 2
        by = dict((t, d) for t, d, retain, _ in got if not retain)
        for dev, nonce in ((plain, 918273), (provisioned, -77)):
            k_mac = hand_keys(keys[dev], down.get(dev))[0]
            ok, version, kid, body = opened(by["petrel/%s/down/time" % dev], k_mac, "time")
            assert ok and kid == dev.encode() and body["n"] == nonce
            assert before <= body["t"] <= time.time() * 1000 and version >= body["t"]
        # the provisioned device's answer is not under the derived key
        assert not opened(by["petrel/%s/down/time" % provisioned], hand_keys(keys[provisioned])[0], "time")[0]
        # every record stored as before, the forged one refused
        wait_for = time.monotonic() + 5
        while st.counts()["health"] < 4 and time.monotonic() < wait_for:
            time.sleep(0.05)
        assert st.counts()["health"] == 4 and st.counts()["refused"] == {"mac": 1}
    finally:
        col.stop()
        node.loop_stop()
        node.disconnect()
        w.close()
        st.close()


def test_no_time_service_answers_nothing(broker, tmp_path):
    dev = new_id("tn")
    key = os.urandom(32)
    port = broker.ports["plain"]
    st = _store.open(tmp_path / "r.sqlite")
    col = Collector(st, {dev: key}, "127.0.0.1", port, insecure_plain=True, client_id="notime-" + dev,
                    time_service=False).start()
    w = Watcher(port, "petrel/%s/down/#" % dev)
    try:
        assert col.subscribed.wait(10)
        c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.publish("petrel/%s/health" % dev, testmsg.health(key, dev, 1, {"treq": 12}), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while st.counts()["health"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert st.counts()["health"] == 1 and w.got == [] and col.counts["time"] == 0
        c.loop_stop()
        c.disconnect()
    finally:
        col.stop()
        w.close()
        st.close()
