"""`petrel provision`: unique identities and keys, the node's files, the registry
the collector reads, refusals of shared and weak keys, and no secret in the output."""

import base64
import hashlib
import json
import os
import random
import secrets
import sqlite3
import stat

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import cose
from petrel import cli, provision
from petrel.broker import Broker, make_pki
from petrel.verify import Rejected, Verifier
from petrel.vm import run_source as run_vm


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(capfd, *argv):
    rc = cli.main(["provision"] + [str(a) for a in argv])
    out, err = capfd.readouterr()
    return rc, out + err


def mtls(pki, out, reg, *more):
    return ("--out", out, "--registry", reg, "--broker-host", "localhost",
            "--broker-ca", pki["ca"], "--ca-cert", pki["ca"], "--ca-key", pki["ca_key"]) + more


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def rows(reg):
    db = sqlite3.connect(str(reg))
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'devices'").fetchone():
            return []  # a refusal rolled back even the table's creation
        return db.execute("SELECT device_id, hmac_key, psk_identity, psk_key_sha256, cert_sha256, "
                          "created FROM devices ORDER BY created").fetchall()
    finally:
        db.close()


def test_two_devices_get_their_own_ids_and_keys_both_registered(tmp_path, capfd):
    reg = tmp_path / "reg.sqlite"
    for name in ("a", "b"):
        rc, out = run(capfd, "--out", tmp_path / name, "--registry", reg, "--psk",
                      "--broker-host", "broker.lan")
        assert rc == 0, out
    a, b = (json.loads((tmp_path / n / "secrets.json").read_text()) for n in "ab")
    ca, cb = (json.loads((tmp_path / n / "config.json").read_text()) for n in "ab")
    assert ca["device_id"] != cb["device_id"]
    assert ca["device_id"].startswith("p-") and len(ca["device_id"]) == 8
    assert a["hmac_key"] != b["hmac_key"] and a["psk_key"] != b["psk_key"]
    assert a["hmac_key"] not in (a["psk_key"], b["psk_key"])
    got = dict((r[0], r) for r in rows(reg))
    assert set(got) == {ca["device_id"], cb["device_id"]}
    for c, s in ((ca, a), (cb, b)):
        r = got[c["device_id"]]
        assert bytes(r[1]).hex() == s["hmac_key"]
        assert r[2] == c["broker"]["psk_identity"] == c["device_id"]
        assert r[3] == hashlib.sha256(bytes.fromhex(s["psk_key"])).hexdigest()
        assert r[5]  # created
    assert mode(reg) == 0o600  # the registry holds every device's key


def test_node_files_have_the_expected_layout_and_permissions(tmp_path, capfd, pki):
    out = tmp_path / "node"
    pw = tmp_path / "wifi.txt"
    pw.write_text("correct horse battery\n")
    rc, log = run(capfd, *mtls(pki, out, tmp_path / "reg.sqlite", "--device-id", "greenhouse-7",
                               "--wifi-ssid", "home", "--wifi-passphrase-file", pw))
    assert rc == 0, log
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert files == ["certs", "certs/ca.der", "certs/client.der", "certs/client.key.der",
                     "config.json", "secrets.json"]
    assert mode(out / "secrets.json") == 0o600
    assert mode(out / "certs" / "client.key.der") == 0o600
    assert not mode(out / "config.json") & 0o022
    config = json.loads((out / "config.json").read_text())
    assert config == {
        "format": 1, "device_id": "greenhouse-7", "topic": "petrel/greenhouse-7",
        "broker": {"host": "localhost", "port": 8883, "tls": "mtls", "ca": "/certs/ca.der",
                   "cert": "/certs/client.der", "key": "/certs/client.key.der"},
        "wifi": {"ssid": "home"}}
    secret = json.loads((out / "secrets.json").read_text())
    assert set(secret) == {"hmac_key", "wifi_psk"}
    assert len(bytes.fromhex(secret["hmac_key"])) == 32
    # the WPA2 PSK as lib/wifi.psk derives it: PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32)
    assert secret["wifi_psk"] == hashlib.pbkdf2_hmac("sha1", b"correct horse battery", b"home",
                                                     4096, 32).hex()
    assert "secrets" not in (out / "config.json").read_text()


def test_client_certificate_is_signed_by_the_ca_and_named_after_the_device(tmp_path, capfd, pki):
    out, reg = tmp_path / "node", tmp_path / "reg.sqlite"
    rc, log = run(capfd, *mtls(pki, out, reg))
    assert rc == 0, log
    device = json.loads((out / "config.json").read_text())["device_id"]
    ca = x509.load_pem_x509_certificate(pki["ca"].read_bytes())
    cert = x509.load_der_x509_certificate((out / "certs" / "client.der").read_bytes())
    cert.verify_directly_issued_by(ca)  # raises unless the CA's key signed it
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc  # never outlives its CA
    key = serialization.load_der_private_key((out / "certs" / "client.key.der").read_bytes(), None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    assert key.curve.name == "secp256r1"
    broker_ca = x509.load_der_x509_certificate((out / "certs" / "ca.der").read_bytes())
    assert broker_ca == ca
    fpr = hashlib.sha256((out / "certs" / "client.der").read_bytes()).hexdigest()
    assert rows(reg)[0][4] == fpr and fpr in log


def test_an_existing_device_id_is_refused_and_nothing_is_written(tmp_path, capfd):
    reg = tmp_path / "reg.sqlite"
    assert run(capfd, "--out", tmp_path / "a", "--registry", reg, "--psk", "--device-id", "n1")[0] == 0
    rc, out = run(capfd, "--out", tmp_path / "b", "--registry", reg, "--psk", "--device-id", "n1")
    assert rc == 1
    assert "already in the registry" in out and "omit it" in out
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.psk").exists()
    assert len(rows(reg)) == 1


def _shuffled_from(values, n, seed):
    rng = random.Random(seed)
    return bytes(rng.choice(values) for _ in range(n))


def _changed(key, where):
    key = bytearray(key)
    for i in where:
        key[i] ^= 0x5A
    return bytes(key)


def _half_repeated(seed):
    """16 random bytes, then the same 16 with half of them replaced: only the
    repeated-pattern check sees it (22 different bytes, bits balanced)."""
    rng = random.Random(seed)
    first = bytes(rng.randrange(256) for _ in range(16))
    second = bytearray(first)
    for i in rng.sample(range(16), 8):
        second[i] = rng.randrange(256)
    return first + bytes(second)


# 16 byte values with four bits set each: only the few-values check sees a shuffle of them
BALANCED_16 = [0x0F, 0xF0, 0x33, 0xCC, 0x55, 0xAA, 0x3C, 0xC3, 0x5A, 0xA5, 0x69, 0x96,
               0x17, 0xE8, 0x2B, 0xD4]

WEAK = {
    "all zero": bytes(32),
    "repeated byte": b"\xa5" * 32,
    "counting": bytes(range(32)),
    "counting from elsewhere": bytes(range(100, 132)),
    "the broker fixture's PSK": bytes.fromhex("00112233445566778899aabbccddeeff"),
    "pattern": bytes.fromhex("deadbeef") * 8,
    "text": b"my-super-secret-key-for-petrel!!",
    # issue 14: exactly half its bytes distinct passed the old check
    "half distinct, period 16": bytes(range(16)) * 2,
    "period 16, three bytes changed": _changed(bytes(range(16)) * 2, (3, 17, 30)),
    "period 8 in a 16-byte PSK": bytes(range(40, 48)) * 2,
    "period 11, not a divisor": (bytes(range(200, 211)) * 3)[:32],
    "counting by 7, four bytes changed": _changed(bytes(7 * i % 256 for i in range(32)), (0, 9, 20, 31)),
    "UTF-16 text": "sup3r s3cret passw0rd for node!"[:16].encode("utf-16-le"),
    "16 byte values shuffled": _shuffled_from(range(0, 256, 16), 32, 1),
    "8 byte values shuffled, 16-byte PSK": _shuffled_from(range(0, 256, 32), 16, 2),
    "period 16, half the bytes changed": _half_repeated(5),
    "16 bit-balanced byte values shuffled": _shuffled_from(BALANCED_16, 32, 6),
    "sparse bits": _shuffled_from([b for b in range(256) if bin(b).count("1") <= 2], 32, 3),
    "dense bits": _shuffled_from([b for b in range(256) if bin(b).count("1") >= 6], 32, 4),
}


@pytest.mark.parametrize("name", sorted(WEAK))
def test_weak_keys_are_refused(tmp_path, capfd, name):
    key = WEAK[name]
    assert len(key) in (16, 32), name
    f = tmp_path / "key.hex"
    f.write_text(key.hex() + "\n")
    reg = tmp_path / "reg.sqlite"
    option = "--hmac-key-file" if len(key) == 32 else "--psk-key-file"
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg, "--psk", option, f)
    assert rc == 1, out
    assert "own random key" in out
    assert not (tmp_path / "n").exists() and rows(reg) == []
    assert key.hex() not in out.lower()


def test_generated_keys_always_pass_the_weakness_checks():
    # 10,000 keys as provisioning draws them (os.urandom), every length it makes;
    # the checks refuse a random key with probability < 2e-7 (see weakness)
    for i in range(10000):
        key = os.urandom(16 + i % 17)
        assert provision.weakness(key) is None, key.hex()


def test_a_random_source_that_gives_weak_keys_is_refused_not_looped_on(tmp_path, capfd, mocker):
    reg = tmp_path / "reg.sqlite"
    calls = mocker.patch("petrel.provision.secrets.token_bytes", side_effect=lambda n: bytes(n))
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg, "--psk")
    assert rc == 1 and "random source" in out and "nothing was written" in out
    assert calls.call_count == provision.GENERATE_TRIES + 1  # and one for the device id
    assert not (tmp_path / "n").exists() and rows(reg) == []


def test_a_key_already_given_to_a_device_is_refused(tmp_path, capfd):
    reg = tmp_path / "reg.sqlite"
    assert run(capfd, "--out", tmp_path / "a", "--registry", reg, "--psk", "--device-id", "node-a")[0] == 0
    a = json.loads((tmp_path / "a" / "secrets.json").read_text())
    for option, key, whose in (
            ("--hmac-key-file", a["hmac_key"], "the payload (HMAC) key of device node-a"),
            ("--psk-key-file", a["psk_key"], "the TLS-PSK key of device node-a"),
            ("--psk-key-file", a["hmac_key"], "the payload (HMAC) key of device node-a")):  # nor across kinds
        f = tmp_path / "key.hex"
        f.write_text(key)
        rc, out = run(capfd, "--out", tmp_path / "b", "--registry", reg, "--psk", option, f)
        assert rc == 1, out
        assert "already used as " + whose in out and "omit the option" in out
        assert key not in out.lower()
    # a good key of one's own is taken, and then is not anyone else's
    own = secrets.token_bytes(32)
    f.write_text(own.hex())
    assert run(capfd, "--out", tmp_path / "b", "--registry", reg, "--hmac-key-file", f, "--psk")[0] == 0
    b_id = json.loads((tmp_path / "b" / "config.json").read_text())["device_id"]
    assert provision.load_keys(reg)[b_id] == own
    rc, out = run(capfd, "--out", tmp_path / "c", "--registry", reg, "--hmac-key-file", f, "--psk")
    assert rc == 1 and "already used as the payload (HMAC) key of device " + b_id in out
    assert own.hex() not in out.lower()
    # nor one key for both jobs on one device
    f.write_text(secrets.token_hex(32))
    rc, out = run(capfd, "--out", tmp_path / "c", "--registry", reg, "--psk",
                  "--hmac-key-file", f, "--psk-key-file", f)
    assert rc == 1 and "this device's payload key" in out
    assert not (tmp_path / "c").exists() and len(rows(reg)) == 2


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o620, 0o602, 0o660, 0o644])
def test_a_registry_others_can_read_or_write_is_refused_and_left_as_it_is(tmp_path, capfd, loose):
    reg = tmp_path / "reg.sqlite"
    assert run(capfd, "--out", tmp_path / "a", "--registry", reg, "--psk")[0] == 0
    reg.chmod(loose)
    rc, out = run(capfd, "--out", tmp_path / "b", "--registry", reg, "--psk")
    assert rc == 1, out
    assert "mode %04o" % loose in out and "chmod 600" in out and "exposed" in out
    assert mode(reg) == loose  # not tightened behind the operator's back
    assert not (tmp_path / "b").exists() and len(rows(reg)) == 1
    reg.chmod(0o600)  # the operator's fix is all it takes
    assert run(capfd, "--out", tmp_path / "b", "--registry", reg, "--psk")[0] == 0
    assert len(rows(reg)) == 2 and mode(reg) == 0o600


def test_a_new_registry_is_0600_whatever_the_umask(tmp_path, capfd):
    old = os.umask(0)
    try:
        assert run(capfd, "--out", tmp_path / "a", "--registry", tmp_path / "reg.sqlite", "--psk")[0] == 0
    finally:
        os.umask(old)
    assert mode(tmp_path / "reg.sqlite") == 0o600


def test_a_ca_key_that_is_not_the_cas_is_refused(tmp_path, capfd, pki):
    reg = tmp_path / "reg.sqlite"
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg, "--broker-ca", pki["ca"],
                  "--ca-cert", pki["ca"], "--ca-key", pki["server_key"])
    assert rc == 1 and "is not the private key of --ca-cert" in out
    assert not (tmp_path / "n").exists()
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg, "--broker-ca", pki["ca"],
                  "--ca-cert", pki["ca"])
    assert rc == 2 and "--ca-cert needs --ca-key" in out
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg, "--broker-ca", pki["ca"],
                  "--ca-cert", pki["server"], "--ca-key", pki["server_key"])
    assert rc == 1 and "is not a CA certificate" in out
    assert not (tmp_path / "n").exists()


def test_usage_and_file_errors_say_what_to_do(tmp_path, capfd, pki):
    reg = tmp_path / "reg.sqlite"
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg)
    assert rc == 2 and "--broker-ca" in out and "--psk" in out
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg, "--psk", "--device-id", "a/b")
    assert rc == 2 and "--device-id" in out
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", reg, "--broker-ca", tmp_path / "nope.pem")
    assert rc == 1 and "cannot read --broker-ca" in out
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", tmp_path / "no" / "reg.sqlite", "--psk")
    assert rc == 1 and "cannot write the registry" in out
    (tmp_path / "junk.sqlite").write_text("not a database, just text that is long enough " * 20)
    (tmp_path / "junk.sqlite").chmod(0o600)
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", tmp_path / "junk.sqlite", "--psk")
    assert rc == 1 and "cannot write the registry" in out
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    rc, out = run(capfd, "--out", tmp_path / "full", "--registry", reg, "--psk")
    assert rc == 1 and "not an empty folder" in out
    assert not (tmp_path / "n").exists()


def test_no_secret_appears_in_the_output(tmp_path, capfd, pki):
    pw = tmp_path / "wifi.txt"
    pw.write_text("correct horse battery\n")
    reg = tmp_path / "reg.sqlite"
    rc, out1 = run(capfd, *mtls(pki, tmp_path / "a", reg, "--wifi-ssid", "home",
                                "--wifi-passphrase-file", pw))
    rc2, out2 = run(capfd, "--out", tmp_path / "b", "--registry", reg, "--psk",
                    "--wifi-ssid", "home", "--wifi-psk-hex", "ab" * 32)
    assert rc == rc2 == 0
    a = json.loads((tmp_path / "a" / "secrets.json").read_text())
    b = json.loads((tmp_path / "b" / "secrets.json").read_text())
    # a refusal must not echo the key it refuses either
    f = tmp_path / "reuse.hex"
    f.write_text(b["psk_key"])
    rc3, out3 = run(capfd, "--out", tmp_path / "c", "--registry", reg, "--psk", "--psk-key-file", f)
    assert rc3 == 1
    keys = [bytes.fromhex(h) for h in (a["hmac_key"], a["wifi_psk"], b["hmac_key"], b["psk_key"])]
    keys.append((tmp_path / "a" / "certs" / "client.key.der").read_bytes())
    text = (out1 + out2 + out3).lower()
    for k in keys:
        for form in (k.hex(), k.hex()[:16], base64.b64encode(k).decode(),
                     base64.b64encode(k).decode()[:12], base64.urlsafe_b64encode(k).decode()[:12]):
            assert form.lower() not in text, form
    assert "correct horse" not in text
    assert str(tmp_path / "a" / "secrets.json").lower() in text  # files are named, though


def test_load_keys_feeds_the_collector(tmp_path, capfd):
    reg = tmp_path / "reg.sqlite"
    for name in "ab":
        assert run(capfd, "--out", tmp_path / name, "--registry", reg, "--psk")[0] == 0
    keys = provision.load_keys(reg)
    devs = []
    for name in "ab":
        dev = json.loads((tmp_path / name / "config.json").read_text())["device_id"]
        assert keys[dev].hex() == json.loads((tmp_path / name / "secrets.json").read_text())["hmac_key"]
        devs.append(dev)
    assert len(keys) == 2
    v = Verifier(keys)
    payload = cbor2.dumps([{-2: devs[0] + "/", 0: "t", 1: "Cel", 2: 21.5, 6: 1760000000, "i": 1}])
    topic = "petrel/%s/up" % devs[0]
    msg = v.open(topic, cose.mac0(keys[devs[0]], devs[0].encode(), 1, payload))
    assert [(r.device, r.channel, r.unit, r.value, r.time) for r in msg.readings] == [
        (devs[0], "t", "Cel", 21.5, 1760000000)]
    with pytest.raises(Rejected, match="mac"):  # another device's key does not pass as this one
        v.open(topic, cose.mac0(keys[devs[1]], devs[0].encode(), 2, payload))
    with pytest.raises(Rejected, match="unknown_kid"):
        v.open("petrel/p-000000/up", cose.mac0(keys[devs[0]], b"p-000000", 3, payload))


# The node's side, on the MicroPython VM: config.json and secrets.json as the
# board would read them, certificates from certs/.
NODE = """
import sys, json, mqtt
base, port = sys.argv[1], int(sys.argv[2])
cfg = json.load(open(base + "/config.json"))
sec = json.load(open(base + "/secrets.json"))
b = cfg["broker"]
rd = lambda p: open(base + p, "rb").read()
if b["tls"] == "psk":
    ctx = mqtt.tls_context(psk_identity=b["psk_identity"].encode(),
                           psk_key=bytes.fromhex(sec["psk_key"]))
else:
    ctx = mqtt.tls_context(ca=rd(b["ca"]), cert=rd(b["cert"]) if "cert" in b else None,
                           key=rd(b["key"]) if "key" in b else None)
c = mqtt.MQTTClient(cfg["device_id"], "127.0.0.1", port, ssl_context=ctx,
                    server_hostname=b["host"], timeout_ms=3000)
try:
    c.connect()
except mqtt.MQTTError as e:
    print("REFUSED", e)
    sys.exit(0)
c.publish(cfg["topic"] + "/up", b"hello", qos=1)
c.wait_all()
print("ACKED", len(c.acked))
c.disconnect()
"""


def test_the_client_certificate_gets_the_node_into_the_mtls_broker(tmp_path, capfd, broker):
    p = broker.pki
    rc, out = run(capfd, "--out", tmp_path / "n", "--registry", tmp_path / "reg.sqlite",
                  "--broker-host", "localhost", "--broker-ca", p["ca"], "--ca-cert", p["ca"],
                  "--ca-key", p["ca_key"])
    assert rc == 0, out
    rc, out = run_vm(NODE, [tmp_path / "n", broker.ports["mtls"]], timeout=60)
    assert "ACKED 1" in out, out


def test_the_generated_psk_gets_the_node_into_the_broker(tmp_path, capfd):
    reg = tmp_path / "reg.sqlite"
    for name in "ab":
        assert run(capfd, "--out", tmp_path / name, "--registry", reg, "--psk",
                   "--broker-host", "localhost")[0] == 0
    # the broker operator's psk_file: the line provisioning wrote, for device a only
    ident, key = (tmp_path / "a.psk").read_text().strip().split(":")
    assert mode(tmp_path / "a.psk") == 0o600
    with Broker(tmp_path / "broker", psk={ident: key}) as b:
        rc, out = run_vm(NODE, [tmp_path / "a", b.ports["psk"]], timeout=60)
        assert "ACKED 1" in out, out
        rc, out = run_vm(NODE, [tmp_path / "b", b.ports["psk"]], timeout=60)
        assert "REFUSED" in out, out  # b's identity is not in this psk_file


def test_the_firmware_accepts_what_provision_writes(tmp_path):
    import json

    from app import config

    out = tmp_path / "node"
    ca = tmp_path / "ca"
    from petrel.broker import make_pki

    pki = make_pki(ca)
    from petrel import cli

    rc = cli.main(["provision", "--out", str(out), "--registry", str(tmp_path / "reg.sqlite"),
                   "--broker-ca", str(pki["ca"]), "--broker-host", "broker.lan",
                   "--wifi-ssid", "home", "--wifi-open"])
    assert rc == 0
    c = config.check(json.loads((out / "config.json").read_text()))
    assert c.broker.host == "broker.lan" and c.broker.ca == "/certs/ca.der"
    config.check_secrets(json.loads((out / "secrets.json").read_text()))


def test_a_wifi_ssid_without_a_passphrase_is_refused_unless_said_open(tmp_path, capfd):
    base = ("--out", tmp_path / "n", "--registry", tmp_path / "reg.sqlite", "--psk",
            "--broker-host", "broker.lan", "--wifi-ssid", "home")
    rc, out = run(capfd, *base)
    assert rc == 2 and "--wifi-ssid home has no passphrase: give --wifi-passphrase-file FILE" in out
    assert not (tmp_path / "n").exists() and not (tmp_path / "reg.sqlite").exists()
    rc, out = run(capfd, *base + ("--wifi-open",))
    assert rc == 0 and "wifi_psk" not in (tmp_path / "n" / "secrets.json").read_text()
    rc, out = run(capfd, "--out", tmp_path / "m", "--registry", tmp_path / "reg.sqlite", "--psk",
                  "--wifi-open")
    assert rc == 2 and "--wifi-open is for an open network" in out


def test_provision_ends_with_the_next_command(tmp_path, capfd):
    rc, out = run(capfd, "--out", tmp_path / "nodes" / "new", "--registry", tmp_path / "reg.sqlite",
                  "--psk", "--broker-host", "broker.lan")
    lines = out.strip().splitlines()
    assert rc == 0
    assert lines[-2] == "next: petrel run --config %s --board esp32-devkitc" % (tmp_path / "nodes" / "new")
    assert "esp32-s3-devkitc" in lines[-1] and "--port PORT" in lines[-1]
    assert "copy the contents" not in out


def test_devices_are_listed_and_a_revoked_ones_keys_never_come_back(tmp_path, capfd):
    reg = tmp_path / "reg.sqlite"
    for name in ("a", "b"):
        assert run(capfd, "--out", tmp_path / name, "--registry", reg, "--psk", "--device-id",
                   "node-" + name, "--broker-host", "broker.lan")[0] == 0
    assert cli.main(["devices", "list", "--registry", str(reg)]) == 0
    out = capfd.readouterr().out
    assert "node-a" in out and "node-b" in out and "2 devices in" in out
    hmac_a = json.loads((tmp_path / "a" / "secrets.json").read_text())["hmac_key"]
    assert hmac_a not in out  # a key id, never the key
    assert cli.main(["devices", "revoke", "node-a", "--registry", str(reg)]) == 0
    out = capfd.readouterr().out
    assert "revoked node-a" in out and "psk_file" in out
    assert set(provision.load_keys(reg)) == {"node-b"}  # the collector no longer takes node-a's
    assert cli.main(["devices", "list", "--registry", str(reg)]) == 0
    out = capfd.readouterr().out
    assert "node-a" not in out.splitlines()[1] and "1 device in" in out and "revoked: node-a (" in out
    key = tmp_path / "k.hex"
    key.write_text(hmac_a)
    rc, out = run(capfd, "--out", tmp_path / "c", "--registry", reg, "--psk", "--hmac-key-file", key,
                  "--broker-host", "broker.lan")
    assert rc == 1 and "revoked device node-a" in out
    assert cli.main(["devices", "revoke", "node-a", "--registry", str(reg)]) == 1
    assert "no device node-a" in capfd.readouterr().err
    assert cli.main(["devices", "list", "--registry", str(tmp_path / "none.sqlite")]) == 2


def test_what_provision_writes_by_default_is_ignored_by_git(tmp_path):
    import subprocess

    from petrel.paths import ROOT

    # the README's paths: the registry, a node's folder and its broker line
    for path in ("devices.sqlite", "nodes/new/secrets.json", "nodes/new/config.json",
                 "nodes/new.psk", "wifi.txt", "node.log"):
        p = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path])
        assert p.returncode == 0, "%s is not ignored: one `git add .` from a commit" % path
