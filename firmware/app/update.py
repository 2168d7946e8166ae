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
version running, or refused) only cleans up. A finish that fails (no room on
the flash at the check before unpacking, or an unpack that fails: ENOSPC)
removes the half-filled slot at once and is tried UNPACK_TRIES times in all,
then given up (refused, the image removed): never a retry at every wake that
keeps the outbox's flash.

One download at a time: a manifest for the other target (a firmware's while
an app's downloads, or the reverse) waits in data/update.next, checked and
started once the download in progress ends (done, refused, given up): the
fleet side sends a manifest once. A refusal then that may pass later (no
room yet) gives its downlink version back, so its retained copy is taken
when the broker sends it again.
"""

import os
import struct
import sys
from binascii import crc32

import eventlog as log

PATH = "data/update"
IMG = "data/update.img"
QUEUE = "data/update.next"  # the other target's manifest, waiting for this download to end
FW_PATH = "data/fw"  # app.fwupdate's state: absent until a firmware update was switched to
FETCH_BYTES = 16384  # chunk bytes one session may hold on the heap (the inbox, until mailbox time)
FETCH_MISSES = 24  # fetch sessions in a row (SUBACK come) that took no chunk: the download is given up
UNPACK_TRIES = 2  # finishes that found no room or failed to unpack: then the download is given up
ERR_MAX = 80
# downlink version, busy (bit 0; bits 1..7: the finishes that failed, so a file
# of a build that had no count reads as none), target (0 app, 1 fw), image
# version, size, chunk size, chunks done, SHA-256 of the image, of chunk 0's
# message, of the next chunk's
_FMT = "<QBBIIHH32s32s32s"
TARGETS = ("app", "fw")
IDLE, BUSY, IDLE_ERR = 1, 2, 3  # st.upd: 0 not read since RTC memory was lost


class Update:
    IMG = IMG  # for app.updating, which does not import this module back
    QUEUE = QUEUE
    TARGETS = TARGETS
    UNPACK_TRIES = UNPACK_TRIES

    def __init__(self):
        self.downv = 0  # the last update manifest's downlink version (mailbox: replays)
        self.busy = 0
        self.fails = 0  # finishes that failed (no room, unpack): UNPACK_TRIES and it is given up
        self.t = 0
        self.v = self.z = self.c = self.done = 0
        self.h = self.f = self.expect = bytes(32)
        self.n = self.p = self.err = ""

    def chunks(self):
        return (self.z + self.c - 1) // self.c if self.c else 0

    def target(self):
        return TARGETS[self.t]

    def save(self, path=PATH):
        body = struct.pack(_FMT, self.downv, (1 if self.busy else 0) | min(self.fails, 127) << 1, self.t,
                           self.v, self.z, self.c, self.done, self.h, self.f, self.expect)
        n, p = cut(self.n, 32), cut(self.p, 64)
        body += bytes((len(n),)) + n + bytes((len(p),)) + p + cut(self.err, ERR_MAX)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))
        os.rename(tmp, path)  # whole or not at all

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

    # ------------------------------------------------------------ the chunks
    def wanted(self, cfg):
        """-> the next chunks' topics (at most cfg.update_chunks, and what
        FETCH_BYTES holds); [] when there is nothing to fetch."""
        if not self.busy:
            return []
        k = min(cfg.update_chunks, max(1, FETCH_BYTES // (self.c + 32)))
        return [self.p + "/" + str(i) for i in range(self.done, min(self.chunks(), self.done + k))]

    # ------------------------------------------------------------ the work (app.updating)
    def accept(self, st, m):
        """A Manifest (downmsg.update_manifest) whose downlink version the
        caller found new: the download it describes starts (-> True), the same
        image as the download in progress keeps its progress (-> False), or
        downmsg.Refused."""
        from app import updating

        return updating.accept(self, st, m)

    def take(self, st, topic, msg):
        """One message from a chunk topic -> whether the topic was this
        download's (then it was taken, ignored or refused: updating.take)."""
        if not self.busy or not topic.startswith(self.p + "/"):
            return False
        from app import updating

        return updating.take(self, st, topic, msg)

    def settle(self, st):
        """With every chunk in: the image verified whole and handed to its
        target (a firmware's ends in a reset: never returns). With none in
        progress (any more), a queued manifest starts."""
        if self.busy and self.done >= self.chunks():
            from app import updating

            updating.settle(self, st)
        if not self.busy:
            self.dequeue(st)

    def dequeue(self, st):
        """The other target's manifest that waited for the last download
        (data/update.next): started now, or refused (app.updating)."""
        if _size(QUEUE):
            from app import updating

            updating.dequeue(self, st)

    def restart(self):
        self.done = 0
        self.expect = self.f
        _remove(IMG)


def cut(text, n):
    """text's UTF-8 in at most n bytes, never half a character (load() must
    decode what save() wrote)."""
    raw = text.encode()
    if len(raw) <= n:
        return raw
    while n and raw[n] & 0xC0 == 0x80:  # raw[n] continues the character before it
        n -= 1
    return raw[:n]


def load(path=PATH):
    """data/update (or the queued manifest's data/update.next) -> an Update
    (a fresh idle one when absent or damaged)."""
    u = Update()
    try:
        with open(path, "rb") as f:
            raw = f.read(512)
    except OSError:
        return u
    n = struct.calcsize(_FMT)
    try:
        if len(raw) < n + 6 or struct.unpack("<I", raw[-4:])[0] != crc32(raw[:-4]) & 0xFFFFFFFF:
            raise ValueError
        (u.downv, u.busy, u.t, u.v, u.z, u.c, u.done, u.h, u.f, u.expect) = struct.unpack(_FMT, raw[:n])
        u.busy, u.fails = u.busy & 1, u.busy >> 1
        ln = raw[n]
        u.n = raw[n + 1:n + 1 + ln].decode()
        i = n + 1 + ln
        lp = raw[i]
        u.p = raw[i + 1:i + 1 + lp].decode()
        u.err = raw[i + 1 + lp:-4].decode()
        if u.t > 1 or (u.busy and not u.c):
            raise ValueError
    except (ValueError, IndexError, UnicodeError):
        log.error("update", "%s damaged: no download in progress", path)
        return Update()
    return u


Update.load = staticmethod(load)  # app.updating reads the queue through the Update it is handed


def wanted(st, cfg):
    """The chunk topics this session should fetch; st.upd set from the file."""
    u = load()
    u.flag(st)
    return u.wanted(cfg)


def abandon(st, why):
    """The download given up (its chunks are not on the broker any more, or
    never the one it needs): a new manifest starts it again. A queued
    manifest starts now."""
    u = load()
    if u.busy:
        u.refuse(st, "stale", "%s v%d: %s" % (u.target(), u.v, why))
        u.busy = 0
        _remove(IMG)
        u.save()
        u.dequeue(st)
    u.flag(st)


def report(st):
    """The health record's fields: upd ("" or "<t> v<v> <done>/<n>"), uperr
    (the last refusal), and app.fwupdate's fwv and fwt."""
    out = {"upd": "", "uperr": "", "fwv": 0, "fwt": 0}
    if st.upd != IDLE:
        u = load()
        u.flag(st)
        out["upd"], out["uperr"] = u.status(), u.err
        if st.upd == IDLE_ERR:  # the refusal reported: not read again at every uplink (after a power-on: once more)
            st.upd = IDLE
    if "app.fwupdate" not in sys.modules and not _size(FW_PATH):
        return out  # never a firmware update: as flashed, and no module loaded to say so
    try:
        from app import fwupdate

        fw = fwupdate.report()
        out["fwv"], out["fwt"] = fw["fwv"], fw["fwt"]
        if not out["uperr"] and fw.get("fwerr"):
            out["uperr"] = fw["fwerr"][:ERR_MAX]
    except (ImportError, OSError, KeyError) as e:  # a build without it, a flash error: the rest is sent
        log.warn("update", "fw report: %s", e)
    return out


# ---------------------------------------------------------------- flash
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




def __getattr__(name):
    """The download's work moved to app.updating (so this module, imported
    for every health record, stays small): its names are reached through
    here too (host/test_update_host.py reads the image with them)."""
    from app import updating

    try:
        return getattr(updating, name)
    except AttributeError:
        raise AttributeError(name)
