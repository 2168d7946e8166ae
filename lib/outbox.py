"""Store-and-forward outbox: every accepted reading is kept until the uplink
confirms it, through network outages, deep sleep, resets and power cuts.

    ob = Outbox("/outbox", rtc=rtcmem.Region(machine.RTC(), 256, 1024))
    seq = ob.append(payload, t)       # accepted: it will be delivered or counted
    batch = ob.peek(12)               # [(seq, t, payload), ...] oldest first
    ...publish, wait for PUBACK...
    ob.ack(batch[-1][0])              # only now is it forgotten

On flash the queue is a folder of segment files (NNNNNNNN.q, ~4 KiB each) of
self-checking records, plus a small state file (acknowledged and dropped
sequence numbers, counters) replaced atomically by rename:

    segment = b"PQ" | version | 0 | record...
    record  = 0xA5 | len | seq (u32) | t (u32) | payload | crc32 (u32)

Bounded by bytes: when the segments would exceed `capacity`, the oldest segment
goes and `drops` counts its unconfirmed readings; the counter is persisted.

The RTC fast path (pass `rtc`): new readings are kept in an RTC memory region
and written to flash in one block when the region fills, so a node that
samples every minute and uploads hourly never writes flash at all while its
link is up. RTC memory survives deep sleep, reset and watchdog but not power
loss: on a power cut the readings still in RTC (at most one region's worth)
are lost, and sequence numbers are reserved ahead on flash so none is reused.
Without `rtc`, every append is on flash before it returns.

Limits. Sequence numbers are u32 and are reading ids downstream (the
collector stores each (device, channel, id) once; a new outbox starts below
2**30, see start_at): the last one handed out is MAX_SEQ = 2**32 - 2 (the
reservation on flash must lie above it). Past it append() refuses the reading
with Exhausted (an OSError: the caller counts it, as it counts a flash that
refuses) and `refused` counts it; readings already stored stay and drain, and
no number is ever wrapped or reused: a node that got there (about 4 billion
readings, or crafted state) needs a new device id. Records and state found at
recovery with numbers up to 2**32 - 1 are kept and delivered. The state's
counters (drops, corrupt, discarded) saturate at 2**32 - 1; segment file
numbers (8 digits) are renumbered from 1, order kept, before they would need
a ninth.

Recovery at boot never crashes on what it finds: a torn or corrupted record is
skipped and counted and the good records after it are kept (the segment is
rewritten without it, so it is counted once); a segment from another version
or a foreign file is discarded and logged; a bad state file is replaced.
Records are kept only in ascending order: a record above the floor whose
number is at or below one kept before it (the outbox never writes one) is
damage, skipped, counted in `corrupt` and rewritten away like a torn record,
so peek() returns what recovery kept. A CRC-valid state whose acked lies
above its floor (never written: ack raises both) is damaged: acked is
lowered to the floor and `corrupt` counts it. The floor is what is gone
(peek, ack and recovery all go by it): what lies above it is delivered,
once more at worst (the collector stores each number once), and is then
acked for good; sequence numbers never go down.
"""

import os
import struct
from binascii import crc32

import eventlog as log
import rtcmem

VERSION = 1
SEG_HEADER = b"PQ" + bytes((VERSION, 0))
REC_MAGIC = 0xA5
REC_HEAD = 10  # magic, len, seq, t
REC_OVERHEAD = REC_HEAD + 4
STATE_MAGIC = b"PS" + bytes((VERSION,))
_STATE_FMT = "<IIIIII"  # acked, floor, drops, corrupt, discarded, seq_limit
_STATE_LEN = 3 + 24 + 4
_RTC_FMT = "<I"  # next sequence number, then records
U32 = 0xFFFFFFFF
MAX_SEQ = U32 - 1  # the last number handed out: seq_limit (u32) can still lie above it
SEGNO_MAX = 99999999  # segment file names have 8 digits


class Exhausted(OSError):
    """No sequence number left: the reading is refused (see the module's docstring)."""


def _sat(n):
    """A counter as the state file keeps it: saturated, never wrapped."""
    return n if n < U32 else U32


def encode(seq, t, payload):
    body = struct.pack("<BBII", REC_MAGIC, len(payload), seq, t) + payload
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def decode(data, start=0):
    """Valid records in data[start:]: yields (seq, t, payload, end_offset);
    a damaged stretch yields (None, None, None, end_of_damage) once."""
    i = start
    n = len(data)
    bad_from = -1
    while i < n:
        rec = None
        if data[i] == REC_MAGIC and i + REC_OVERHEAD <= n:
            ln = data[i + 1]
            end = i + REC_OVERHEAD + ln
            if end <= n:
                crc = struct.unpack("<I", data[end - 4 : end])[0]
                if crc == crc32(data[i : end - 4]) & 0xFFFFFFFF:
                    seq, t = struct.unpack("<II", data[i + 2 : i + REC_HEAD])
                    rec = (seq, t, bytes(data[i + REC_HEAD : end - 4]), end)
        if rec is None:
            if bad_from < 0:
                bad_from = i
            i += 1
            continue
        if bad_from >= 0:
            yield None, None, None, i
            bad_from = -1
        yield rec
        i = rec[3]
    if bad_from >= 0:
        yield None, None, None, n


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Outbox:
    def __init__(self, path, capacity=65536, segment_bytes=4096, rtc=None, reserve=1024):
        if capacity < 2 * segment_bytes:
            raise ValueError("outbox capacity must hold at least two segments")
        self.path = path
        self.capacity = capacity
        self.segment_bytes = segment_bytes
        self.rtc = rtc
        self.reserve = reserve
        # persisted in the state file
        self.acked = 0  # every seq <= acked was confirmed by the uplink
        self.floor = 0  # every seq <= floor is gone (acked or dropped)
        self.drops = 0  # readings dropped unconfirmed because the outbox was full
        self.corrupt = 0  # damaged records skipped at recovery
        self.discarded = 0  # files discarded: another version, foreign, unreadable
        self.seq_limit = 0  # seqs below this may have been handed out
        self.refused = 0  # readings refused since this open: no number left (MAX_SEQ)
        self.rtc_lost = False  # the RTC buffer was lost (power cut) before this boot
        self.segs = []  # [segno, first_seq, last_seq, live_count, nbytes], oldest first
        self.buf = []  # RTC fast path: [(seq, t, payload)], newer than any segment
        self.next_seq = 1
        self._recover()

    # ------------------------------------------------------------ public
    def start_at(self, seq):
        """A new outbox (nothing ever appended) numbers its readings from seq:
        readings are known downstream by their numbers, so a node whose flash
        was erased must not hand out the numbers of its earlier readings again.
        Does nothing once a number was handed out."""
        if (self.next_seq != 1 or self.acked or self.floor or self.segs or self.buf or seq <= 1
                or seq > MAX_SEQ):
            return
        self.acked = self.floor = seq - 1  # "everything below is gone": kept through any recovery
        try:
            self._save_state()
        except OSError as e:  # flash failing: numbered from 1 as before, tried again next boot
            self.acked = self.floor = 0
            log.warn("outbox", "numbering from 1: state not written: %s", e)
            return
        self.next_seq = seq

    def append(self, payload, t):
        """Accept one reading; returns its sequence number. Raises Exhausted
        (an OSError) past MAX_SEQ, OSError when the flash refuses: either way
        the reading is not kept and nothing kept before is touched."""
        if len(payload) > 255:
            raise ValueError("outbox payload over 255 bytes")
        if t < 0 or t > U32:
            raise ValueError("outbox timestamp out of u32 range")
        seq = self.next_seq
        if seq > MAX_SEQ:
            self.refused += 1
            raise Exhausted("outbox: no sequence number left, reading refused")
        if self.rtc is None:
            self._write([encode(seq, t, payload)], seq, seq)
            self.next_seq = seq + 1
            return seq
        if seq >= self.seq_limit:
            limit = min(seq + self.reserve, U32)  # > seq, as seq <= MAX_SEQ
            self._save_state(limit)  # reserved on flash before any of them leaves
            self.seq_limit = limit
        if self._rtc_bytes() + REC_OVERHEAD + len(payload) > self.rtc.size - rtcmem.OVERHEAD:
            self.flush()  # raises if flash fails: this reading is refused, none is lost
        self.buf.append((seq, t, bytes(payload)))
        self.next_seq = seq + 1
        self._save_rtc()
        return seq

    def flush(self):
        """Move the RTC-buffered readings to flash: done when the region is full,
        or when the node is about to risk its power (low battery, update).
        On a flash error they stay in RTC memory and OSError is raised."""
        if not self.buf:
            return
        self._write([encode(s, t, p) for s, t, p in self.buf], self.buf[0][0], self.buf[-1][0])
        self.buf = []
        self._save_rtc()

    def peek(self, max_records=50, max_bytes=None):
        """Oldest unconfirmed readings: [(seq, t, payload)]."""
        out = []
        size = 0
        for seg in self.segs:
            for seq, t, payload, _ in decode(self._read(seg[0]), len(SEG_HEADER)):
                if seq is None or seq <= self.floor:
                    continue
                if len(out) >= max_records or (max_bytes and size + len(payload) > max_bytes):
                    return out
                out.append((seq, t, payload))
                size += len(payload)
        for rec in self.buf:
            if len(out) >= max_records or (max_bytes and size + len(rec[2]) > max_bytes):
                break
            out.append(rec)
            size += len(rec[2])
        return out

    def ack(self, upto):
        """The uplink confirmed every reading up to seq `upto`: forget them."""
        upto = min(upto, self.next_seq - 1)
        if upto <= self.acked:
            return
        on_flash = bool(self.segs)
        self.acked = upto
        self.floor = max(self.floor, upto)
        if on_flash:
            self._save_state()  # before deleting: an acked record never comes back
            while self.segs and self.segs[0][2] <= upto:
                self._remove(self.segs.pop(0)[0])
            if self.segs:
                self._recount(self.segs[0])
        if self.buf and self.buf[0][0] <= upto:
            self.buf = [r for r in self.buf if r[0] > upto]
            self._save_rtc()

    def __len__(self):
        return sum(s[3] for s in self.segs) + len(self.buf)

    def stats(self):
        return {"depth": len(self), "drops": self.drops, "corrupt": self.corrupt,
                "discarded": self.discarded, "next_seq": self.next_seq, "refused": self.refused,
                "flash_bytes": sum(s[4] for s in self.segs), "rtc": len(self.buf)}

    # ------------------------------------------------------------ flash
    def _seg_path(self, segno):
        return "%s/%08d.q" % (self.path, segno)

    def _read(self, segno):
        with open(self._seg_path(segno), "rb") as f:
            return f.read()

    def _remove(self, segno):
        try:
            os.remove(self._seg_path(segno))
        except OSError:
            pass

    def _recount(self, seg):
        live = 0
        for seq, _, _, _ in decode(self._read(seg[0]), len(SEG_HEADER)):
            if seq is not None and seq > self.floor:
                live += 1
        seg[3] = live

    def _write(self, records, first, last):
        """Append encoded records to the newest segment, making room first."""
        size = 0
        for r in records:
            size += len(r)
        total = sum(s[4] for s in self.segs)
        while self.segs and total + size > self.capacity:
            old = self.segs[0]
            if len(self.segs) == 1 and old[4] < self.segment_bytes:
                break  # never drop the segment being filled
            self.drops = _sat(self.drops + old[3])
            self.floor = max(self.floor, old[2])
            self._save_state()  # before removing: dropped records never come back
            self._remove(old[0])
            total -= old[4]
            self.segs.pop(0)
            log.warn("outbox", "full dropped=%d total_drops=%d", old[3], self.drops)
        seg = self.segs[-1] if self.segs else None
        if seg is None or seg[4] >= self.segment_bytes:
            if self._next_segno > SEGNO_MAX:
                self._renumber()
            segno = self._next_segno
            with open(self._seg_path(segno), "wb") as f:
                f.write(SEG_HEADER + b"".join(records))
            self._next_segno = segno + 1
            seg = [segno, first, last, 0, len(SEG_HEADER)]
            self.segs.append(seg)
        else:
            with open(self._seg_path(seg[0]), "ab") as f:
                f.write(b"".join(records))
        seg[2] = last
        seg[3] += len(records)
        seg[4] += size

    def _renumber(self):
        """Segments as 1, 2, ... in their order, so the next name has 8 digits.
        Each name only goes down and stays above the ones already renamed: a
        power cut in the middle leaves them in order."""
        n = 0
        for seg in self.segs:
            n += 1
            if seg[0] != n:
                os.rename(self._seg_path(seg[0]), self._seg_path(n))
                seg[0] = n
        self._next_segno = n + 1
        log.warn("outbox", "segment files renumbered from 1")

    def _save_state(self, seq_limit=None):
        if seq_limit is None:
            seq_limit = self.seq_limit
        body = STATE_MAGIC + struct.pack(_STATE_FMT, self.acked, self.floor, self.drops,
                                         self.corrupt, self.discarded, seq_limit)
        tmp = self.path + "/state.tmp"
        with open(tmp, "wb") as f:
            f.write(body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))
        os.rename(tmp, self.path + "/state")

    def _load_state(self):
        try:
            with open(self.path + "/state", "rb") as f:
                raw = f.read()
        except OSError:
            return "missing"
        if (len(raw) != _STATE_LEN or raw[:3] != STATE_MAGIC
                or struct.unpack("<I", raw[-4:])[0] != crc32(raw[:-4]) & 0xFFFFFFFF):
            return "bad"
        (self.acked, self.floor, self.drops, self.corrupt, self.discarded,
         self.seq_limit) = struct.unpack(_STATE_FMT, raw[3:-4])
        return "ok"

    # ------------------------------------------------------------ RTC
    def _rtc_bytes(self):
        n = 4
        for r in self.buf:
            n += REC_OVERHEAD + len(r[2])
        return n

    def _save_rtc(self):
        if self.rtc is not None:
            # next_seq is 2**32 only after a crafted record of 2**32 - 1: as
            # U32 it still recovers as 2**32 (above the records and the floor)
            self.rtc.save(struct.pack(_RTC_FMT, min(self.next_seq, U32))
                          + b"".join([encode(s, t, p) for s, t, p in self.buf]))

    # ------------------------------------------------------------ recovery
    def _recover(self):
        try:
            os.mkdir(self.path)
        except OSError:
            pass
        why = self._load_state()
        if why == "bad":
            self.discarded = _sat(self.discarded + 1)
            log.warn("outbox", "state file damaged, starting from the segments")
        elif why == "ok" and self.acked > self.floor:
            # never written (ack raises floor with acked): ack would compare
            # with acked and peek with floor, so acked readings came back at
            # every wake. floor says what is gone; what lies above it is
            # delivered, once more at worst, and then acked for good
            self.corrupt = _sat(self.corrupt + 1)
            log.warn("outbox", "state damaged: acked %d above floor %d, acked lowered", self.acked, self.floor)
            self.acked = self.floor
            why = "damaged"
        names = []
        dirty = False
        for name in os.listdir(self.path):
            if name in ("state", "state.tmp"):
                continue
            if len(name) == 10 and name.endswith(".q") and name[:8].isdigit():
                names.append(int(name[:8]))
            else:
                self._discard(self.path + "/" + name, "foreign file")
                dirty = True  # the count is kept
        names.sort()
        self._next_segno = (names[-1] + 1) if names else 1
        last = self.floor
        for segno in names:
            last, d = self._recover_segment(segno, last)
            dirty = dirty or d
        self._recover_rtc(last)
        if dirty or why != "ok" or _exists(self.path + "/state.tmp"):
            self._save_state()

    def _discard(self, path, why):
        self.discarded = _sat(self.discarded + 1)
        log.warn("outbox", "discarded file=%s why=%s", path, why)
        try:
            os.remove(path)
        except OSError:
            pass

    def _recover_segment(self, segno, last):
        """Index one segment; returns (last seq kept, state changed)."""
        path = self._seg_path(segno)
        try:
            data = self._read(segno)
        except OSError:
            self._discard(path, "unreadable")
            return last, True
        if not data:  # created when the power went: nothing was ever in it
            self._remove(segno)
            return last, False
        if data[:4] != SEG_HEADER:
            self._discard(path, "not a version %d segment" % VERSION)
            return last, True
        good = []
        damaged = 0  # torn or corrupted stretches, and records out of order
        first = None
        top = last
        for seq, t, payload, _end in decode(data, 4):
            if seq is None:
                damaged += 1
                continue
            if seq <= top:
                # at or below the floor: acked or dropped, peek skips it too.
                # Above it: a number at or below one kept before it (in this
                # segment or an earlier one), which the outbox never writes:
                # peek would return it out of order, so it is damage
                if seq > self.floor:
                    damaged += 1
                continue
            good.append(encode(seq, t, payload))
            if first is None:
                first = seq
            top = seq
        if damaged:
            self.corrupt = _sat(self.corrupt + damaged)
            log.warn("outbox", "skipped damaged records=%d file=%08d.q kept=%d", damaged, segno, len(good))
        if not good:
            self._remove(segno)
            return last, damaged > 0
        body = SEG_HEADER + b"".join(good)
        if damaged:  # rewrite without the damage: counted once, and peek reads what recovery kept
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(body)
            os.rename(tmp, path)
        self.segs.append([segno, first, top, len(good), len(body)])
        return top, damaged > 0

    def _recover_rtc(self, last):
        if self.rtc is None:
            self.next_seq = max(last, self.acked, self.floor, self.seq_limit - 1) + 1
            return
        payload, why = self.rtc.load()
        rtc_next = 0
        if payload is not None and len(payload) >= 4:
            rtc_next = struct.unpack(_RTC_FMT, payload[:4])[0]
            for seq, t, p, _ in decode(payload, 4):
                if seq is not None and seq > last and seq > self.floor:
                    self.buf.append((seq, t, p))
                    last = seq
        elif why != "empty" or self.seq_limit:
            # RTC lost (power cut) or damaged: what it held is gone
            self.rtc_lost = True
            log.warn("outbox", "rtc buffer lost why=%s seq_from=%d", why, self.seq_limit)
        if rtc_next:
            self.next_seq = max(rtc_next, last + 1, self.floor + 1)
        else:
            self.next_seq = max(last + 1, self.floor + 1, self.seq_limit)
