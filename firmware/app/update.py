"""An update's download on the node (issue 17; README, "Managing nodes in the
field"): a manifest (downlink kind "update", app.mailbox) starts it, its
chunks come a few per uplink wake (app.session.fetch), each is checked by the
hash chain before one byte of it is written, and the whole image, once in,
goes to its target: an app image unpacked into a free slot folder, verified
and staged (appslot), a firmware image into the OTA partition (app.fwupdate).

    u = update.load()                   # data/update, or a fresh idle state
    u.accept(st, m)                     # a Manifest (downmsg.update_manifest): Refused or started
    topics = u.wanted(cfg)              # the next update_chunks chunk topics ([] when idle)
    u.take(st, topic, msg)              # one chunk (after the radio is off): whether it was ours
    u.settle(st)                        # the whole image in: verify, unpack or flash, stage
    update.report(st)                   # the health record's upd, uperr (fwv, fwt)

Loaded only on wakes that have something to do with an update: st.upd (RTC
memory, app.state) says what data/update held when last seen; a wake with
st.upd 1 (nothing going on) neither imports this module for the session nor
reads the file.

Power cuts: a chunk is written to data/update.img and the file closed, THEN
data/update (done, expect) is saved whole (tmp + rename), so a cut between
the two writes the same chunk again. The finish (verify, unpack, verify the
tree, appslot.stage) starts over from the image after a cut anywhere before
stage(), which is one atomic write; after it, a finish found done (the new
version running, or refused) only cleans up.
"""

import hashlib
import os
import struct
from binascii import crc32

import downmsg
import eventlog as log

PATH = "data/update"
IMG = "data/update.img"
MAGIC = b"PTRLAPP1"
ROOM_SPARE = 16384  # free flash left beside the image and its unpacked copy
FETCH_BYTES = 16384  # chunk bytes one session may hold on the heap (the inbox, until mailbox time)
FETCH_MISSES = 24  # sessions in a row that found no chunk on the broker: the download is given up
MAX_ENTRIES = 200
MAX_PATH = 64
MAX_LEVELS = 4
RUNNABLE = ("app/ladder.mpy", "app/ladder.py")  # what main.py runs after appslot.choose()
ERR_MAX = 80
PIECE = 1024  # bytes read or written at a time: the image is never on the heap whole
_PATH_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-"
# downlink version, busy, target (0 app, 1 fw), image version, size, chunk size,
# chunks done, SHA-256 of the image, of chunk 0's message, of the next chunk's
_FMT = "<QBBIIHH32s32s32s"
TARGETS = ("app", "fw")
IDLE, BUSY, IDLE_ERR = 1, 2, 3  # st.upd: 0 not read since RTC memory was lost


class Update:
    def __init__(self):
        self.downv = 0  # the last update manifest's downlink version (mailbox: replays)
        self.busy = 0
        self.t = 0
        self.v = self.z = self.c = self.done = 0
        self.h = self.f = self.expect = bytes(32)
        self.n = self.p = self.err = ""

    def chunks(self):
        return (self.z + self.c - 1) // self.c if self.c else 0

    def target(self):
        return TARGETS[self.t]

    def save(self):
        body = struct.pack(_FMT, self.downv, self.busy, self.t, self.v, self.z, self.c, self.done,
                           self.h, self.f, self.expect)
        n, p = self.n.encode()[:32], self.p.encode()[:64]
        body += bytes((len(n),)) + n + bytes((len(p),)) + p + self.err.encode()[:ERR_MAX]
        tmp = PATH + ".tmp"
        with open(tmp, "wb") as f:
            f.write(body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))
        os.rename(tmp, PATH)  # whole or not at all

    def flag(self, st):
        st.upd = BUSY if self.busy else IDLE_ERR if self.err else IDLE

    def status(self):
        """upd in the health record: "app v7 12/30" while downloading, else ""."""
        if not self.busy:
            return ""
        return "%s v%d %d/%d" % (self.target(), self.v, self.done, self.chunks())

    def refuse(self, st, reason, detail):
        st.bump("dr_" + reason)
        self.err = ("update: %s" % detail)[:ERR_MAX]
        log.warn("update", "refused: %s (%s)", reason, detail)

    # ------------------------------------------------------------ the manifest
    def accept(self, st, m):
        """A Manifest (downmsg.update_manifest) whose downlink version the
        caller found new: the download it describes starts, or Refused. The
        same image as the download in progress keeps its progress."""
        t = TARGETS.index(m.t)
        if self.busy and (self.t, self.v, self.h, self.c, self.p) == (t, m.v, m.h, m.c, m.p):
            return False
        running, refused = _target_version(m.t)
        if m.v <= running:
            raise downmsg.Refused("stale", "%s v%d, running v%d" % (m.t, m.v, running))
        if refused(m.v):
            raise downmsg.Refused("reverted", "%s v%d was rolled back" % (m.t, m.v))
        if self.busy and m.v < self.v:
            raise downmsg.Refused("stale", "%s v%d, v%d downloading" % (m.t, m.v, self.v))
        if m.t == "app":
            free = _free_bytes() + _size(IMG)  # the old download's image goes
            if free < 2 * m.z + ROOM_SPARE:
                raise downmsg.Refused("invalid", "no room: %d bytes free for %d" % (free, m.z))
        else:
            _fw_sink(m.z, m.c)  # the build has an OTA partition that takes it (Refused if not)
        _remove(IMG)
        self.busy, self.t, self.v, self.n, self.z, self.c = 1, t, m.v, m.n, m.z, m.c
        self.h, self.f, self.expect, self.p, self.done = m.h, m.f, m.f, m.p, 0
        log.info("update", "%s v%d (%s) accepted: %d bytes in %d chunks", m.t, m.v, m.n, m.z, self.chunks())
        return True

    # ------------------------------------------------------------ the chunks
    def wanted(self, cfg):
        """-> the next chunks' topics (at most cfg.update_chunks, and what
        FETCH_BYTES holds); [] when there is nothing to fetch."""
        if not self.busy:
            return []
        k = min(cfg.update_chunks, max(1, FETCH_BYTES // (self.c + 32)))
        return [self.p + "/" + str(i) for i in range(self.done, min(self.chunks(), self.done + k))]

    def take(self, st, topic, msg):
        """One message from a chunk topic -> whether the topic was this
        download's (then it was taken or ignored). Only the next chunk is
        taken: others (out of order, again) are ignored quietly; one whose
        message does not hash to the expected value is refused (forged) and
        nothing of it is written."""
        pre = self.p + "/"
        if not self.busy or not topic.startswith(pre):
            return False
        rest = topic[len(pre):]
        if rest != str(self.done) or self.done >= self.chunks():
            return True
        i = self.done
        if msg is None:  # past the client's max_packet: read past (mqtt_keepalive.skip)
            self.refuse(st, "oversized", "chunk %d" % i)
            return True
        if hashlib.sha256(msg).digest() != self.expect:
            self.refuse(st, "forged", "chunk %d does not match its hash" % i)
            return True
        size = min(self.c, self.z - i * self.c)
        if len(msg) != size + 32:  # hashed right, so the fleet side made it so: refused all the same
            self.refuse(st, "invalid", "chunk %d of %d bytes" % (i, len(msg) - 32))
            return True
        data = memoryview(msg)[:size]
        if self.t == 0:
            if not self._write_img(i, data):
                return True
        else:
            _fw_sink(self.z, self.c).write(i * self.c, data)
        self.done = i + 1
        self.expect = bytes(msg[size:])
        self.save()  # after the chunk is on flash: a cut before this writes it again
        return True

    def _write_img(self, i, data):
        if i == 0:
            f = open(IMG, "wb")
        else:
            try:
                f = open(IMG, "r+b")
            except OSError:
                f = None
        try:
            if f is not None and f.seek(0, 2) >= i * self.c:
                f.seek(i * self.c)
                f.write(data)
                return True
        finally:
            if f is not None:
                f.close()
        log.warn("update", "%s lost: download starts over", IMG)
        self.restart()
        self.save()
        return False

    def restart(self):
        self.done = 0
        self.expect = self.f
        _remove(IMG)

    # ------------------------------------------------------------ the finish
    def settle(self, st):
        """With every chunk in: the image verified whole and handed to its
        target. A fw image ends in fwupdate.finish (a reset: never returns)."""
        if not self.busy or self.done < self.chunks():
            return
        running, refused = _target_version(self.target())
        if running >= self.v or refused(self.v) or (self.t == 1 and _fw_on_trial()):
            self._done("%s v%d already switched to" % (self.target(), self.v))
            return
        if self.t == 1:
            return self._finish_fw(st)
        if _digest(IMG, self.z) != self.h:
            self.refuse(st, "forged", "image hash")
            self.restart()
            self.save()
            return
        try:
            entries = _entries(IMG, self.z)
        except downmsg.Refused as e:
            self.refuse(st, e.args[0], e.args[1])
            self.busy = 0
            _remove(IMG)
            self.save()
            return
        import appslot

        slot = appslot.free_slot()
        d = appslot.slot_dir(slot)
        _rmtree(d)
        _unpack(IMG, entries, d)
        if _tree_digest(d, entries) != self.h:  # what littlefs gave back is not what was written
            self.refuse(st, "forged", "unpacked slot %d differs" % slot)
            _rmtree(d)
            self.restart()
            self.save()
            return
        appslot.stage(slot, self.v, self.n)
        log.info("update", "app v%d (%s) staged in slot %d: runs from the next boot", self.v, self.n, slot)
        self._done(None)

    def _finish_fw(self, st):
        sink = _fw_sink(self.z, self.c)
        if sink.digest() != self.h:
            self.refuse(st, "forged", "firmware read back")
            self.restart()
            self.save()
            return
        from app import fwupdate

        log.info("update", "fw v%d (%s) written: switching", self.v, self.n)
        st.save()  # the reset below ends the wake: what RTC memory keeps is kept now
        fwupdate.finish(self.v, self.n)

    def _done(self, why):
        if why:
            log.info("update", "%s", why)
        self.busy = 0
        _remove(IMG)
        self.save()


def load():
    """data/update -> an Update (a fresh idle one when absent or damaged)."""
    u = Update()
    try:
        with open(PATH, "rb") as f:
            raw = f.read(512)
    except OSError:
        return u
    n = struct.calcsize(_FMT)
    try:
        if len(raw) < n + 6 or struct.unpack("<I", raw[-4:])[0] != crc32(raw[:-4]) & 0xFFFFFFFF:
            raise ValueError
        (u.downv, u.busy, u.t, u.v, u.z, u.c, u.done, u.h, u.f, u.expect) = struct.unpack(_FMT, raw[:n])
        ln = raw[n]
        u.n = raw[n + 1:n + 1 + ln].decode()
        i = n + 1 + ln
        lp = raw[i]
        u.p = raw[i + 1:i + 1 + lp].decode()
        u.err = raw[i + 1 + lp:-4].decode()
        if u.t > 1 or (u.busy and not u.c):
            raise ValueError
    except (ValueError, IndexError, UnicodeError):
        log.error("update", "%s damaged: no download in progress", PATH)
        return Update()
    return u


def wanted(st, cfg):
    """The chunk topics this session should fetch; st.upd set from the file."""
    u = load()
    u.flag(st)
    return u.wanted(cfg)


def abandon(st, why):
    """The download given up (its chunks are not on the broker any more): a
    new manifest starts it again."""
    u = load()
    if u.busy:
        u.refuse(st, "stale", "%s v%d: %s" % (u.target(), u.v, why))
        u.busy = 0
        _remove(IMG)
        u.save()
    u.flag(st)


def report(st):
    """The health record's fields: upd ("" or "<t> v<v> <done>/<n>"), uperr
    (the last refusal), and app.fwupdate's fwv and fwt."""
    out = {"upd": "", "uperr": ""}
    if st.upd != IDLE:
        u = load()
        u.flag(st)
        out["upd"], out["uperr"] = u.status(), u.err
    try:
        from app import fwupdate

        fw = fwupdate.report()
        out["fwv"], out["fwt"] = fw["fwv"], fw["fwt"]
        if not out["uperr"] and fw.get("fwerr"):
            out["uperr"] = fw["fwerr"][:ERR_MAX]
    except (ImportError, OSError, KeyError) as e:  # a build without it, a flash error: the rest is sent
        log.warn("update", "fw report: %s", e)
    return out


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
