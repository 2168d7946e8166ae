"""`petrel provision`: one device's identity and secrets, unique to it.

Creates in OUT what is copied to the board's root:

    OUT/config.json          device id, broker host/port, TLS mode, topic, Wi-Fi SSID
    OUT/secrets.json         (0600) HMAC key, TLS-PSK key, Wi-Fi PSK, as hex
    OUT/certs/ca.der         the CA that signed the broker's certificate (--broker-ca)
    OUT/certs/client.der     client certificate, CN = device id (--ca-cert/--ca-key)
    OUT/certs/client.key.der (0600) its EC P-256 key

and records the device in the registry (SQLite, table `devices`), where the
collector finds the HMAC key: Verifier(load_keys(registry)). With --psk, the
line for Mosquitto's psk_file goes to OUT.psk (0600), for the broker operator.

Never prints a secret; refuses shared, reused and weak keys (ETSI EN 303 645
5.1 and 5.4: no universal default credentials, per-device secrets): a key
given by file that is periodic, counting, of few byte values or printable, or
that another device in the registry already has (it says which device). An
existing registry must have mode 0600 (else refused, with what to do).
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import secrets
import sqlite3
import stat
import sys
from pathlib import Path

# MQTT 3.1.1 servers must accept client ids of 1..23 of these characters; no
# '/', '+', '#' so the id can sit in a topic, a file name and a certificate CN.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,22}$")
HMAC_LEN = 32
SCHEMA = """CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    hmac_key BLOB NOT NULL UNIQUE,
    psk_identity TEXT UNIQUE,
    psk_key_sha256 TEXT UNIQUE,
    cert_sha256 TEXT,
    created TEXT NOT NULL)"""
# A revoked device's row leaves `devices` (the collector stops taking its
# messages); the hashes of its keys stay here so no later device gets them.
REVOKED_SCHEMA = """CREATE TABLE IF NOT EXISTS revoked (
    device_id TEXT NOT NULL,
    hmac_key_sha256 TEXT NOT NULL,
    psk_key_sha256 TEXT,
    revoked TEXT NOT NULL)"""
# Keys that appear in examples and tests (this project's included): refused
# even when the generic checks below would let them through.
KNOWN_KEYS = {bytes(range(32)), bytes(range(16)), bytes(range(100, 132)),
              bytes.fromhex("00112233445566778899aabbccddeeff"),
              b"0123456789abcdef", b"0123456789abcdef" * 2}


class Refused(Exception):
    """Provisioning cannot go on; the message says what to do. code: exit code."""

    def __init__(self, msg, code=1):
        super().__init__(msg)
        self.code = code


def weakness(key):
    """Why key is not fit to be a device key, or None.

    Each check looks for structure random bytes do not have; for a key of
    16..32 bytes from os.urandom the chance of a refusal is below 2e-7 (16
    bytes, mostly "printable text"; 32 bytes: 1.4e-10), and a generated key
    that fails is simply drawn again (bounds worked out for each length):
      repeated pattern  for some shift p <= n/2, at least half of the bytes equal
                        the byte p further on (catches bytes(range(16)) * 2, a
                        pattern with a few bytes changed, UTF-16 text); < 2e-8
      counting          at least half of the steps between neighbours equal; < 1e-12
      few byte values   fewer than 5/8 n different bytes (8 or 16 values
                        shuffled); < 1e-7
      bit balance       fewer than 1/4 or more than 3/4 of the bits set; < 5e-9
      printable text    (95/256)**n: 1.3e-7 at 16 bytes"""
    n = len(key)
    if key in KNOWN_KEYS:
        return "a well-known test key"
    if n < 2:
        return "too short"
    if len(set(key)) == 1:
        return "one repeated byte"
    for shift in range(1, n // 2 + 1):
        same = sum(1 for i in range(n - shift) if key[i] == key[i + shift])
        if 2 * same >= n - shift:
            return "a repeated pattern"
    steps = [(key[i + 1] - key[i]) % 256 for i in range(n - 1)]
    if 2 * max(steps.count(step) for step in set(steps)) >= n - 1:
        return "a counting sequence"
    if 8 * len(set(key)) < 5 * n:
        return "made of too few different byte values"
    ones = sum(bin(b).count("1") for b in key)
    if not 2 * n <= ones <= 6 * n:  # 8n bits, a quarter of them is 2n
        return "mostly %s bits" % ("0" if ones < 2 * n else "1")
    if all(32 <= b < 127 for b in key):
        return "printable text, not random bytes"
    return None


def key_id(key):
    """A fingerprint to tell keys apart in output, never the key."""
    return hashlib.sha256(key).hexdigest()[:16]


def load_keys(registry_path):
    """{device_id: HMAC key bytes} from the registry, for the collector (petrel.verify.Verifier)."""
    uri = Path(registry_path).resolve().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        return dict((row[0], bytes(row[1])) for row in
                    db.execute("SELECT device_id, hmac_key FROM devices"))
    finally:
        db.close()


# ------------------------------------------------------------ files
def _read(path, what):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise Refused("cannot read %s %s: %s; check the path and its permissions"
                      % (what, path, e.strerror or e))


def _hex_key(path, what, lengths):
    text = _read(path, what).decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) not in lengths:
        raise Refused("%s %s must hold %s bytes as hex digits" % (
            what, path, "%d..%d" % (min(lengths), max(lengths)) if len(lengths) > 1 else lengths[0]), 2)
    return key


def _certs(path, what):
    from cryptography import x509

    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data \
            else [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise Refused("%s %s is not a PEM or DER certificate: %s" % (what, path, e))


def _current(cert, what, path):
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Refused("%s %s is not valid now (%s .. %s): give a current certificate" % (
            what, path, cert.not_valid_before_utc.date(), cert.not_valid_after_utc.date()))


def _ca(cert_path, key_path):
    """The signing CA: a current CA certificate and its own private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certs = _certs(cert_path, "--ca-cert")
    if len(certs) != 1:
        raise Refused("--ca-cert %s holds %d certificates: give the one CA that signs devices"
                      % (cert_path, len(certs)), 2)
    ca = certs[0]
    try:
        if not ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise x509.ExtensionNotFound("not a CA", None)
    except x509.ExtensionNotFound:
        raise Refused("--ca-cert %s is not a CA certificate (no basicConstraints CA:TRUE)" % cert_path)
    _current(ca, "--ca-cert", cert_path)
    data = _read(key_path, "--ca-key")
    load = serialization.load_pem_private_key if b"-----BEGIN" in data \
        else serialization.load_der_private_key
    try:
        key = load(data, password=None)
    except TypeError:
        import getpass

        if not sys.stdin.isatty():
            raise Refused("--ca-key %s is encrypted: run in a terminal to be asked for its "
                          "password" % key_path)
        try:
            key = load(data, password=getpass.getpass("password for %s: " % key_path).encode())
        except ValueError:
            raise Refused("wrong password for --ca-key %s" % key_path)
    except ValueError as e:
        raise Refused("--ca-key %s is not a private key (PEM or DER): %s" % (key_path, e))
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != ca.public_key().public_bytes(*spki):
        raise Refused("--ca-key %s is not the private key of --ca-cert %s: give the key that "
                      "belongs to this CA (`openssl x509 -noout -pubkey -in CERT` and "
                      "`openssl pkey -pubout -in KEY` must print the same)" % (key_path, cert_path))
    return ca, key


def _client_cert(device_id, ca, ca_key, days):
    """EC P-256 key and certificate (CN = device id, clientAuth), never
    outliving the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    end = min(now + datetime.timedelta(days=days), ca.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate clock skew
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False))
    ed = isinstance(ca_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
    return cert.sign(ca_key, None if ed else hashes.SHA256()), key


def _write(path, data, mode=0o644):
    """A new file (never overwrites), created with its final mode so a secret
    is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# ------------------------------------------------------------ registry
def _check_registry_mode(path):
    """An existing registry must be its owner's alone: it holds every device's
    payload key, and whoever can write it can register a key of their own.
    Refused, not tightened: if others could read it the keys may already be out
    (chmod would hide that), and a collector that reads it through its group
    would stop without a word; the operator decides, the message says how."""
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise Refused("the registry %s has mode %04o: it holds every device's payload key, so "
                      "only its owner may read or write it. If others could read it, treat those "
                      "keys as exposed (provision the devices again); then `chmod 600 %s` and run "
                      "again (nothing was written)" % (path, stat.S_IMODE(st.st_mode), path))


def _open_registry(path):
    path = Path(path)
    try:
        if not path.exists():
            _write(path, b"", 0o600)  # it holds every device's HMAC key
        else:
            _check_registry_mode(path)
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # one provisioning at a time: ids and keys stay unique
        db.execute(SCHEMA)
        db.execute(REVOKED_SCHEMA)
    except (OSError, sqlite3.Error) as e:
        raise Refused("cannot write the registry %s: %s; check that its folder exists and is "
                      "writable, and that it is a Petrel registry (SQLite)" % (path, e))
    return db


def _used_keys(db):
    """SHA-256 of every key already given to a device -> whose it is."""
    used = {}
    for dev, hmac_key, psk_hash in db.execute(
            "SELECT device_id, hmac_key, psk_key_sha256 FROM devices"):
        used[hashlib.sha256(bytes(hmac_key)).hexdigest()] = "the payload (HMAC) key of device " + dev
        if psk_hash:
            used[psk_hash] = "the TLS-PSK key of device " + dev
    for dev, hmac_hash, psk_hash in db.execute(
            "SELECT device_id, hmac_key_sha256, psk_key_sha256 FROM revoked"):
        used[hmac_hash] = "the payload (HMAC) key of revoked device " + dev
        if psk_hash:
            used[psk_hash] = "the TLS-PSK key of revoked device " + dev
    return used


GENERATE_TRIES = 64  # a random source that fails this often in a row is broken


def _fresh_key(n, used, given=None, what="key"):
    """A key no device has and no check calls weak: the one given, or a new one
    from os.urandom. Messages name the check and the device, never the key."""
    if given is not None:
        why, other = weakness(given), used.get(hashlib.sha256(given).hexdigest())
        if why:
            raise Refused("%s is %s: every device needs its own random key; omit the option "
                          "to have one generated" % (what, why))
        if other:
            raise Refused("%s is already used as %s: keys are never shared; omit the "
                          "option to have a new one generated" % (what, other))
        return given
    for _ in range(GENERATE_TRIES):
        key = secrets.token_bytes(n)  # os.urandom
        if weakness(key) is None and hashlib.sha256(key).hexdigest() not in used:
            return key
        # else: astronomically rare for random bytes: draw again
    raise Refused("the system's random source gave %d keys in a row that are weak or already "
                  "used: it is not random; fix it before provisioning (nothing was written)"
                  % GENERATE_TRIES)


# ------------------------------------------------------------ the command
def _check_usage(args):
    """Refused (code 2) on bad or clashing options; returns the Wi-Fi PSK hex or None."""
    if args.device_id is not None and not ID_RE.match(args.device_id):
        raise Refused("--device-id %r: use 1..23 letters, digits, '-' or '_', starting with a "
                      "letter or digit (it is the MQTT client id and the certificate CN)"
                      % args.device_id, 2)
    if bool(args.ca_cert) != bool(args.ca_key):
        raise Refused("--ca-cert needs --ca-key (the CA's private key, to sign the device's "
                      "certificate)" if args.ca_cert else
                      "--ca-key needs --ca-cert (the CA certificate it belongs to)", 2)
    if args.psk and (args.ca_cert or args.broker_ca):
        raise Refused("--psk is its own TLS mode: give either --psk or --broker-ca "
                      "(with --ca-cert/--ca-key for mutual TLS), not both", 2)
    if not args.psk and not args.broker_ca:
        raise Refused("the node must authenticate the broker: give --broker-ca CA.pem (the CA "
                      "that signed the broker's certificate) or --psk for TLS-PSK", 2)
    if args.ca_cert and not args.broker_ca:
        raise Refused("mutual TLS also needs --broker-ca (the CA that signed the broker's "
                      "certificate; often the same file as --ca-cert)", 2)
    if not 16 <= args.psk_bytes <= 32:
        raise Refused("--psk-bytes must be 16..32", 2)
    if not 0 < args.broker_port < 65536:
        raise Refused("--broker-port must be 1..65535", 2)
    if (args.psk_key_file or args.psk_identity) and not args.psk:
        raise Refused("--psk-key-file and --psk-identity go with --psk", 2)
    if args.psk_identity is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                                                      args.psk_identity):
        raise Refused("--psk-identity: use 1..64 letters, digits, '.', '-' or '_' (it is a field "
                      "of Mosquitto's psk_file)", 2)
    if args.wifi_ssid and not (args.wifi_psk_hex or args.wifi_passphrase_file or args.wifi_open):
        raise Refused("--wifi-ssid %s has no passphrase: give --wifi-passphrase-file FILE (or "
                      "--wifi-psk-hex), or --wifi-open for a network without one" % args.wifi_ssid, 2)
    if args.wifi_open and (args.wifi_psk_hex or args.wifi_passphrase_file or not args.wifi_ssid):
        raise Refused("--wifi-open is for an open network: give it with --wifi-ssid and "
                      "without a passphrase", 2)
    if args.wifi_psk_hex and args.wifi_passphrase_file:
        raise Refused("give --wifi-psk-hex or --wifi-passphrase-file, not both", 2)
    wifi_psk = None
    if args.wifi_psk_hex is not None:
        if not re.match(r"^[0-9a-fA-F]{64}$", args.wifi_psk_hex):
            raise Refused("--wifi-psk-hex must be the 64 hex digits of the WPA2 PSK "
                          "(or use --wifi-passphrase-file)", 2)
        wifi_psk = args.wifi_psk_hex.lower()
    if args.wifi_passphrase_file:
        if not args.wifi_ssid:
            raise Refused("--wifi-passphrase-file needs --wifi-ssid (the PSK is derived from both)", 2)
        phrase = (_read(args.wifi_passphrase_file, "--wifi-passphrase-file").splitlines() or [b""])[0]
        if not 8 <= len(phrase) <= 63:
            raise Refused("the WPA2 passphrase in %s must be 8..63 characters"
                          % args.wifi_passphrase_file, 2)
        # Derived here once (as lib/wifi.psk does): seconds of CPU the node never spends.
        wifi_psk = hashlib.pbkdf2_hmac("sha1", phrase, args.wifi_ssid.encode(), 4096, 32).hex()
    if wifi_psk and not args.wifi_ssid:
        raise Refused("a Wi-Fi PSK needs --wifi-ssid", 2)
    return wifi_psk


def provision(args, out=print):
    """Do it; returns the device id. Refused on anything that stops it."""
    wifi_psk = _check_usage(args)

    # Everything read and checked before anything is written.
    ca = ca_key = broker_ca = None
    if args.ca_cert:
        ca, ca_key = _ca(args.ca_cert, args.ca_key)
    if args.broker_ca:
        certs = _certs(args.broker_ca, "--broker-ca")
        if len(certs) != 1:
            # The ESP32 port's cadata takes one DER certificate.
            raise Refused("--broker-ca %s holds %d certificates: the node takes one; give the CA "
                          "that signed the broker's certificate" % (args.broker_ca, len(certs)), 2)
        broker_ca = certs[0]
        _current(broker_ca, "--broker-ca", args.broker_ca)
    given_hmac = _hex_key(args.hmac_key_file, "--hmac-key-file", (HMAC_LEN,)) \
        if args.hmac_key_file else None
    given_psk = _hex_key(args.psk_key_file, "--psk-key-file", range(16, 33)) \
        if args.psk_key_file else None
    outdir = Path(args.out)
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise Refused("%s exists and is not an empty folder: give a new folder for this "
                      "device (nothing was written)" % outdir)
    psk_file = outdir.parent / (outdir.resolve().name + ".psk")
    if args.psk and psk_file.exists():
        raise Refused("%s already exists: give another --out (nothing was written)" % psk_file)

    db = _open_registry(args.registry)
    created = []
    try:
        known = set(r[0] for r in db.execute("SELECT device_id FROM devices"))
        used = _used_keys(db)
        if args.device_id is None:
            device_id = "p-" + secrets.token_hex(3)
            while device_id in known:
                device_id = "p-" + secrets.token_hex(3)
        elif args.device_id in known:
            raise Refused("device %s is already in the registry %s: choose another --device-id, "
                          "or omit it to have a new one made" % (args.device_id, args.registry))
        else:
            device_id = args.device_id
        hmac_key = _fresh_key(HMAC_LEN, used, given_hmac, "the key in --hmac-key-file")
        used[hashlib.sha256(hmac_key).hexdigest()] = "this device's payload key"  # PSK differs too
        psk_key = psk_identity = None
        if args.psk:
            psk_key = _fresh_key(args.psk_bytes, used, given_psk, "the key in --psk-key-file")
            psk_identity = args.psk_identity or device_id
            if db.execute("SELECT 1 FROM devices WHERE psk_identity = ?", (psk_identity,)).fetchone():
                raise Refused("PSK identity %s is already taken: omit --psk-identity (the device "
                              "id is used) or choose another" % psk_identity)

        cert = cert_fpr = None
        if ca is not None:
            cert, cert_key = _client_cert(device_id, ca, ca_key, args.cert_days)
        files = {}
        broker = {"host": args.broker_host, "port": args.broker_port,
                  "tls": "psk" if args.psk else ("mtls" if ca else "tls")}
        if broker_ca is not None:
            files["certs/ca.der"] = (_der(broker_ca), 0o644)
            broker["ca"] = "/certs/ca.der"
        if cert is not None:
            from cryptography.hazmat.primitives import serialization as s

            der = _der(cert)
            cert_fpr = hashlib.sha256(der).hexdigest()
            files["certs/client.der"] = (der, 0o644)
            # SEC1 DER, the form the Mosquitto tests already load with MicroPython's tls.
            files["certs/client.key.der"] = (cert_key.private_bytes(
                s.Encoding.DER, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()), 0o600)
            broker["cert"], broker["key"] = "/certs/client.der", "/certs/client.key.der"
        if psk_identity:
            broker["psk_identity"] = psk_identity
        config = {"format": 1, "device_id": device_id, "topic": args.topic_prefix + "/" + device_id,
                  "broker": broker, "wifi": {"ssid": args.wifi_ssid} if args.wifi_ssid else None}
        secret = {"hmac_key": hmac_key.hex()}
        if psk_key:
            secret["psk_key"] = psk_key.hex()
        if wifi_psk:
            secret["wifi_psk"] = wifi_psk
        files["config.json"] = (_json(config), 0o644)
        files["secrets.json"] = (_json(secret), 0o600)

        try:
            if not outdir.exists():
                outdir.mkdir(parents=True)
                created.append(outdir)
            if cert is not None or broker_ca is not None:
                (outdir / "certs").mkdir()
                created.append(outdir / "certs")
            for name, (data, mode) in sorted(files.items()):
                _write(outdir / name, data, mode)
                created.append(outdir / name)
            if psk_key:
                _write(psk_file, ("%s:%s\n" % (psk_identity, psk_key.hex())).encode(), 0o600)
                created.append(psk_file)
        except OSError as e:
            raise Refused("cannot write %s: %s; check that it is writable" % (
                e.filename or outdir, e.strerror or e))
        try:
            db.execute("INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?)", (
                device_id, hmac_key, psk_identity,
                hashlib.sha256(psk_key).hexdigest() if psk_key else None, cert_fpr,
                datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            raise Refused("cannot write the registry %s: %s; check that it is writable"
                          % (args.registry, e))
        created = []
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
        for p in reversed(created):  # a half-provisioned device leaves nothing behind
            p.rmdir() if p.is_dir() else p.unlink()

    out("provisioned %s (TLS mode %s), registered in %s" % (device_id, broker["tls"], args.registry))
    for name, (_data, mode) in sorted(files.items()):
        out(("  %-40s secret, mode 0600" if mode == 0o600 else "  %s") % (outdir / name))
    out("  hmac key      %d bytes, key id %s" % (len(hmac_key), key_id(hmac_key)))
    if psk_key:
        out("  tls-psk       identity %s, %d bytes, key id %s" % (psk_identity, len(psk_key),
                                                                 key_id(psk_key)))
        out("  %s: the line for the broker's psk_file (give it to the broker operator)" % psk_file)
    if cert_fpr:
        out("  client cert   CN=%s, sha256 %s" % (device_id, cert_fpr))
    if not args.broker_host:
        out("note: no --broker-host: set broker.host in %s before deploying"
            % (outdir / "config.json"))
    out("next: petrel run --config %s --board esp32-devkitc" % outdir)
    out("  (--board: your board's profile in boards/, one of %s; --port PORT when more than "
        "one board is plugged in)" % ", ".join(_board_names()))
    return device_id


def _board_names():
    from . import boards

    return [n for n in boards.names() if n != "sim"]


# ------------------------------------------------------------ the registry
def list_devices(registry, out=print):
    db = _open_registry_ro(registry)
    try:
        rows = db.execute("SELECT device_id, hmac_key, psk_identity, cert_sha256, created "
                          "FROM devices ORDER BY created, device_id").fetchall()
        revoked = db.execute("SELECT device_id, revoked FROM revoked ORDER BY revoked").fetchall() \
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'revoked'").fetchone() else []
    finally:
        db.close()
    out("%-24s %-5s %-26s %s" % ("device", "tls", "created", "hmac key id"))
    for dev, hmac_key, psk_identity, cert, created in rows:
        out("%-24s %-5s %-26s %s" % (dev, "psk" if psk_identity else ("mtls" if cert else "tls"),
                                     created, key_id(bytes(hmac_key))))
    out("%d device%s in %s%s" % (len(rows), "" if len(rows) == 1 else "s", registry,
                                 "; revoked: " + ", ".join("%s (%s)" % r for r in revoked)
                                 if revoked else ""))


def revoke(registry, device_id, out=print):
    db = _open_registry(registry)
    try:
        row = db.execute("SELECT hmac_key, psk_identity, psk_key_sha256 FROM devices "
                         "WHERE device_id = ?", (device_id,)).fetchone()
        if row is None:
            raise Refused("no device %s in %s (petrel devices list --registry %s shows them)"
                          % (device_id, registry, registry))
        db.execute("INSERT INTO revoked VALUES (?, ?, ?, ?)", (
            device_id, hashlib.sha256(bytes(row[0])).hexdigest(), row[2],
            datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))
        db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
    out("revoked %s in %s: a collector started from now on refuses its messages (restart the "
        "running ones); its keys are never given to another device" % (device_id, registry))
    if row[1]:
        out("  the broker operator removes the line for PSK identity %s from Mosquitto's "
            "psk_file (and reloads it)" % row[1])


def _open_registry_ro(path):
    if not Path(path).is_file():
        raise Refused("no registry %s (petrel provision --registry %s makes it)" % (path, path), 2)
    _check_registry_mode(path)
    try:
        return sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise Refused("cannot read the registry %s: %s" % (path, e))


def _cmd_devices(args):
    try:
        if args.devices_command == "revoke":
            revoke(args.registry, args.device_id)
        else:
            list_devices(args.registry)
    except Refused as e:
        print("petrel devices: %s" % e, file=sys.stderr)
        return e.code
    except sqlite3.Error as e:
        print("petrel devices: the registry %s cannot be read as one (%s)" % (args.registry, e),
              file=sys.stderr)
        return 1
    return 0


def _der(cert):
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def _json(obj):
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _cmd(args):
    try:
        provision(args)
    except Refused as e:
        print("petrel provision: %s" % e, file=sys.stderr)
        return e.code
    return 0


def register(sub):
    p = sub.add_parser(
        "provision", help="make one device's identity, keys and certificates, and register it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n", 1)[1].strip() + """

Stock MicroPython has no flash encryption: anyone holding the board can read
secrets.json with esptool. Each device's keys are its own, so one board read
out does not give away another.

Exit codes: 0 provisioned; 1 refused or failed (nothing written, nothing
registered); 2 bad usage.""",
        epilog="""example:
  petrel provision --out build/node --registry devices.sqlite \\
      --broker-host broker.lan --broker-ca ca.pem --ca-cert ca.pem --ca-key ca.key \\
      --wifi-ssid home --wifi-passphrase-file wifi.txt
  petrel provision --out build/node2 --registry devices.sqlite --broker-host broker.lan --psk""")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="new or empty folder for the board's files")
    p.add_argument("--registry", required=True, metavar="REGISTRY.sqlite",
                   help="device registry (SQLite, created 0600 if missing; an existing one must be "
                        "0600), the collector's key store")
    p.add_argument("--device-id", metavar="ID",
                   help="the device's id (default: p- and 6 random hex digits)")
    p.add_argument("--broker-host", metavar="H", help="the broker's host name (checked against its certificate)")
    p.add_argument("--broker-port", metavar="P", type=int, default=8883, help="default 8883")
    p.add_argument("--topic-prefix", default="petrel", help="topics are PREFIX/ID/... (default petrel)")
    p.add_argument("--broker-ca", metavar="CA.pem",
                   help="the CA that signed the broker's certificate (PEM or DER), stored as DER")
    p.add_argument("--ca-cert", metavar="CA.pem", help="CA that signs the device's client certificate")
    p.add_argument("--ca-key", metavar="CA.key", help="that CA's private key (PEM or DER)")
    p.add_argument("--cert-days", type=int, default=3650,
                   help="client certificate lifetime in days, at most the CA's (default 3650)")
    p.add_argument("--psk", action="store_true", help="TLS-PSK instead of certificates")
    p.add_argument("--psk-bytes", type=int, default=32, help="PSK length, 16..32 (default 32)")
    p.add_argument("--psk-identity", help="PSK identity (default: the device id)")
    p.add_argument("--psk-key-file", metavar="FILE", help="use this PSK (hex in FILE) instead of a new one")
    p.add_argument("--hmac-key-file", metavar="FILE",
                   help="use this payload key (32 bytes as hex in FILE) instead of a new one")
    p.add_argument("--wifi-ssid", metavar="S")
    p.add_argument("--wifi-psk-hex", metavar="HEX", help="the WPA2 PSK, 64 hex digits (other local users can see "
                   "command lines: prefer --wifi-passphrase-file)")
    p.add_argument("--wifi-passphrase-file", metavar="FILE",
                   help="the Wi-Fi passphrase (first line of FILE), turned into the PSK here")
    p.add_argument("--wifi-open", action="store_true",
                   help="the --wifi-ssid network has no passphrase (said, not assumed)")
    p.set_defaults(func=_cmd)
    d = sub.add_parser(
        "devices", help="list or revoke the devices in a registry",
        description="petrel devices list --registry devices.sqlite: every device, its TLS mode, "
                    "when it was provisioned and its payload key's id (never the key). "
                    "petrel devices revoke ID --registry devices.sqlite: the device leaves the "
                    "registry (collectors refuse its messages once restarted) and its keys are "
                    "kept as used, never given to another device. "
                    "Exit codes: 0 done, 1 refused or failed, 2 bad usage.")
    dsub = d.add_subparsers(dest="devices_command", metavar="list|revoke", required=True)
    for name, helptext in (("list", "list the devices"), ("revoke", "revoke a device")):
        c = dsub.add_parser(name, help=helptext)
        if name == "revoke":
            c.add_argument("device_id", metavar="ID")
        c.add_argument("--registry", required=True, metavar="REGISTRY.sqlite")
        c.set_defaults(func=_cmd_devices)
