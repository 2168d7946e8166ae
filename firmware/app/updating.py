"""The work of an update's download (app.update's heavy half, loaded only on
a wake that has a manifest, a chunk or a finish to do: app.update itself, which
the health record imports at every uplink, stays small): the manifest's
checks, a chunk's check and write, the finish (verify, unpack into the free
slot, verify the tree, appslot.stage; or the firmware's sink and switch).
app.update's docstring has the whole story; its Update methods call these.
"""

import hashlib
import os
import struct

import downmsg
import eventlog as log

# nothing of app.update is imported back: what is shared comes with the
# Update handed in (u.IMG, u.TARGETS)
MAGIC = b"PTRLAPP1"
ROOM_SPARE = 16384  # free flash left beside the image and its unpacked copy
MAX_ENTRIES = 200
MAX_PATH = 64
MAX_LEVELS = 4
RUNNABLE = ("app/ladder.mpy", "app/ladder.py")  # what main.py runs after appslot.choose()
PIECE = 1024  # bytes read or written at a time: the image is never on the heap whole
_PATH_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-"


# ------------------------------------------------------------ the manifest
def accept(u, st, m):
    """A Manifest (downmsg.update_manifest) whose downlink version the
    caller found new: the download it describes starts, or Refused. The
    same image as the download in progress keeps its progress."""
    t = u.TARGETS.index(m.t)
    if u.busy and (u.t, u.v, u.h, u.c, u.p) == (t, m.v, m.h, m.c, m.p):
        return False
    running, refused = _target_version(m.t)
    if m.v <= running:
        raise downmsg.Refused("stale", "%s v%d, running v%d" % (m.t, m.v, running))
    if refused(m.v):
        raise downmsg.Refused("reverted", "%s v%d was rolled back" % (m.t, m.v))
    if u.busy and m.v < u.v:
        raise downmsg.Refused("stale", "%s v%d, v%d downloading" % (m.t, m.v, u.v))
    if m.t == "app":
        free = _free_bytes() + _size(u.IMG)  # the old download's image goes
        if free < 2 * m.z + ROOM_SPARE:
            raise downmsg.Refused("invalid", "no room: %d bytes free for %d" % (free, m.z))
    else:
        _fw_sink(m.z, m.c)  # the build has an OTA partition that takes it (Refused if not)
    _remove(u.IMG)
    u.busy, u.t, u.v, u.n, u.z, u.c = 1, t, m.v, m.n, m.z, m.c
    u.h, u.f, u.expect, u.p, u.done = m.h, m.f, m.f, m.p, 0
    log.info("update", "%s v%d (%s) accepted: %d bytes in %d chunks", m.t, m.v, m.n, m.z, u.chunks())
    return True


def take(u, st, topic, msg):
    """One message from a chunk topic -> whether the topic was this
    download's (then it was taken or ignored). Only the next chunk is
    taken: others (out of order, again) are ignored quietly; one whose
    message does not hash to the expected value is refused (forged) and
    nothing of it is written."""
    pre = u.p + "/"
    if not u.busy or not topic.startswith(pre):
        return False
    rest = topic[len(pre):]
    if rest != str(u.done) or u.done >= u.chunks():
        return True
    i = u.done
    if msg is None:  # past the client's max_packet: read past (mqtt_keepalive.skip)
        u.refuse(st, "oversized", "chunk %d" % i)
        return True
    if hashlib.sha256(msg).digest() != u.expect:
        u.refuse(st, "forged", "chunk %d does not match its hash" % i)
        return True
    size = min(u.c, u.z - i * u.c)
    if len(msg) != size + 32:  # hashed right, so the fleet side made it so: refused all the same
        u.refuse(st, "invalid", "chunk %d of %d bytes" % (i, len(msg) - 32))
        return True
    data = memoryview(msg)[:size]
    if u.t == 0:
        if not _write_img(u, i, data):
            return True
    else:
        _fw_sink(u.z, u.c).write(i * u.c, data)
    u.done = i + 1
    u.expect = bytes(msg[size:])
    u.save()  # after the chunk is on flash: a cut before this writes it again
    return True


def _write_img(u, i, data):
    if i == 0:
        f = open(u.IMG, "wb")
    else:
        try:
            f = open(u.IMG, "r+b")
        except OSError:
            f = None
    try:
        if f is not None and f.seek(0, 2) >= i * u.c:
            f.seek(i * u.c)
            f.write(data)
            return True
    finally:
        if f is not None:
            f.close()
    log.warn("update", "%s lost: download starts over", u.IMG)
    u.restart()
    u.save()
    return False


# ------------------------------------------------------------ the finish
def settle(u, st):
    """With every chunk in: the image verified whole and handed to its
    target. A fw image ends in fwupdate.finish (a reset: never returns)."""
    if not u.busy or u.done < u.chunks():
        return
    running, refused = _target_version(u.target())
    if running >= u.v or refused(u.v) or (u.t == 1 and _fw_on_trial()):
        _done(u, "%s v%d already switched to" % (u.target(), u.v))
        return
    if u.t == 1:
        return _finish_fw(u, st)
    if _digest(u.IMG, u.z) != u.h:
        u.refuse(st, "forged", "image hash")
        u.restart()
        u.save()
        return
    try:
        entries = _entries(u.IMG, u.z)
    except downmsg.Refused as e:
        u.refuse(st, e.args[0], e.args[1])
        u.busy = 0
        _remove(u.IMG)
        u.save()
        return
    import appslot

    if appslot.on_trial():  # the free slot is the trial's way back: staged once the trial ends
        log.info("update", "app v%d waits for the app on trial to be confirmed or rolled back", u.v)
        return
    slot = appslot.free_slot()
    d = appslot.slot_dir(slot)
    _rmtree(d)
    _unpack(u.IMG, entries, d)
    if _tree_digest(d, entries) != u.h:  # what littlefs gave back is not what was written
        u.refuse(st, "forged", "unpacked slot %d differs" % slot)
        _rmtree(d)
        u.restart()
        u.save()
        return
    appslot.stage(slot, u.v, u.n)
    log.info("update", "app v%d (%s) staged in slot %d: runs from the next boot", u.v, u.n, slot)
    _done(u, None)


def _finish_fw(u, st):
    sink = _fw_sink(u.z, u.c)
    if sink.digest() != u.h:
        u.refuse(st, "forged", "firmware read back")
        u.restart()
        u.save()
        return
    from app import fwupdate

    log.info("update", "fw v%d (%s) written: switching", u.v, u.n)
    st.save()  # the reset below ends the wake: what RTC memory keeps is kept now
    fwupdate.finish(u.v, u.n)


def _done(u, why):
    if why:
        log.info("update", "%s", why)
    u.busy = 0
    _remove(u.IMG)
    u.save()


# ---------------------------------------------------------------- targets
def _target_version(t):
    """-> (running version, refused(v)) of a target."""
    try:
        if t == "app":
            import appslot

            return appslot.running()[1], appslot.refused
        from app import fwupdate
    except ImportError:
        raise downmsg.Refused("invalid", "no %s updates in this build" % t)
    return fwupdate.report()["fwv"], fwupdate.refused


def _fw_on_trial():
    from app import fwupdate

    return fwupdate.on_trial()


def _fw_sink(z, c):
    from app import fwupdate

    try:
        return fwupdate.Sink(z, c)
    except (OSError, ValueError) as e:
        raise downmsg.Refused("invalid", "firmware: %s" % e)


# ---------------------------------------------------------------- the app image
def _path_problem(path):
    """None if the node unpacks an entry of that path, else why not (the host's
    rules, tools/petrel/update.py: relative, plain, shallow, never a file the
    update must not replace)."""
    if not path or len(path) > MAX_PATH:
        return "length"
    for ch in path:
        if ch not in _PATH_CHARS:
            return "character"
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return "an empty, . or .. part"
    if len(parts) > MAX_LEVELS:
        return "%d levels" % len(parts)
    top = parts[0]
    if len(parts) == 1 and (top in ("boot.py", "main.py", "board.json") or top.startswith("appslot.")
                            or (top.endswith(".json") and (top.startswith("config") or top.startswith("secrets")))):
        return "a file an update never replaces"
    if top == "data":
        return "the node's state folder"
    return None


def _entries(img, z):
    """The image's entries [(path, offset, size)], every rule checked before
    anything is written; Refused("invalid") naming the first broken one."""
    out = []
    last = None
    with open(img, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise downmsg.Refused("invalid", "not an app image")
        pos = len(MAGIC)
        while True:
            b = f.read(2)
            if len(b) < 2:
                raise downmsg.Refused("invalid", "image truncated")
            n = b[0] | b[1] << 8
            if n == 0:
                break
            raw = f.read(n) if n <= MAX_PATH else b""
            try:
                path = raw.decode()
            except UnicodeError:
                path = ""
            why = _path_problem(path) if len(raw) == n else "length"
            if why:
                raise downmsg.Refused("invalid", "entry %s: %s" % (path[:MAX_PATH] or "?", why))
            if last is not None and path <= last:  # sorted, each once (ASCII: str order is byte order)
                raise downmsg.Refused("invalid", "entry %s: out of order" % path)
            b = f.read(4)
            if len(b) < 4:
                raise downmsg.Refused("invalid", "image truncated")
            size = struct.unpack("<I", b)[0]
            pos += 2 + n + 4
            if pos + size + 2 > z:
                raise downmsg.Refused("invalid", "entry %s: past the end" % path)
            out.append((path, pos, size))
            if len(out) > MAX_ENTRIES:
                raise downmsg.Refused("invalid", "more than %d entries" % MAX_ENTRIES)
            pos += size
            f.seek(pos)
            last = path
        if pos + 2 != z:
            raise downmsg.Refused("invalid", "bytes after the last entry")
    for path, _, _ in out:
        if path in RUNNABLE:
            return out
    raise downmsg.Refused("invalid", "no app/ladder: nothing main.py could run")


def _unpack(img, entries, d):
    made = {}
    buf = bytearray(PIECE)
    with open(img, "rb") as src:
        for path, off, size in entries:
            parts = path.split("/")
            sub = d
            for part in parts[:-1]:
                sub += "/" + part
                if sub not in made:
                    _mkdirs(sub)
                    made[sub] = 1
            src.seek(off)
            with open(d + "/" + path, "wb") as out:
                left = size
                while left:
                    n = src.readinto(buf) if left >= PIECE else src.readinto(memoryview(buf)[:left])
                    if not n:
                        raise OSError("image truncated")
                    out.write(memoryview(buf)[:n])
                    left -= n


def _tree_digest(d, entries):
    """SHA-256 of the unpacked files put back into the archive's form, in
    entry order: the image's hash when every file reads back as written."""
    h = hashlib.sha256(MAGIC)
    buf = bytearray(PIECE)
    for path, _, _ in entries:
        raw = path.encode()
        name = d + "/" + path
        try:
            size = os.stat(name)[6]
        except OSError:
            return None
        h.update(struct.pack("<H", len(raw)) + raw + struct.pack("<I", size))
        with open(name, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
    h.update(b"\0\0")
    return h.digest()


def _digest(path, z):
    h = hashlib.sha256()
    buf = bytearray(PIECE)
    left = z
    try:
        with open(path, "rb") as f:
            while left:
                n = f.readinto(buf) if left >= PIECE else f.readinto(memoryview(buf)[:left])
                if not n:
                    return None
                h.update(memoryview(buf)[:n])
                left -= n
    except OSError:
        return None
    return h.digest()


# ---------------------------------------------------------------- flash
def _free_bytes():
    s = os.statvfs("data")
    return s[0] * s[3]


def _mkdirs(path):
    sub = ""
    for part in path.split("/"):
        sub = sub + "/" + part if sub else part
        try:
            os.mkdir(sub)
        except OSError:  # there already
            pass


def _rmtree(d):
    """Remove folder d and everything in it (nothing if it is not there)."""
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        p = d + "/" + name
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(d)


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
