"""The host side of app and firmware updates (issue 17): build an image,
publish it to the fleet, roll it out in stages.

    petrel update build --board esp32-node -o app.img --version 7 --name 0.7.0
    petrel update inspect app.img
    petrel update publish app.img --version 7 --all --canary 2 --registry R --host H --ca CA
    petrel update advance --store readings.sqlite --registry R --host H --ca CA
    petrel update clear app.img --host H --ca CA

The image (app target): b"PTRLAPP1", then per entry u16 LE path length,
the path (UTF-8), u32 LE size, the bytes; a u16 0 ends it. Entries sorted by
path, each path checked by the rules the node applies (path_problem). A
firmware image (--target fw) is a MicroPython .bin as esptool writes to an
app partition.

Chunks: chunk i's message is image[i*c:(i+1)*c] + SHA-256(chunk i+1's
message) (32 zero bytes for the last), published QoS 1, retained, once for
the whole fleet on PREFIX/update/<16 hex of the image's SHA-256>-<chunk size>/i
(the same image published with another --chunk never overwrites the chunks
of a download under way). The
manifest (downlink kind "update": t, v, n, z, h, c, f = SHA-256 of chunk 0's
message, p) is sealed per device like every downlink message. Chunks are not
secret (anyone allowed to subscribe to PREFIX/update/# reads them): the
sealed manifest's h and f make every chunk's bytes checkable by the node.

This is an implementation of its own (hashlib, struct), not the node's code.

Registry tables (beside down_versions):
  update_published  (device, target) PK: the highest image version whose
                    manifest the broker acknowledged for the device
  update_rollouts   one row per publish: the manifest's fields, the devices
                    in order (the first `canaries` get it first), which were
                    sent, state publishing|canary|done|halted|failed|cleared, why
"""

import argparse
import hashlib
import json
import re
import struct
import tempfile
import threading
import time
from pathlib import Path

from . import downlink, fleet
from .downlink import Refused

MAGIC = b"PTRLAPP1"
MAX_APP = 262_144          # an app image's bytes (the slot folders share the littlefs partition)
MAX_FW = 1_572_864         # the OTA layout's 1.5 MiB app partition
MAX_IMAGE = 2_000_000      # the manifest's bound on z
MAX_ENTRIES = 200
MAX_PATH = 64
MAX_LEVELS = 4
APP_CHUNK = (512, 3584)    # a chunk message (data + 32) stays below the node's 4 KiB max_packet
FW_CHUNKS = (512, 1024, 2048)  # must divide the 4096-byte erase block
DEFAULT_CHUNK = 2048
ESP_IMAGE_MAGIC = 0xE9
NEXT_LEN = 32
RUNNABLE = ("app/ladder.mpy", "app/ladder.py")  # what main.py imports after appslot.choose()
_PATH_CHARS = re.compile(r"^[A-Za-z0-9_./-]+$")
# top-level files an image never carries: USB-deployed only (main.py, boot.py,
# appslot), the board's wiring, the node's configuration and secrets
_NEVER_TOP = re.compile(r"^(boot\.py|main\.py|board\.json|appslot\..*|config.*\.json|secrets.*\.json)$")
_NEVER_DIRS = ("data",)  # the node's state

SCHEMA = """
CREATE TABLE IF NOT EXISTS update_published (device TEXT NOT NULL, target TEXT NOT NULL,
  version INTEGER NOT NULL, rollout INTEGER, published_at REAL NOT NULL, PRIMARY KEY (device, target));
CREATE TABLE IF NOT EXISTS update_rollouts (id INTEGER PRIMARY KEY, target TEXT NOT NULL,
  version INTEGER NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
  chunk INTEGER NOT NULL, first TEXT NOT NULL, prefix TEXT NOT NULL, devices TEXT NOT NULL,
  canaries INTEGER NOT NULL, sent TEXT NOT NULL, state TEXT NOT NULL, why TEXT NOT NULL,
  created REAL NOT NULL, updated REAL NOT NULL);
"""


class ImageError(ValueError):
    """An image that breaks the format's rules; the message says which, in one line."""


# ------------------------------------------------------------ the image
def path_problem(path):
    """None if an entry's path is one the node takes, else why not."""
    if not isinstance(path, str) or not path:
        return "an empty path"
    try:
        raw = path.encode("utf-8")
    except UnicodeError:
        return "not UTF-8"
    if len(raw) > MAX_PATH:
        return "%d bytes long (at most %d)" % (len(raw), MAX_PATH)
    if not _PATH_CHARS.match(path):
        return "a character outside A-Z a-z 0-9 _ . / -"
    if path.startswith("/"):
        return "absolute"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "an empty, '.' or '..' part"
    if len(parts) > MAX_LEVELS:
        return "%d levels deep (at most %d)" % (len(parts), MAX_LEVELS)
    if len(parts) == 1 and _NEVER_TOP.match(path):
        return "a file an update never replaces (main.py, boot.py, appslot, board.json, config, secrets)"
    if parts[0] in _NEVER_DIRS:
        return "in the node's state folder %s/" % parts[0]
    return None


def check_entries(paths):
    """The whole archive's rules on its paths, in the order given."""
    if not paths:
        raise ImageError("no entries")
    if len(paths) > MAX_ENTRIES:
        raise ImageError("%d entries (at most %d)" % (len(paths), MAX_ENTRIES))
    for i, p in enumerate(paths):
        why = path_problem(p)
        if why:
            raise ImageError("entry %r: %s" % (p, why))
        if i and paths[i - 1].encode() >= p.encode():
            raise ImageError("entry %r: not after %r (entries are sorted, each once)" % (p, paths[i - 1]))
    files = set(paths)
    for p in paths:  # a file and a folder of one name: the node could unpack only one of them
        parts = p.split("/")
        for n in range(1, len(parts)):
            if "/".join(parts[:n]) in files:
                raise ImageError("entry %r: under %r, which is a file" % (p, "/".join(parts[:n])))
    if not any(p in RUNNABLE for p in paths):
        raise ImageError("no %s (nothing main.py could run)" % " or ".join(RUNNABLE))


def pack(files):
    """files: {path: bytes} -> the image's bytes, entries sorted; ImageError
    when a path or the whole breaks the rules."""
    paths = sorted(files, key=lambda p: p.encode("utf-8", "replace"))
    check_entries(paths)
    out = [MAGIC]
    for p in paths:
        data = bytes(files[p])
        raw = p.encode()
        out.append(struct.pack("<H", len(raw)) + raw + struct.pack("<I", len(data)) + data)
    out.append(b"\0\0")
    img = b"".join(out)
    if len(img) > MAX_APP:
        raise ImageError("the image is %d bytes; an app image may be at most %d" % (len(img), MAX_APP))
    return img


def unpack(img):
    """An image's bytes -> [(path, bytes)] in order; ImageError for anything
    the node would refuse (magic, truncation, bytes after the end, the path rules)."""
    img = bytes(img)
    if len(img) > MAX_APP:
        raise ImageError("%d bytes; an app image may be at most %d" % (len(img), MAX_APP))
    if not img.startswith(MAGIC):
        raise ImageError("not a Petrel app image (no PTRLAPP1 magic)")
    i, out = len(MAGIC), []
    while True:
        if i + 2 > len(img):
            raise ImageError("truncated at byte %d (no end marker)" % i)
        (n,) = struct.unpack_from("<H", img, i)
        i += 2
        if n == 0:
            break
        if len(out) >= MAX_ENTRIES:
            raise ImageError("more than %d entries" % MAX_ENTRIES)
        if n > MAX_PATH or i + n + 4 > len(img):
            raise ImageError("entry %d: path length %d past the rules or the image" % (len(out), n))
        try:
            path = img[i:i + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ImageError("entry %d: path not UTF-8" % len(out))
        i += n
        (size,) = struct.unpack_from("<I", img, i)
        i += 4
        if i + size > len(img):
            raise ImageError("entry %r: %d bytes past the image's end" % (path, size))
        out.append((path, img[i:i + size]))
        i += size
    if i != len(img):
        raise ImageError("%d bytes after the end marker" % (len(img) - i))
    check_entries([p for p, _ in out])
    return out


def check_fw(data):
    """A MicroPython firmware .bin for the app partition: ImageError if not."""
    if not data or data[0] != ESP_IMAGE_MAGIC:
        raise ImageError("not an ESP32 app image (first byte %s, not 0xe9): give the MicroPython "
                         "firmware .bin for an app partition" % ("none" if not data else "0x%02x" % data[0]))
    if len(data) > MAX_FW:
        raise ImageError("%d bytes; the app partition holds %d" % (len(data), MAX_FW))


def build(board, firmware=None, lib=None):
    """deploy.build for the profile's mpy_arch, minus what an image never
    carries -> (image bytes, {path: bytes}, arch). firmware, lib: other
    source folders than the repository's (a test's changed copy)."""
    from . import boards, deploy, paths

    prof = boards.load(board)
    with tempfile.TemporaryDirectory(prefix="petrel-update-") as tmp:
        files = deploy.build(tmp, prof["mpy_arch"], firmware=firmware or paths.FIRMWARE, lib=lib or paths.LIB)
        taken = dict((rel, Path(src).read_bytes()) for rel, src in files.items() if path_problem(rel) is None)
    return pack(taken), taken, prof["mpy_arch"]


def arch_of(entries):
    """The native arch the image's .mpy files were compiled for ("none" if
    only bytecode, "-" if none; "mixed: ..." when they differ)."""
    from . import deploy

    archs = set()
    for p, data in entries:
        if p.endswith(".mpy") and len(data) >= 4 and data[:1] == b"M":
            archs.add(deploy.mpy_header(data)[2])
    if not archs:
        return "-"
    if len(archs) > 1:
        archs.discard("none")  # bytecode only: runs on any arch
    return archs.pop() if len(archs) == 1 else "mixed: " + ", ".join(sorted(archs))


# ------------------------------------------------------------ chunks
def chain(img, chunk):
    """-> [chunk messages]: data_i + SHA-256(message i+1), the last with 32 zero bytes."""
    n = (len(img) + chunk - 1) // chunk
    msgs = [b""] * n
    nxt = bytes(NEXT_LEN)
    for i in range(n - 1, -1, -1):
        msgs[i] = img[i * chunk:(i + 1) * chunk] + nxt
        nxt = hashlib.sha256(msgs[i]).digest()
    return msgs


def chunk_prefix(sha, chunk, topic_prefix="petrel"):
    """The chunks' topic prefix: the image's and the chunk size's (chunk i of
    the same image at another size is other bytes: never on the same topic)."""
    return "%s/update/%s-%d" % (topic_prefix, sha.hex()[:16], chunk)


def check_chunk(target, chunk):
    if target == "fw":
        if chunk not in FW_CHUNKS:
            raise Refused("--chunk for a firmware must divide the 4096-byte erase block: one of %s"
                          % ", ".join(map(str, FW_CHUNKS)), 2)
    elif not APP_CHUNK[0] <= chunk <= APP_CHUNK[1]:
        raise Refused("--chunk must be %d..%d" % APP_CHUNK, 2)


class Plan:
    """One image made ready to publish: its chunks and the manifest's fields."""

    def __init__(self, target, data, chunk, version, name, topic_prefix="petrel"):
        check_chunk(target, chunk)
        self.target, self.version, self.name = target, version, name
        self.data = bytes(data)
        self.sha = hashlib.sha256(self.data).digest()
        self.chunk = chunk
        self.msgs = chain(self.data, chunk)
        self.first = hashlib.sha256(self.msgs[0]).digest()
        self.prefix = chunk_prefix(self.sha, chunk, topic_prefix)
        self.body = downlink.update_body(target, version, name, len(self.data), self.sha, chunk,
                                         self.first, self.prefix)

    def topics(self):
        return ["%s/%d" % (self.prefix, i) for i in range(len(self.msgs))]


def read_image(path, target):
    """An image file checked for its target -> bytes; Refused (2) when it breaks the rules."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise Refused("cannot read %s: %s" % (path, e.strerror), 2)
    try:
        if target == "fw":
            check_fw(data)
        else:
            unpack(data)
    except ImageError as e:
        raise Refused("%s is refused: %s" % (path, e), 2)
    return data


def sidecar(path):
    """The build's notes beside an image (IMG.json) or {}."""
    try:
        return json.loads(Path(str(path) + ".json").read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------ the registry
def _schema(db):
    db.execute("BEGIN IMMEDIATE")
    for stmt in SCHEMA.split(";")[:-1]:
        db.execute(stmt)
    db.execute("COMMIT")


def _published(db, device, target):
    row = db.execute("SELECT version FROM update_published WHERE device = ? AND target = ?",
                     (device, target)).fetchone()
    return row[0] if row else 0


def _pending(db, device, target, rollout=None):
    """The highest version a rollout (other than `rollout`) still waiting on
    its canaries holds for device (0: none)."""
    top = 0
    for v, devices, sent in db.execute("SELECT version, devices, sent FROM update_rollouts WHERE target = ?"
                                       " AND state = 'canary' AND id IS NOT ?", (target, rollout)):
        if device in json.loads(devices) and device not in json.loads(sent):
            top = max(top, v)
    return top


def version_problem(db, device, target, version, rollout=None):
    have = max(_published(db, device, target), _pending(db, device, target, rollout))
    if version <= have:
        return ("%s v%d is not above v%d, already published to %s (versions only go up; build the "
                "update with a higher --version)" % (target, version, have, device))
    return None


def rollouts(registry):
    """[dict] of every rollout in the registry (read only), newest first; [] if none."""
    import sqlite3

    db = sqlite3.connect(Path(registry).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'update_rollouts'").fetchone():
            return []
        return [_row(r) for r in db.execute("SELECT * FROM update_rollouts ORDER BY id DESC")]
    finally:
        db.close()


_COLS = ("id", "target", "version", "name", "sha256", "size", "chunk", "first", "prefix", "devices",
         "canaries", "sent", "state", "why", "created", "updated")


def _row(r):
    d = dict(zip(_COLS, r))
    d["devices"], d["sent"] = json.loads(d["devices"]), json.loads(d["sent"])
    return d


def _set_state(db, rid, state, why="", sent=None):
    db.execute("BEGIN IMMEDIATE")
    if sent is None:
        db.execute("UPDATE update_rollouts SET state = ?, why = ?, updated = ? WHERE id = ?",
                   (state, why, time.time(), rid))
    else:
        db.execute("UPDATE update_rollouts SET state = ?, why = ?, sent = ?, updated = ? WHERE id = ?",
                   (state, why, json.dumps(sent), time.time(), rid))
    db.execute("COMMIT")


# ------------------------------------------------------------ the broker
def publish_chunks(link, plan, say):
    """Every chunk QoS 1 retained, pipelined (paho keeps its in-flight window),
    each PUBACK awaited; -> seconds taken."""
    t0 = time.monotonic()
    infos = [link.client.publish(t, m, qos=1, retain=True) for t, m in zip(plan.topics(), plan.msgs)]
    for i, info in enumerate(infos):
        try:
            info.wait_for_publish(link.timeout)
        except (RuntimeError, ValueError) as e:
            raise Refused("publishing chunk %d failed: %s" % (i, e))
        if not info.is_published():
            raise Refused("the broker did not acknowledge chunk %d within %.0f s (run again: chunks "
                          "are retained and the same each time)" % (i, link.timeout))
    took = time.monotonic() - t0
    say("published %d chunks (%d bytes of image, %d with their hashes) retained on %s/0..%d in %.2f s"
        % (len(plan.msgs), len(plan.data), sum(map(len, plan.msgs)), plan.prefix, len(plan.msgs) - 1, took))
    return took


def send_manifests(args, link, versions, plan, rid, devices, sent, keys, say):
    """Seal and publish the manifest for each device in turn, recording each
    one the broker acknowledged (update_published, the rollout's sent)."""
    db = versions.db
    for d in devices:
        why = version_problem(db, d, plan.target, plan.version, rid) if d not in sent else None
        if why:  # another publish got there between the checks and now
            raise Refused(why, 2)
        v = versions.next(d)
        data = downlink.seal("update", d, v, plan.body, keys[d][0])
        topic = downlink.topic(d, "update", args.topic_prefix)
        took = link.publish(topic, data, retain=True)
        versions.published(d, "update", v)
        sent.append(d)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO update_published (device, target, version, rollout, published_at)"
                   " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, target) DO UPDATE SET"
                   " version = excluded.version, rollout = excluded.rollout, published_at ="
                   " excluded.published_at", (d, plan.target, plan.version, rid, time.time()))
        db.execute("UPDATE update_rollouts SET sent = ?, updated = ? WHERE id = ?",
                   (json.dumps(sent), time.time(), rid))
        db.execute("COMMIT")
        say("manifest %s v%d sealed for %s: downlink v%d on %s (%d bytes, acknowledged in %.3f s)"
            % (plan.target, plan.version, d, v, topic, len(data), took))


def _devices(args):
    if bool(args.all) == bool(args.devices):
        raise Refused("give --devices A,B or --all", 2)
    known = downlink.load_device_keys(args.registry)
    if args.all:
        devices = sorted(known)
    else:
        devices = []
        for d in args.devices.split(","):
            d = d.strip()
            if d and d not in devices:
                devices.append(d)
    if not devices:
        raise Refused("no device to publish to", 2)
    missing = [d for d in devices if d not in known or not known[d][0]]
    if missing:
        raise Refused("no keys for %s in the registry %s (petrel provision registers a device)"
                      % (", ".join(missing), args.registry), 2)
    return devices, dict((d, downlink.keys(*known[d])) for d in devices)


def _cmd_publish(args):
    target = args.target
    notes = sidecar(args.image) if target == "app" else {}
    version = args.version if args.version is not None else notes.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Refused("give --version V (an integer >= 1; `update build --version` notes one beside the image)", 2)
    name = args.name if args.name is not None else notes.get("name", "v%d" % version)
    if args.canary < 0:
        raise Refused("--canary must be 0 or more", 2)
    data = read_image(args.image, target)
    link = fleet._link(args)
    if args.chunks_only:  # the same chunks, for a broker that lost them: nothing else changes
        try:
            plan = Plan(target, data, args.chunk, version, name, args.topic_prefix)
        except ValueError as e:
            raise Refused(str(e), 2)
        with link:
            publish_chunks(link, plan, print)
        return 0
    devices, keys = _devices(args)
    try:
        plan = Plan(target, data, args.chunk, version, name, args.topic_prefix)
    except ValueError as e:
        raise Refused(str(e), 2)
    staged = 0 < args.canary < len(devices)
    first = devices[:args.canary] if staged else devices
    with downlink.Versions(args.registry) as versions:
        db = versions.db
        _schema(db)
        bad = [w for w in (version_problem(db, d, target, version) for d in devices) if w]
        if bad:
            raise Refused(bad[0] + ("" if len(bad) == 1 else " (and %d more devices)" % (len(bad) - 1)), 2)
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        rid = db.execute("INSERT INTO update_rollouts (target, version, name, sha256, size, chunk, first,"
                         " prefix, devices, canaries, sent, state, why, created, updated) VALUES"
                         " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', 'publishing', '', ?, ?)",
                         (target, version, name, plan.sha.hex(), len(plan.data), plan.chunk, plan.first.hex(),
                          plan.prefix, json.dumps(devices), len(first) if staged else 0,
                          now, now)).lastrowid
        db.execute("COMMIT")
        fleet._progress("connecting to %s:%d%s" % (args.host, args.port,
                                                   " (plain, no TLS)" if args.insecure_plain else ""))
        sent = []
        try:
            with link:
                publish_chunks(link, plan, print)
                send_manifests(args, link, versions, plan, rid, first, sent, keys, print)
        except BaseException as e:
            _set_state(versions.db, rid, "failed", str(e)[:200] or type(e).__name__, sent)
            if sent:
                fleet._err("update publish", "sent to %s only; the rest: petrel update publish --devices %s"
                           % (", ".join(sent), ",".join(d for d in devices if d not in sent)))
            raise
        state = "canary" if staged else "done"
        _set_state(versions.db, rid, state, "", sent)
    print("rollout %d: %s v%d (%s), image sha256 %s, %d bytes, %d chunks of %d, %s"
          % (rid, target, version, name, plan.sha.hex(), len(plan.data), len(plan.msgs), plan.chunk,
             "canaries %s; %d more wait for them (petrel update advance)" % (", ".join(first),
                                                                           len(devices) - len(first))
             if state == "canary" else "sent to all %d device%s" % (len(devices), "s" * (len(devices) > 1))))
    if state == "canary" and args.follow:
        return _follow(args, rid)
    return 0


# ------------------------------------------------------------ the staged rollout
def _num(v):
    return None if isinstance(v, bool) or not isinstance(v, (int, float)) else v


def _names(text, version):
    return bool(re.search(r"(?<![0-9])v?%d(?![0-9])" % version, str(text or "")))


def judge(before, since, version, target="app"):
    """A canary's state from its health records: before = the last one
    received before the rollout (or None), since = those after it in order.
    -> (state, detail): state "rolled back", "confirmed", "trial", "waiting".

    By the target's own fields: an app by appv/appt (rollbacks: aprb grew,
    aperr names the version, appv fell back after its trial), a firmware by
    fwv == version and fwt (fwv, the version the node last confirmed, moves
    only after the trial wake; rollbacks: its why in uperr or fwerr names the
    version, fwv still below it after its trial). Confirmed only on evidence from after the
    rollout's creation: a record of the version on trial, or newly running
    (an earlier record showed an older one, or its download) -- never a
    version the node ran before it (a firmware rollout's canaries are not
    confirmed by the app's version, nor an old record by a new rollout)."""
    fw = target == "fw"
    ver_k, trial_k = ("fwv", "fwt") if fw else ("appv", "appt")
    base = before or {}
    base_aprb = _num(base.get("aprb"))
    base_errs = _rollback_texts(base, fw)
    prev = _num(base.get(ver_k))  # the version an earlier record showed
    coming = trial = seen = False
    last = None
    for h in since:
        ver, t = _num(h.get(ver_k)), _num(h.get(trial_k))
        if not fw:
            aprb = _num(h.get("aprb"))
            if base_aprb is None and aprb is not None:
                base_aprb = aprb  # no record before the rollout: count rollbacks from its first one
            elif aprb is not None and aprb > base_aprb:
                return "rolled back", "rollbacks %d -> %d: %s" % (base_aprb, aprb,
                                                                 fleet._printable(h.get("aperr")) or "?")
        for err in _rollback_texts(h, fw):
            if err not in base_errs and _names(err, version):
                return "rolled back", fleet._printable(err)
        if t and (fw or ver == version):  # a firmware's fwv changes only once its trial confirmed it
            trial = seen = True
        elif trial and ver is not None and ver < version:
            return "rolled back", "back to v%d after its trial of v%d" % (ver, version)
        if _names(h.get("upd"), version) and str(h.get("upd")).startswith(target + " "):
            coming = True  # downloading it: what runs next is new
        if ver is not None and (ver == version if fw else ver >= version) and (
                coming or (prev is not None and prev < version)):
            seen = True
        if ver is not None:
            prev = ver
        last = h
    if last is None:
        return "waiting", "no health record since the rollout"
    ver, t = _num(last.get(ver_k)), _num(last.get(trial_k))
    if ver is not None and (ver == version if fw else ver >= version) and not t:
        if seen:
            return "confirmed", "runs v%d" % ver
        return "waiting", "runs v%d, not seen arriving since the rollout" % ver
    if t and (fw or ver == version):
        return "trial", "on trial"
    upd = last.get("upd")
    return "waiting", ("downloading %s" % fleet._printable(upd, 40)) if upd else "runs v%s" % ver


def _rollback_texts(h, fw):
    """The record's texts that may say why a version was rolled back: an
    app's aperr; a firmware's fwerr, or uperr when it is one (not a refusal
    of the manifest: those start "update:")."""
    if not fw:
        return [h["aperr"]] if h.get("aperr") else []
    return [e for e in (h.get("fwerr"), h.get("uperr")) if e and not str(e).startswith("update:")]


def canary_health(st, device, since):
    """(the last health record received before `since` or None, [the records from then on])."""
    before = st._read("SELECT fields FROM health WHERE device = ? AND received < ? ORDER BY received DESC,"
                      " seq DESC LIMIT 1", (device, since))
    after = st._read("SELECT fields FROM health WHERE device = ? AND received >= ? ORDER BY seq", (device, since))
    return (json.loads(before[0][0]) if before else None), [json.loads(r[0]) for r in after]


def advance(args, st, only=None, say=print):
    """Each rollout waiting on its canaries: halted when one rolled back,
    the rest sent their manifests once every canary confirmed. -> {id: state}."""
    out = {}
    with downlink.Versions(args.registry) as versions:
        _schema(versions.db)
        for r in [_row(x) for x in versions.db.execute("SELECT * FROM update_rollouts WHERE state = 'canary'"
                                                       " ORDER BY id")]:
            if only is not None and r["id"] != only:
                continue
            canaries = r["devices"][:r["canaries"]]
            verdicts = [(d,) + judge(*canary_health(st, d, r["created"]), r["version"], r["target"])
                        for d in canaries]
            label = "rollout %d (%s v%d %s)" % (r["id"], r["target"], r["version"], r["name"])
            back = [(d, why) for d, s, why in verdicts if s == "rolled back"]
            if back:
                why = "; ".join("%s rolled back: %s" % x for x in back)
                _set_state(versions.db, r["id"], "halted", why[:300])
                say("%s: halted, the other %d devices will not get it: %s"
                    % (label, len(r["devices"]) - len(canaries), why))
                out[r["id"]] = "halted"
                continue
            if all(s == "confirmed" for _, s, _ in verdicts):
                rest = [d for d in r["devices"] if d not in r["sent"]]
                _, keys = _devices(argparse.Namespace(all=False, devices=",".join(rest), registry=args.registry))
                plan = _stored_plan(r)
                sent = list(r["sent"])
                say("%s: all %d canaries confirmed; sending the manifest to %d more" % (label, len(canaries),
                                                                                       len(rest)))
                try:
                    with fleet._link(args) as link:
                        send_manifests(args, link, versions, plan, r["id"], rest, sent, keys, say)
                except BaseException:
                    _set_state(versions.db, r["id"], "canary", "", sent)  # what was sent stays sent
                    raise
                _set_state(versions.db, r["id"], "done", "", sent)
                out[r["id"]] = "done"
                continue
            say("%s: waiting on canaries: %s" % (label, ", ".join("%s %s (%s)" % v for v in verdicts)))
            out[r["id"]] = "canary"
    return out


class _StoredPlan:
    pass


def _stored_plan(r):
    """The manifest's fields as a rollout recorded them (no image file needed)."""
    p = _StoredPlan()
    p.target, p.version = r["target"], r["version"]
    p.body = downlink.update_body(r["target"], r["version"], r["name"], r["size"], bytes.fromhex(r["sha256"]),
                                  r["chunk"], bytes.fromhex(r["first"]), r["prefix"])
    return p


def _open_store(url):
    from . import store as _store

    try:
        return _store.open(url)
    except Exception as e:
        raise Refused("cannot open the store %s: %s" % (url, e))


def _cmd_advance(args):
    fleet._link(args)  # the connection's options checked before anything is read
    st = _open_store(args.store)
    try:
        states = advance(args, st)
    finally:
        st.close()
    if not states:
        print("no rollout waits on its canaries")
    return 0


def _follow(args, rid):
    if not args.store:
        raise Refused("--follow needs --store (the collector's store, where the canaries' health arrives)", 2)
    deadline = time.monotonic() + args.follow_timeout
    while True:
        st = _open_store(args.store)
        try:
            state = advance(args, st, only=rid).get(rid, "canary")
        finally:
            st.close()
        if state in ("done", "halted"):
            return 0 if state == "done" else 1
        left = deadline - time.monotonic()
        if left <= 0:
            print("rollout %d: still waiting on its canaries after %.0f s (petrel update advance goes on)"
                  % (rid, args.follow_timeout))
            return 1
        time.sleep(min(args.poll, left))


# ------------------------------------------------------------ clear
def retained_under(link, prefix, quiet_s=1.0, level=1):
    """The topics under prefix/+ (level 2: prefix/+/+) that hold a retained
    message (what the broker sends right after a SUBACK), waiting until
    quiet_s passes with none more."""
    seen, lock, acked = set(), threading.Lock(), threading.Event()
    c = link.client
    flt = prefix + "/+" * level

    def on_message(cl, u, m):
        if m.retain and m.payload:
            with lock:
                seen.add(m.topic)

    c.on_message = on_message
    c.on_subscribe = lambda *a: acked.set()
    c.subscribe(flt, qos=1)
    if not acked.wait(link.timeout):
        raise Refused("the broker did not answer the SUBSCRIBE to %s within %.0f s" % (flt, link.timeout))
    deadline = time.monotonic() + link.timeout
    n = -1
    while time.monotonic() < deadline:
        with lock:
            if len(seen) == n:
                break
            n = len(seen)
        time.sleep(quiet_s)
    c.unsubscribe(flt)
    return sorted(seen, key=lambda t: (len(t), t))


def _of_image(prefix, head):
    """Whether a chunk prefix is one of the image whose SHA-256 starts with
    head (16 hex): any chunk size, or the size-less prefix of older publishes."""
    last = prefix.rsplit("/", 1)[-1]
    return last == head or last.startswith(head + "-")


def _live_rollouts(registry, mine):
    """[(id, target, version, prefix, state)] of rollouts still publishing or
    waiting on canaries on a prefix mine(prefix) takes: their chunks are
    what nodes are downloading now."""
    import sqlite3

    if not registry or not Path(registry).exists():
        return []
    db = sqlite3.connect(Path(registry).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'update_rollouts'").fetchone():
            return []
        rows = db.execute("SELECT id, target, version, prefix, state FROM update_rollouts WHERE state IN"
                          " ('publishing', 'canary') ORDER BY id").fetchall()
    finally:
        db.close()
    return [r for r in rows if mine(r[3])]


def _cmd_clear(args):
    if bool(args.image) == bool(args.prefix):
        raise Refused("give IMG or --prefix P", 2)
    base = args.topic_prefix + "/update"
    if args.image:
        try:
            data = Path(args.image).read_bytes()
        except OSError as e:
            raise Refused("cannot read %s: %s" % (args.image, e.strerror), 2)
        head = hashlib.sha256(data).hexdigest()[:16]
        where, level, shown = base, 2, "%s/%s-*" % (base, head)

        def mine(p):
            return p.startswith(base + "/") and _of_image(p, head)
    else:
        prefix = args.prefix.rstrip("/")
        if not re.match(r"^%s/[0-9a-f]{16}(-[0-9]+)?$" % re.escape(base), prefix):
            raise Refused("--prefix must be a chunk prefix, %s/update/<16 hex>-<chunk>" % args.topic_prefix, 2)
        where, level, shown = prefix, 1, prefix

        def mine(p):
            return p == prefix
    live = _live_rollouts(args.registry, mine)
    if live:
        what = "; ".join("rollout %d (%s v%d) on %s is %s" % r for r in live)
        if not args.force:
            raise Refused("%s: nodes may be downloading those chunks (a node whose chunks are gone gives its "
                          "download up); clear once it is over, or give --force" % what, 2)
        fleet._err("update clear", "warning: --force: %s; its chunks go" % what)
    elif not args.registry:
        fleet._err("update clear", "note: no --registry, so not checked whether a rollout still uses them")
    link = fleet._link(args)
    with link:
        topics = [t for t in retained_under(link, where, level=level) if mine(t.rsplit("/", 1)[0])]
        infos = [link.client.publish(t, b"", qos=1, retain=True) for t in topics]
        for t, info in zip(topics, infos):
            info.wait_for_publish(link.timeout)
            if not info.is_published():
                raise Refused("the broker did not acknowledge clearing %s within %.0f s" % (t, link.timeout))
    if args.registry:
        import sqlite3

        states = ("done", "halted", "failed") + (("publishing", "canary") if args.force else ())
        db = sqlite3.connect(str(args.registry), timeout=30, isolation_level=None)
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'update_rollouts'").fetchone():
                db.execute("BEGIN IMMEDIATE")
                for rid, prefix in db.execute("SELECT id, prefix FROM update_rollouts WHERE state IN (%s)"
                                              % ",".join("?" * len(states)), states).fetchall():
                    if mine(prefix):
                        db.execute("UPDATE update_rollouts SET state = 'cleared', updated = ? WHERE id = ?",
                                   (time.time(), rid))
                db.execute("COMMIT")
        finally:
            db.close()
    print("cleared %d retained chunks under %s" % (len(topics), shown))
    return 0


# ------------------------------------------------------------ build, inspect
def _cmd_build(args):
    from . import boards, deploy

    if args.version is not None and args.version < 1:
        raise Refused("--version must be 1 or more", 2)
    try:
        img, files, arch = build(args.board)
    except boards.ProfileError as e:
        raise Refused(str(e), 2)
    except deploy.DeployError as e:
        raise Refused(str(e))
    except ImageError as e:
        raise Refused("the firmware does not make a valid image: %s" % e)
    out = Path(args.output)
    out.write_bytes(img)
    sha = hashlib.sha256(img).hexdigest()
    notes = {"board": args.board, "arch": arch, "sha256": sha, "size": len(img), "entries": len(files)}
    if args.version is not None:
        notes["version"] = args.version
    if args.name is not None:
        notes["name"] = args.name
    Path(str(out) + ".json").write_text(json.dumps(notes, indent=1, sort_keys=True) + "\n")
    print("%s: %d entries, %d bytes (%.1f%% of %d), sha256 %s, .mpy for %s%s"
          % (out, len(files), len(img), 100.0 * len(img) / MAX_APP, MAX_APP, sha, arch,
             "" if args.version is None else ", version %d" % args.version))
    return 0


def _cmd_inspect(args):
    try:
        data = Path(args.image).read_bytes()
    except OSError as e:
        raise Refused("cannot read %s: %s" % (args.image, e.strerror), 2)
    sha = hashlib.sha256(data).hexdigest()
    if data[:1] == bytes([ESP_IMAGE_MAGIC]):
        try:
            check_fw(data)
        except ImageError as e:
            raise Refused("%s: %s" % (args.image, e))
        print("%s: MicroPython firmware (--target fw), %d bytes, sha256 %s" % (args.image, len(data), sha))
        print("chunks: %s" % ", ".join("%d of %d" % ((len(data) + c - 1) // c, c) for c in FW_CHUNKS))
        return 0
    try:
        entries = unpack(data)
    except ImageError as e:
        raise Refused("%s is not a valid image: %s" % (args.image, e))
    for p, b in entries:
        print("%7d  %s  %s" % (len(b), hashlib.sha256(b).hexdigest()[:16], p))
    notes = sidecar(args.image)
    print("%s: app image, %d entries, %d bytes, sha256 %s, .mpy for %s%s"
          % (args.image, len(entries), len(data), sha, arch_of(entries),
             "".join(", %s %s" % (k, notes[k]) for k in ("version", "name") if k in notes)))
    print("chunks: %d of %d (--chunk %d; topics %s/0..)" % ((len(data) + args.chunk - 1) // args.chunk, args.chunk,
                                                           args.chunk, chunk_prefix(bytes.fromhex(sha), args.chunk)))
    return 0


def _run(cmd, fn):
    return lambda a: fleet._run("update " + cmd, fn, a)


def register(sub):
    u = sub.add_parser("update", help="app and firmware updates over the downlink (build, publish, advance, clear)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__.split("\n\n")[0])
    usub = u.add_subparsers(dest="update_command", metavar="UPDATE_COMMAND")
    u.set_defaults(func=lambda a: (u.print_help(), 2)[1])

    b = usub.add_parser("build", help="pack the application for a board into an update image",
                        description="Compiles firmware/ and lib/ for the board profile's mpy_arch (as petrel "
                                    "deploy does) and packs them, minus main.py, boot.py, appslot and "
                                    "board.json, into an app image; notes --version/--name in IMG.json. "
                                    "Exit codes: 0 built; 1 the build failed; 2 bad usage.")
    b.add_argument("--board", required=True, help="board profile (its mpy_arch)")
    b.add_argument("-o", "--output", required=True, metavar="IMG")
    b.add_argument("--version", type=int, help="the image's version (an integer >= 1), noted for publish")
    b.add_argument("--name", help="a name for people, e.g. 0.7.0 (at most 32 bytes)")
    b.set_defaults(func=_run("build", _cmd_build))

    i = usub.add_parser("inspect", help="list an image's entries, size, SHA-256 and chunk count",
                        description="Checks IMG by the node's rules and lists it. Exit codes: 0 valid; "
                                    "1 refused; 2 bad usage.")
    i.add_argument("image", metavar="IMG")
    i.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="chunk size to count (default %d)" % DEFAULT_CHUNK)
    i.set_defaults(func=_run("inspect", _cmd_inspect))

    p = usub.add_parser(
        "publish", help="publish an image's chunks and a sealed manifest per device",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Publishes the image's chunks once for the fleet (QoS 1, retained, on
PREFIX/update/<16 hex of its SHA-256>-<chunk>/<i>, each chained to the next by its
hash), then per device a manifest sealed with its downlink key and its next
downlink version, retained on PREFIX/DEVICE/down/update. Refused before
anything is published: a version not above one already published to a
device, a device without keys, an image that breaks the rules.

--canary N: only the first N devices get the manifest now; `petrel update
advance` sends it to the rest once all N confirmed it, and halts the rollout
for good when one rolls it back.

Exit codes: 0 published (with --follow: rolled out); 1 refused, the broker
failed, or (--follow) halted or timed out; 2 bad usage.""",
        epilog="""examples:
  petrel update publish app.img --version 7 --name 0.7.0 --all --canary 2 \\
      --registry devices.sqlite --host broker.lan --ca ca.pem
  petrel update publish micropython.bin --target fw --version 3 --devices p-a1b2c3 \\
      --chunk 2048 --registry devices.sqlite --host broker.lan --ca ca.pem""")
    p.add_argument("image", metavar="IMG")
    p.add_argument("--version", type=int, help="the image's version (default: IMG.json's from update build)")
    p.add_argument("--name", help="a name for people (default: IMG.json's, else vVERSION)")
    p.add_argument("--devices", metavar="A,B", help="the devices, in rollout order (canaries first)")
    p.add_argument("--all", action="store_true", help="every device in the registry (canaries: the first N by id)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                   help="chunk size (default %d; app %d..%d; fw %s)" % ((DEFAULT_CHUNK,) + APP_CHUNK + (
                        "/".join(map(str, FW_CHUNKS)),)))
    p.add_argument("--target", choices=("app", "fw"), default="app",
                   help="app (an image of update build) or fw (a MicroPython .bin)")
    p.add_argument("--canary", type=int, default=0, metavar="N", help="publish to the first N devices only")
    p.add_argument("--follow", action="store_true", help="with --canary: advance until done or halted")
    p.add_argument("--follow-timeout", type=float, default=86400.0, metavar="S",
                   help="give up following after S seconds (default a day)")
    p.add_argument("--poll", type=float, default=60.0, metavar="S", help="seconds between looks (default 60)")
    p.add_argument("--store", metavar="URL", help="the collector's store (for --follow)")
    p.add_argument("--chunks-only", action="store_true",
                   help="publish the image's chunks again and nothing else (no manifest, no registry "
                        "change): for a broker that lost its retained messages mid-rollout; the same "
                        "image and --chunk give the same topics and bytes")
    fleet._broker_options(p)
    p.set_defaults(func=_run("publish", _cmd_publish))

    a = usub.add_parser(
        "advance", help="move staged rollouts on: the rest once the canaries confirmed, halt on a rollback",
        description="Reads the canaries' health records in the collector's store: when every canary reports "
                    "the version running and confirmed (appv, appt 0), sends the manifest to the rest; when one "
                    "rolled it back (aprb grew, aperr names it, or appv fell back after its trial), halts the "
                    "rollout and the rest never get it. Prints each rollout's state. "
                    "Exit codes: 0; 1 the store, registry or broker failed; 2 bad usage.")
    a.add_argument("--store", required=True, metavar="URL", help="the collector's store")
    fleet._broker_options(a)
    a.set_defaults(func=_run("advance", _cmd_advance))

    c = usub.add_parser("clear", help="remove an image's retained chunks from the broker",
                        description="Publishes an empty retained message on each retained chunk of IMG (every "
                                    "chunk size it was published with) or of --prefix P, once a rollout is "
                                    "over; with --registry, refuses while a rollout on those chunks is still "
                                    "publishing or waiting on its canaries (--force clears them all the same: "
                                    "nodes downloading them give their download up), and marks its rollouts "
                                    "cleared. Exit codes: 0; 1 the broker failed; 2 bad usage or refused.")
    c.add_argument("image", nargs="?", metavar="IMG")
    c.add_argument("--prefix", metavar="P", help="the chunks' topic prefix, PREFIX/update/<16 hex>-<chunk>")
    c.add_argument("--force", action="store_true",
                   help="clear even while a rollout on those chunks is publishing or waiting on canaries")
    fleet._broker_options(c)
    for act in c._actions:
        if act.dest == "registry":
            act.required = False
    c.set_defaults(func=_run("clear", _cmd_clear))
