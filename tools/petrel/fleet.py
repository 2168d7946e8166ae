"""Managing nodes in the field (issue 16): the host's downlink commands.

    petrel config push DEVICE DIR | --all DIR    a whole new config.json, checked first
    petrel secrets push DEVICE --wifi-psk-hex HEX | --wifi-passphrase-file F --wifi-ssid S
                                | --psk-key-file F   new secrets, encrypted for the node
    petrel hold DEVICE --minutes N [--valid-h H]  keep the node awake N minutes at its next wake
    petrel fleet status --db URL [--registry R]   what each node applied, what is pending, refusals

Each push is sealed for its device (tools/petrel/downlink.py), published QoS 1
and retained on PREFIX/DEVICE/down/KIND, and recorded in the registry once
the broker acknowledged it. A sleeping node takes it at its next uplink
(its persistent session, or the retained message after a lost session) and
reports the version it applied in its health record, which `fleet status` shows.

Nothing secret is printed: no key, no secret's value, no plaintext.
Exit codes: 0 done; 1 refused or failed (for pushes: checks run for every
device before anything is published); 2 bad usage.
"""

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

from . import downlink
from .downlink import Refused

HOLD_VALID_H = 24
MAX_VALID_H = 24 * 31


def _err(cmd, msg):
    print("petrel %s: %s" % (cmd, msg), file=sys.stderr)


def _progress(text):
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _printable(s, n=80):
    """Text from a node (health record), safe for one line of output."""
    return "".join(c if c.isprintable() else "?" for c in str(s)[:n])


# ------------------------------------------------------------ shared options
def _broker_options(p):
    p.add_argument("--registry", required=True, metavar="REGISTRY.sqlite",
                   help="the device registry written by petrel provision (keys; the versions used are "
                        "recorded there)")
    p.add_argument("--host", default="localhost", help="the broker (default localhost)")
    p.add_argument("--port", type=int, default=None, help="default 8883 (1883 with --insecure-plain)")
    p.add_argument("--ca", metavar="CA.pem", help="the CA that signed the broker's certificate (verified)")
    p.add_argument("--cert", metavar="CERT.pem", help="client certificate, for a broker that asks for one")
    p.add_argument("--key", metavar="KEY.pem", help="that certificate's key")
    p.add_argument("--username", help="broker user name (needs write access to PREFIX/+/down/#)")
    p.add_argument("--password-file", metavar="FILE", help="broker password (first line of FILE)")
    p.add_argument("--insecure-plain", action="store_true",
                   help="plain MQTT, no TLS: for a test broker on loopback only, never across a network")
    p.add_argument("--topic-prefix", default="petrel", help="the nodes' topic prefix (default petrel)")
    p.add_argument("--timeout", type=float, default=downlink.PUBACK_TIMEOUT_S,
                   help="seconds to wait for the broker's answers (default %.0f)" % downlink.PUBACK_TIMEOUT_S)


def _link(args):
    if args.port is None:
        args.port = 1883 if args.insecure_plain else 8883
    if not 0 < args.port < 65536:
        raise Refused("--port must be 1..65535", 2)
    if args.timeout <= 0:
        raise Refused("--timeout must be above 0", 2)
    password = None
    if args.password_file:
        try:
            with open(args.password_file) as f:
                password = f.readline().rstrip("\n")
        except OSError as e:
            raise Refused("cannot read %s: %s" % (args.password_file, e.strerror), 2)
    return downlink.Link(args.host, args.port, ca=args.ca, cert=args.cert, key=args.key,
                         insecure_plain=args.insecure_plain, username=args.username,
                         password=password, timeout=args.timeout)


def _device_keys(args, devices):
    """{device: (k_mac, k_enc)} for the devices named; Refused (2) for one
    the registry does not know."""
    known = downlink.load_device_keys(args.registry)
    out = {}
    for d in devices:
        if d not in known:
            raise Refused("device %s is not in the registry %s" % (d, args.registry), 2)
        out[d] = downlink.keys(*known[d])
    return out


def _publish(args, link_, items, out=print):
    """items: [(device, kind, body, k_mac, retain)], every check done. Each
    gets its version, is sealed, published and recorded in turn."""
    n = len(items)
    t0 = time.monotonic()
    with downlink.Versions(args.registry) as versions:
        _progress("connecting to %s:%d%s" % (args.host, args.port,
                                             " (plain, no TLS)" if args.insecure_plain else ""))
        with link_:
            for i, (device, kind, body, k_mac, retain) in enumerate(items):
                v = versions.next(device)
                data = downlink.seal(kind, device, v, body, k_mac)
                topic = downlink.topic(device, kind, args.topic_prefix)
                took = link_.publish(topic, data, retain)
                versions.published(device, kind, v)
                out("published %s v%d to %s on %s (%d bytes, acknowledged in %.3f s)"
                    % (kind, v, device, topic, len(data), took))
                if n > 1:
                    _progress("%d/%d devices" % (i + 1, n))
    return time.monotonic() - t0


def _run(cmd, fn, args):
    try:
        return fn(args)
    except Refused as e:
        _err(cmd, e)
        return e.code


# ------------------------------------------------------------ config push
def _config_for(device, folder, single):
    """The config.json to push to device: DIR/config.json (a device's folder
    as provision writes it) or DIR/<device>/config.json; None if neither."""
    for p in ((folder / "config.json", folder / device / "config.json") if single
              else (folder / device / "config.json",)):
        if p.is_file():
            return p
    return None


def check_config(device, raw, prefix="petrel"):
    """The node's own checker on a config.json's bytes, plus what the push
    needs: it is this device's and keeps its topic. -> None or why not (one line)."""
    from . import harness

    harness.install()
    from app import config

    if len(raw) > downlink.MAX_CONFIG:
        return "%d bytes; a pushed config.json may be at most %d" % (len(raw), downlink.MAX_CONFIG)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except ValueError as e:
        return "not JSON: %s" % e
    try:
        cfg = config.check(data)
    except config.ConfigError as e:
        return str(e)
    except Exception as e:  # the checker on hostile input: refused, never a crash
        return "refused by the node's checker: %s" % type(e).__name__
    if data.get("device_id") != device:
        return ("device_id is %r: a config pushed to %s must name it (a node takes its identity "
                "from it)" % (data.get("device_id"), device))
    want = "%s/%s" % (prefix, device)
    if cfg.topic != want:
        return ("topic is %r, the node would leave %s (where pushes and the collector find it); "
                "use --topic-prefix to push to nodes on another prefix" % (cfg.topic, want))
    return None


def _cmd_config_push(args):
    if args.all:
        if len(args.target) != 1:
            raise Refused("with --all give only DIR (the folder holding one folder per device)", 2)
        devices, folder = None, Path(args.target[0])
    else:
        if len(args.target) != 2:
            raise Refused("give DEVICE DIR, or --all DIR", 2)
        devices, folder = [args.target[0]], Path(args.target[1])
    if not folder.is_dir():
        raise Refused("%s is not a folder" % folder, 2)
    link_ = _link(args)
    if devices is None:
        devices = sorted(downlink.load_device_keys(args.registry))
    keys = _device_keys(args, devices)
    found, bad = [], []
    for d in devices:
        p = _config_for(d, folder, not args.all)
        if p is None:
            if not args.all:
                raise Refused("no config.json in %s or %s" % (folder, folder / d), 2)
            continue
        try:
            raw = p.read_bytes()
        except OSError as e:
            bad.append("%s: cannot read %s: %s" % (d, p, e.strerror))
            continue
        why = check_config(d, raw, args.topic_prefix)
        if why is None:
            try:  # the largest version: the size check holds whatever number it gets
                downlink.seal("config", d, downlink.MAX_VERSION, downlink.config_body(raw), keys[d][0])
            except Refused as e:
                why = str(e)
        if why is not None:
            bad.append("%s: %s refused: %s" % (d, p, why))
        else:
            found.append((d, raw))
    for line in bad:
        _err("config push", line)
    if bad:
        raise Refused("%d config%s refused; nothing was published" % (len(bad), "s" if len(bad) > 1 else ""))
    if not found:
        raise Refused("no DIR/<device>/config.json for any device in the registry under %s" % folder)
    if args.all:
        _progress("%d of %d registered devices have a config.json under %s"
                  % (len(found), len(devices), folder))
    _publish(args, link_, [(d, "config", downlink.config_body(raw), keys[d][0], True) for d, raw in found])
    return 0


def register_config_push(config_sub):
    """Adds `push` to the subparsers of `petrel config`."""
    p = config_sub.add_parser(
        "push", help="send a node a whole new config.json (applied at its next wake)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Checks DIR's config.json with the node's own checker (and that it names the
device and keeps its topic), then publishes it sealed for the device, QoS 1 and
retained, on PREFIX/DEVICE/down/config. The node takes it at its next uplink,
checks it again, keeps its last good one, applies it from the next wake and
reports the version in its health record (cfgv; `petrel fleet status`).

DIR: a device's folder as `petrel provision --out` writes it (DIR/config.json)
or a folder of them (DIR/DEVICE/config.json). With --all, every device in the
registry that has DIR/DEVICE/config.json; every config is checked before any
is published (one refused: none published).

Exit codes: 0 published; 1 a config refused or the broker failed; 2 bad usage.""",
        epilog="""examples:
  petrel config push p-a1b2c3 build/node --registry devices.sqlite --host broker.lan --ca ca.pem
  petrel config push --all nodes/ --registry devices.sqlite --host broker.lan --ca ca.pem""")
    p.add_argument("target", nargs="+", metavar="DEVICE DIR", help="DEVICE DIR, or DIR with --all")
    p.add_argument("--all", action="store_true", help="every registered device with DIR/DEVICE/config.json")
    _broker_options(p)
    p.set_defaults(func=lambda a: _run("config push", _cmd_config_push, a))
    return p


# ------------------------------------------------------------ secrets push
def _hex_file(path, what, lengths):
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError as e:
        raise Refused("cannot read %s %s: %s" % (what, path, e.strerror), 2)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) not in lengths:
        raise Refused("%s %s must hold %d..%d bytes as hex digits" % (what, path, min(lengths), max(lengths)), 2)
    return key


def _fresh_psk(args, device, key):
    """A TLS-PSK key fit for device: not weak, not another device's key."""
    import sqlite3

    from . import provision

    why = provision.weakness(key)
    if why:
        raise Refused("the key in --psk-key-file is %s: give a random key" % why)
    h = hashlib.sha256(key).hexdigest()
    db = sqlite3.connect(Path(args.registry).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        for d, hk, ph in db.execute("SELECT device_id, hmac_key, psk_key_sha256 FROM devices"):
            if d != device and (ph == h or hashlib.sha256(bytes(hk)).hexdigest() == h):
                raise Refused("the key in --psk-key-file is already device %s's: keys are never shared" % d)
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'revoked'").fetchone():
            for d, hh, ph in db.execute("SELECT device_id, hmac_key_sha256, psk_key_sha256 FROM revoked"):
                if h in (hh, ph):
                    raise Refused("the key in --psk-key-file was revoked device %s's: keys are never "
                                  "used again" % d)
        row = db.execute("SELECT psk_identity FROM devices WHERE device_id = ?", (device,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def _cmd_secrets_push(args):
    from . import harness

    given = [o for o, v in (("--wifi-psk-hex", args.wifi_psk_hex), ("--wifi-passphrase-file",
                            args.wifi_passphrase_file), ("--psk-key-file", args.psk_key_file)) if v]
    if not given:
        raise Refused("give a secret to push: --wifi-psk-hex, --wifi-passphrase-file or --psk-key-file", 2)
    if args.wifi_psk_hex and args.wifi_passphrase_file:
        raise Refused("give --wifi-psk-hex or --wifi-passphrase-file, not both", 2)
    link_ = _link(args)
    keys = _device_keys(args, [args.device])
    secrets = {}
    if args.wifi_psk_hex is not None:
        if not re.match(r"^[0-9a-fA-F]{64}$", args.wifi_psk_hex):
            raise Refused("--wifi-psk-hex must be the 64 hex digits of the WPA2 PSK", 2)
        secrets["wifi_psk"] = args.wifi_psk_hex.lower()
    if args.wifi_passphrase_file:
        if not args.wifi_ssid:
            raise Refused("--wifi-passphrase-file needs --wifi-ssid (the PSK is derived from both)", 2)
        try:
            phrase = (Path(args.wifi_passphrase_file).read_bytes().splitlines() or [b""])[0]
        except OSError as e:
            raise Refused("cannot read --wifi-passphrase-file %s: %s" % (args.wifi_passphrase_file, e.strerror), 2)
        if not 8 <= len(phrase) <= 63:
            raise Refused("the WPA2 passphrase in %s must be 8..63 characters" % args.wifi_passphrase_file, 2)
        secrets["wifi_psk"] = hashlib.pbkdf2_hmac("sha1", phrase, args.wifi_ssid.encode(), 4096, 32).hex()
    identity = None
    if args.psk_key_file:
        psk = _hex_file(args.psk_key_file, "--psk-key-file", range(16, 33))
        identity = _fresh_psk(args, args.device, psk)
        secrets["psk_key"] = psk.hex()
    harness.install()
    from app import config

    try:
        config.check_secrets(secrets, "the pushed secrets")
    except config.ConfigError as e:
        raise Refused(str(e))
    k_mac, k_enc = keys[args.device]
    body = downlink.secrets_body(secrets, k_enc)
    _publish(args, link_, [(args.device, "secrets", body, k_mac, True)])
    print("secrets set: %s (values not shown; encrypted for %s only)" % (", ".join(sorted(secrets)), args.device))
    if "psk_key" in secrets:
        print("note: the node uses the new TLS-PSK key from its next connection after applying it: the "
              "broker's psk_file must hold it for identity %s by then, or the node cannot connect"
              % (identity or args.device))
    return 0


def _add_secrets_push(sub):
    p = sub.add_parser(
        "push", help="send a node new secrets, encrypted so that only it can read them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Encrypts the secrets for the device (AES-256-CBC under its downlink key, then
MACed) and publishes them QoS 1, retained, on PREFIX/DEVICE/down/secrets: the
broker and anyone subscribed see only ciphertext. The node keeps the secrets
not given. hmac_key cannot be pushed (the collector would not know the new
one); nothing secret is printed.

Exit codes: 0 published; 1 refused or the broker failed; 2 bad usage.""",
        epilog="""examples:
  petrel secrets push p-a1b2c3 --wifi-passphrase-file wifi.txt --wifi-ssid home \\
      --registry devices.sqlite --host broker.lan --ca ca.pem
  petrel secrets push p-a1b2c3 --psk-key-file new-psk.hex --registry devices.sqlite --host broker.lan --ca ca.pem""")
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("--wifi-psk-hex", metavar="HEX", help="the WPA2 PSK, 64 hex digits (other local users "
                   "can see command lines: prefer --wifi-passphrase-file)")
    p.add_argument("--wifi-passphrase-file", metavar="FILE",
                   help="the Wi-Fi passphrase (first line of FILE), turned into the PSK here")
    p.add_argument("--wifi-ssid", metavar="S", help="the SSID the passphrase is for")
    p.add_argument("--psk-key-file", metavar="FILE", help="a new TLS-PSK key (16..32 bytes as hex in FILE)")
    _broker_options(p)
    p.set_defaults(func=lambda a: _run("secrets push", _cmd_secrets_push, a))
    return p


def register_secrets_push(secrets_sub):
    """Adds `push` to the subparsers of a `petrel secrets` command."""
    return _add_secrets_push(secrets_sub)


# ------------------------------------------------------------ hold
def _cmd_hold(args):
    if not 1 <= args.minutes <= downlink.MAX_HOLD_MIN:
        raise Refused("--minutes must be 1..%d" % downlink.MAX_HOLD_MIN, 2)
    if not 0 < args.valid_h <= MAX_VALID_H:
        raise Refused("--valid-h must be above 0 and at most %d" % MAX_VALID_H, 2)
    link_ = _link(args)
    keys = _device_keys(args, [args.device])
    exp = int(time.time() + args.valid_h * 3600)
    _publish(args, link_, [(args.device, "hold", downlink.hold_body(args.minutes, exp),
                            keys[args.device][0], True)])
    print("%s stays awake %d min with the REPL free at its first wake before %s UTC"
          % (args.device, args.minutes, time.strftime("%Y-%m-%d %H:%M", time.gmtime(exp))))
    return 0


# ------------------------------------------------------------ fleet status
def _ago(t, now):
    if t is None:
        return "-"
    s = max(0, now - t)
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return "%d %s ago" % (s // n, unit)
    return "%d s ago" % s


def _num(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return int(v) if v == int(v) else v


def _applied(health, published, field, kind, now):
    """(the version applied as shown, what was published above it or None)."""
    v = _num(health.get(field))
    last = published.get(kind)
    pending = last is not None and (v is None or last[0] > v)
    shown = "-" if v is None else ("none" if v == 0 else "v%d" % v)
    return shown, ("%s v%d published %s" % (kind, last[0], _ago(last[1], now)) if pending else None)


def _version(v, zero):
    return "-" if v is None else (zero if v == 0 else "v%d" % v)


def app_columns(h):
    """The update columns of a health record (issue 17): the app running
    (appv, "trial" while appt), the download in progress (upd), rollbacks
    with the last why (aprb, aperr), the firmware (fwv, fwt)."""
    appv, fwv = _num(h.get("appv")), _num(h.get("fwv"))
    app = _version(appv, "factory") + (" trial" if _num(h.get("appt")) else "")
    upd = _printable(h.get("upd") or "-", 24)
    aprb = _num(h.get("aprb"))
    why = _printable(h.get("aperr") or "", 48)
    rb = "-" if aprb is None else "%d" % aprb + (" (%s)" % why if why and aprb else "")
    fw = _version(fwv, "as flashed") + (" trial" if _num(h.get("fwt")) else "")
    return app, upd, rb, fw


def rollout_by_device(rollouts):
    """{device: what the newest rollout naming it says of it} from update.rollouts()."""
    out = {}
    for r in rollouts:  # newest first: the first one naming a device is its newest
        canaries = r["devices"][:r["canaries"]]
        for d in r["devices"]:
            if d in out:
                continue
            role = "canary " if d in canaries else ""
            if r["state"] == "halted" and d not in r["sent"]:
                text = "halted, not sent"
            elif d in r["sent"]:
                text = "%ssent, rollout %s" % (role, r["state"])
            elif r["state"] == "canary":
                text = "waits for the canaries"
            else:
                text = "not sent, rollout %s" % r["state"]
            out[d] = "#%d %s v%d: %s" % (r["id"], r["target"], r["version"], text)
    return out


def status_rows(devices, published, now=None, rollouts=()):
    """The table of `fleet status` as rows of text (header first), then the
    notes (cfgerr) per device. devices: store.devices(); published:
    downlink.published_versions(); rollouts: update.rollouts()."""
    now = time.time() if now is None else now
    rows = [("DEVICE", "LAST SEEN", "CONFIG", "PENDING", "SECRETS", "REFUSED", "CLOCK",
             "APP", "DOWNLOAD", "ROLLBACKS", "FW", "ROLLOUT")]
    notes = []
    seen = dict((d["device"], d) for d in devices)
    roll = rollout_by_device(rollouts)
    for dev in sorted(set(seen) | set(published) | set(roll)):
        d = seen.get(dev) or {}
        h = d.get("health") or {}
        pub = published.get(dev, {})

        cfg, cfg_pending = _applied(h, pub, "cfgv", "config", now)
        sec, sec_pending = _applied(h, pub, "secv", "secrets", now)
        pending = ", ".join(p for p in (cfg_pending, sec_pending) if p) or "-"
        dref = _num(h.get("dref"))
        why = _printable(h.get("dwhy") or "", 60)
        refused = "-" if dref is None else ("%d" % dref + (" (%s)" % why if why else ""))
        tunc = _num(h.get("tunc"))
        clock = "-" if tunc is None else ("no trusted time" if tunc < 0 else "±%s s" % tunc)
        rows.append((dev, _ago(d.get("last_seen"), now) if d else "never", cfg, pending, sec, refused, clock)
                    + app_columns(h) + (roll.get(dev, "-"),))
        err = h.get("cfgerr")
        if err:
            notes.append("%s: last config or secrets refused or reverted: %s" % (dev, _printable(err)))
        err = h.get("uperr")
        if err:
            notes.append("%s: last update refused: %s" % (dev, _printable(err)))
    return rows, notes


def _cmd_status(args):
    from . import store as _store

    from . import update

    published, rollouts = {}, []
    if args.registry:
        try:
            published = downlink.published_versions(args.registry)
            rollouts = update.rollouts(args.registry)
        except Exception as e:
            raise Refused("cannot read the registry %s: %s" % (args.registry, e))
    try:
        st = _store.open(args.db)
    except Exception as e:
        raise Refused("cannot open the store %s: %s" % (args.db, e))
    try:
        devices = st.devices()
    finally:
        st.close()
    rows, notes = status_rows(devices, published, rollouts=rollouts)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for n in notes:
        print(n)
    return 0


def register(sub):
    """`petrel hold`, `petrel fleet status`, `petrel secrets push`."""
    p = sub.add_parser(
        "hold", help="keep a node awake N minutes at its next wake (REPL free, for USB or deploy)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Publishes a sealed hold, QoS 1 and retained, on PREFIX/DEVICE/down/hold: at
its next uplink the node stays awake MINUTES minutes with its REPL free and its
watchdog fed, so `petrel deploy` or a technician can reach it over USB, then
goes back to its schedule. A node whose clock is known ignores a hold taken
after --valid-h hours (stale).

Exit codes: 0 published; 1 the broker failed; 2 bad usage.""",
        epilog="""example:
  petrel hold p-a1b2c3 --minutes 15 --registry devices.sqlite --host broker.lan --ca ca.pem""")
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("--minutes", type=int, required=True, help="1..%d" % downlink.MAX_HOLD_MIN)
    p.add_argument("--valid-h", type=float, default=HOLD_VALID_H,
                   help="hours the hold may wait for the node's next wake (default %d)" % HOLD_VALID_H)
    _broker_options(p)
    p.set_defaults(func=lambda a: _run("hold", _cmd_hold, a))

    f = sub.add_parser("fleet", help="the fleet's state as the nodes report it (fleet status)")
    fsub = f.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    s = fsub.add_parser(
        "status", help="each node: last seen, config applied and pending, refused downlinks, clock, "
                  "app and firmware versions, downloads, rollbacks, rollouts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""From the collector's store (the latest health record of each device) and, with
--registry, what was pushed: per device the time it was last heard from, the
config version it applied (cfgv), what was published and not applied yet, the
secrets version (secv), downlink messages refused since its power-on with the
reasons (dref, dwhy), the clock's uncertainty after its last trusted time
(tunc), and why its last pushed config or secrets were refused (cfgerr);
for updates (issue 17): the app version running ("trial" until it is
confirmed; appv, appt), the download in progress (upd), rollbacks and the
last why (aprb, aperr), the firmware's version (fwv, fwt), where the newest
rollout naming the device stands (with --registry), and the last update the
node refused (uperr).

Exit codes: 0; 1 the store or registry cannot be read; 2 bad usage.""",
        epilog="""example:
  petrel fleet status --db readings.sqlite --registry devices.sqlite""")
    s.add_argument("--db", required=True, metavar="URL", help="the collector's store (file, sqlite:///, postgresql://)")
    s.add_argument("--registry", metavar="REGISTRY.sqlite", help="the registry: shows what is pending")
    s.set_defaults(func=lambda a: _run("fleet status", _cmd_status, a))
    f.set_defaults(func=lambda a: (f.print_help(), 2)[1])

    sp = sub.add_parser("secrets", help="new secrets for a node in the field (secrets push)")
    ssub = sp.add_subparsers(dest="secrets_command", metavar="SECRETS_COMMAND")
    _add_secrets_push(ssub)
    sp.set_defaults(func=lambda a: (sp.print_help(), 2)[1])
