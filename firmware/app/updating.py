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
# free flash kept beside the image and its unpacked copy: the outbox goes on
# growing while the download takes its wakes (an unsent day of readings)
ROOM_SPARE = 65536
MAX_ENTRIES = 200
MAX_PATH = 64
MAX_LEVELS = 4
RUNNABLE = ("app/ladder.mpy", "app/ladder.py")  # what main.py runs after appslot.choose()
_EBUSY = 16  # app.fwupdate's "a firmware trial is on" (MicroPython's errno has no EBUSY)
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
    if u.busy and t != u.t:  # versions of two targets do not compare: it waits its turn
        return _queue(u, m)
    if u.busy and m.v < u.v:
        raise downmsg.Refused("stale", "%s v%d, v%d downloading" % (m.t, m.v, u.v))
    if m.t == "app":
        bs, free = _flash()
        free += _blocks(_size(u.IMG), bs) * bs  # the old download's image goes
        # the image's blocks, its unpacked copy (at least as many), the slot's folders, the spare
        need = (2 * _blocks(m.z, bs) + 2 * 4) * bs + ROOM_SPARE
        if free < need:
            raise downmsg.Later("invalid", "no room: %d bytes free, %d needed" % (free, need))
    else:
        _fw_sink(m.z, m.c)  # the build has an OTA partition that takes it (Refused if not)
    _remove(u.IMG)
    u.busy, u.t, u.v, u.n, u.z, u.c = 1, t, m.v, m.n, m.z, m.c
    u.h, u.f, u.expect, u.p, u.done, u.fails = m.h, m.f, m.f, m.p, 0, 0
    st.upd_miss = 0
    log.info("update", "%s v%d (%s) accepted: %d bytes in %d chunks", m.t, m.v, m.n, m.z, u.chunks())
    return True


def _queue(u, m):
    """m (the other target's manifest) waits in u.QUEUE for the download in
    progress to end (app.update's dequeue); a newer one of its target
    replaces it. -> False: the download in progress goes on."""
    q = u.load(u.QUEUE)
    if q.busy and q.v > m.v:
        raise downmsg.Refused("stale", "%s v%d, v%d waits" % (m.t, m.v, q.v))
    q = type(u)()
    q.busy, q.t, q.v, q.n, q.z, q.c, q.h, q.f, q.p = 1, u.TARGETS.index(m.t), m.v, m.n, m.z, m.c, m.h, m.f, m.p
    q.downv = getattr(m, "downv", 0)  # app.mailbox: its downlink version, given back if it is refused later
    q.save(u.QUEUE)
    log.info("update", "%s v%d (%s) waits for the %s v%d download to end", m.t, m.v, m.n, u.target(), u.v)
    return False


def dequeue(u, st):
    """The other target's manifest that waited in u.QUEUE for the last
    download: checked and started now, or refused. A refusal that may pass
    later gives its downlink version back (its retained copy is taken again)."""
    q = u.load(u.QUEUE)
    if q.busy:
        m = downmsg.Manifest()
        m.t, m.v, m.n, m.z, m.h, m.c, m.f, m.p = q.target(), q.v, q.n, q.z, q.h, q.c, q.f, q.p
        try:
            accept(u, st, m)
            u.err = ""
        except downmsg.Refused as e:
            u.refuse(st, e.args[0], e.args[1])
            if isinstance(e, downmsg.Later):
                u.downv = min(u.downv, q.downv - 1)
        u.save()
    _remove(u.QUEUE)


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
    st.upd_miss = 0  # progress: app.cycle's count of fruitless fetches starts again
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
    if running >= u.v or refused(u.v) or (u.t == 1 and _fw_trial_of(u.v)):
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
    try:
        bs, free = _flash()
        free += _tree_blocks(d, bs) * bs  # the free slot's old contents go
        need = (_entries_blocks(entries, bs) + 2) * bs + ROOM_SPARE  # + "slots" itself
        if free < need:
            raise OSError("no room: %d bytes free, %d needed with the outbox's spare" % (free, need))
        _rmtree(d)
        _unpack(u.IMG, entries, d)
    except OSError as e:  # ENOSPC: the half-filled slot goes now, its flash back to the outbox
        _rmtree(d)
        _failed(u, st, "slot %d: %s" % (slot, e))
        return
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


def _failed(u, st, why):
    """A finish that could not unpack: tried again at the next wake, given up
    (refused, the image removed) after u.UNPACK_TRIES."""
    u.fails += 1
    if u.fails < u.UNPACK_TRIES:
        log.warn("update", "app v%d not unpacked (%s): tried again", u.v, why)
        u.save()
        return
    u.refuse(st, "invalid", "%s v%d given up: %s" % (u.target(), u.v, why))
    _done(u, None)


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


def _fw_trial_of(v):
    """Whether the firmware on trial is version v (the one this download
    switched to); another one's download waits: its sink is refused (errno
    16, Later) until the trial is settled."""
    from app import fwupdate

    return fwupdate.trial_version() == v


def _fw_sink(z, c):
    from app import fwupdate

    try:
        return fwupdate.Sink(z, c)
    except (OSError, ValueError) as e:
        if isinstance(e, OSError) and e.args and e.args[0] == _EBUSY:  # a trial on: ends soon
            raise downmsg.Later("invalid", "firmware: %s" % e)
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
    dirs, files = {}, {}  # what the entries make: no entry may be a folder of one, nor under a file
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
            why = _folder_problem(path, dirs, files)
            if why:
                raise downmsg.Refused("invalid", "entry %s: %s" % (path, why))
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


def _folder_problem(path, dirs, files):
    """None when path is neither a folder of another entry nor under one's
    file ("app" and "app/x": unpacking one fails on the other at every wake)."""
    if path in dirs:
        return "a folder of another entry"
    parts = path.split("/")
    sub = ""
    for part in parts[:-1]:
        sub = sub + "/" + part if sub else part
        if sub in files:
            return "under the file %s" % sub
        dirs[sub] = 1
    files[path] = 1
    return None


def _entries_blocks(entries, bs):
    """Flash blocks the unpacked entries take on littlefs: each file's data
    in whole blocks (a small one inlined in its folder's metadata: counted
    as one all the same), two per folder (a metadata pair)."""
    n, dirs = 0, {}
    for path, _, size in entries:
        n += max(1, _blocks(size, bs))
        i = path.rfind("/")
        while i > 0:
            dirs[path[:i]] = 1
            i = path.rfind("/", 0, i)
    return n + 2 * (len(dirs) + 1)  # + the slot folder


def _tree_blocks(d, bs):
    """Blocks the files under folder d take, counted as _entries_blocks does."""
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    n = 2
    for name in names:
        p = d + "/" + name
        st = os.stat(p)
        n += _tree_blocks(p, bs) if st[0] & 0x4000 else max(1, _blocks(st[6], bs))
    return n


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
def _flash():
    """-> (block size, free bytes) of the filesystem data/ is on."""
    s = os.statvfs("data")
    return s[0], s[0] * s[3]


def _blocks(n, bs):
    return (n + bs - 1) // bs


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
