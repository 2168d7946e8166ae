"""A sequence number that never repeats: across deep sleep, reset and power loss.

    seq = SeqCounter("/seq", rtcmem.Region(machine.RTC(), 1344, 64))
    n = seq.next()

The next number lives in RTC memory (no flash access on a wake), and a limit
is kept on flash ahead of it: before the first number of a new block of k is
handed out, limit = n + k is written to the file (write, then rename, with a
CRC). Every number handed out is below the limit on flash, so after a power
loss (RTC memory gone) counting resumes at that limit, skipping at most k - 1
numbers (RFC 8613 appendix B.1.1). Flash is written once per k numbers.

    file = b"PSQ" | version | limit (u64 LE) | crc32 (u32 LE)
    RTC  = b"SQ" | next (u64 LE) | limit (u64 LE)   (in an rtcmem record)

What it trusts, in order: a valid RTC record (it is written before any number
leaves, so it is never behind); else the file's limit (or a leftover
file.tmp's, if larger: it was written before any of its block left); else,
with no file at all, a brand-new device: 1. A file that is there but damaged,
with RTC memory lost too, leaves nothing to trust: rather than stop sending,
it starts from the largest number it knows (1 if none), logs an error and
sets `damaged`, so the app can report it: the receiver will see old numbers
again and drop them as replays until the count passes them. The RTC record is
trusted on a wake without reading flash: a file replaced behind its back (a
filesystem wiped while RTC memory kept power) is not noticed before the next
block. Without an RTC region every boot starts a new block: pick a small k.

The limit: numbers go up to MAX = 2**63 - 1 (what the collector accepts, a
signed 64-bit column). Past it next() raises Exhausted (a ValueError, which
the uplink's drain treats as a failed session: the readings stay queued) and
never wraps: a repeated number would be a replay to the receiver. A counter
gets there only from crafted state (at one number a second, 2**63 is
beyond any battery); the device then needs a new key.
"""

import os
import struct
from binascii import crc32

import eventlog as log

VERSION = 1
MAGIC = b"PSQ" + bytes((VERSION,))
_FILE_LEN = 4 + 8 + 4
RTC_MAGIC = b"SQ"
MAX = (1 << 63) - 1  # the last number handed out
_U64 = (1 << 64) - 1


class Exhausted(ValueError):
    """No number left below MAX: nothing may be sealed with this key any more."""


class SeqCounter:
    def __init__(self, path, rtc_region=None, k=256, floor=None):
        """floor: called once, at the first next() of a counter that had nothing
        to trust (brand new, or file damaged with RTC memory lost), for a number
        to start at or above. Seconds since the firmware's build time, once the
        clock is known, keep a board that was erased and provisioned again above
        the numbers it used before (at up to one message a second), so the
        receiver does not take its messages for replays."""
        if k < 1:
            raise ValueError("seqcounter block k must be >= 1")
        self.path = path
        self.rtc = rtc_region
        self.k = k
        self.floor = floor
        self.damaged = False
        self.resumed = "new"  # where the count came from: rtc, flash, new, damaged
        self._next, self._limit = self._recover()
        self._fresh = self.resumed in ("new", "damaged")

    def next(self):
        """The next number: larger than any handed out before, on any boot."""
        n = self._next
        if self._fresh:
            self._fresh = False
            if self.floor is not None:
                n = max(n, int(self.floor()))
        if n > MAX:
            log.error("seq", "counter exhausted at %d: nothing can be sealed", n)
            raise Exhausted("seqcounter: no number left, a new key is needed")
        if n >= self._limit:
            self._persist(min(n + self.k, _U64))  # before any number of the block leaves
        self._next = n + 1
        self._save_rtc()
        return n

    def peek(self):
        """What next() will return (nothing is reserved)."""
        return self._next

    # ------------------------------------------------------------ storage
    def _persist(self, limit):
        body = MAGIC + struct.pack("<Q", limit)
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))
        os.rename(tmp, self.path)  # raises on a flash error: nothing handed out
        self._limit = limit

    def _load(self, path):
        """-> (limit, "ok") or (None, "missing" | "bad")."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            return None, "missing"
        if (len(raw) != _FILE_LEN or raw[:4] != MAGIC
                or struct.unpack("<I", raw[-4:])[0] != crc32(raw[:-4]) & 0xFFFFFFFF):
            return None, "bad"
        return struct.unpack("<Q", raw[4:12])[0], "ok"

    def _save_rtc(self):
        if self.rtc is not None:
            self.rtc.save(RTC_MAGIC + struct.pack("<QQ", self._next, self._limit))

    def _recover(self):
        if self.rtc is not None:
            payload, why = self.rtc.load()
            if payload is not None and len(payload) == 18 and payload[:2] == RTC_MAGIC:
                nxt, limit = struct.unpack("<QQ", payload[2:])
                if 1 <= nxt <= limit:
                    self.resumed = "rtc"
                    return nxt, limit
                why = "inconsistent"
            elif payload is not None:
                why = "foreign"
            if why != "empty":
                log.warn("seq", "rtc record unusable why=%s", why)
        limit, why = self._load(self.path)
        tmp, _ = self._load(self.path + ".tmp")
        if tmp is not None and (limit is None or tmp > limit):
            limit = tmp  # written before a crash, before any of its block left
            why = "ok"
        if why == "ok":
            self.resumed = "flash"
            log.info("seq", "resumed from flash next=%d", limit)
            return limit, limit  # the next call starts a new block
        if why == "bad":
            self.damaged = True
            self.resumed = "damaged"
            log.error("seq", "counter file damaged and rtc lost: restarting at 1, numbers may repeat")
        return 1, 0
