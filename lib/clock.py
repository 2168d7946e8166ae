"""Wall-clock time a node can trust, and for every reading a date that is
right or none at all.

After a power loss the ESP32's RTC restarts at 2000-01-01, and NTP is not
authenticated: a time below the firmware's build time, or below the last
known-good time, is never believed. Until the clock is known, readings are
stamped with the RTC's seconds since power-on (below RELATIVE = 2**28).

Such a stamp means something only on the RTC timeline of its own power-on.
So the node keeps on flash (with the last known-good time) a short history
of its power-ons, the last HISTORY: for each, the outbox sequence number of
its first reading (begin(), at the first wake of a power-on whose clock is
unknown: one small write) and, once NTP set the clock in that power-on, its
offset unix - RTC (one more write, at that sync). senml_time(stamp, seq)
then gives a reading (seq: its outbox sequence number, None: this power-on):

  - a stamp taken while the clock was known: that Unix time;
  - a relative stamp of this power-on, the clock now known: dated on the node
    with this power-on's offset (readings stamped before the sync included);
  - a relative stamp of this power-on, the clock still unknown: minus its age
    in seconds (<= 0, SenML relative time: a reader adds its receive time,
    off by the delivery delay);
  - a relative stamp of an earlier power-on that learnt its offset: dated
    with that offset;
  - anything else (an earlier power-on that never learnt the wall clock, one
    older than the history, a stamp that cannot be of this timeline): None,
    undated. Never a date made with another power-on's offset.

A date made from an offset is as good as the RTC between the stamp and the
sync (the sleep clock's drift over that time).

NTP is bounded (sync): an answer below the floor or beyond build time + 30
years is refused; once the clock is known (the RTC has run since the last
sync, which is the floor) the answer must also agree with what the RTC says
has elapsed since then: within DRIFT_LEARNT_PPM of that time around the
drift-corrected RTC when the drift is learnt (pass ppm), else within
DRIFT_UNKNOWN_PPM of it around the raw RTC, plus SLACK_S either way. After a
power-on the RTC restarted and there is nothing to compare: only the floor,
the 30 years and the second answer (a step over a day needs two agreeing
answers) hold then. Every refusal is logged and counted in `refused`.

    clk = Clock(build_unix=1764000000, store=rtcmem.Region(rtc, 1280, 64), path="data/clock")
    clk.begin(outbox.next_seq)      # every wake, once the outbox is open
    t = clk.stamp()                 # for the outbox: unix seconds, or relative
    clk.sync(ntptime.time, ppm)     # when the link is up (ppm: the learnt drift, or None)
    clk.senml_time(t, seq)          # unix seconds, -age, or None (undated)
    unix_ms()                       # the RTC's time now, in Unix milliseconds
"""

import struct
import time
from binascii import crc32

import eventlog as log

# Seconds between the port's epoch and 1970 (the ESP32 counts from 2000).
EPOCH_TO_UNIX = 0 if time.gmtime(0)[0] == 1970 else 946684800
RELATIVE = 1 << 28  # SenML: times below this are relative to "now"
MAX_AHEAD = 30 * 365 * 86400  # beyond build time + 30 years: a broken or forged answer
BIG_STEP = 86400  # a step larger than this needs a second, agreeing answer
AGREE = 5  # seconds two answers may differ
# how far an answer may be from what the RTC says, per second elapsed since
# the last sync: a learnt drift's error (app.schedule takes a measurement
# further than 5000 ppm from its estimate for a new oscillator) and, when none
# is learnt, the largest error app.schedule takes for drift at all (10 %: the
# RC sleep clock is off by a few percent; a tighter bound would refuse a
# node's true time at every sync after the first, for good)
DRIFT_LEARNT_PPM = 5000
DRIFT_UNKNOWN_PPM = 100000
SLACK_S = 5  # on top: NTP and the RTC count whole seconds, plus the round trip
HISTORY = 4  # power-ons kept on flash: older relative stamps are undated
U32 = 0xFFFFFFFF
# floor, offset, has offset, first seq of this power-on (0: none), on flash.
# The offset (unix - RTC, > EPOCH_TO_UNIX when set) is unsigned: as "i" it
# would overflow in 2038; the bytes of an earlier "i" read the same.
_RTC = "<IIBIBiI"  # ... and the authenticated time's uncertainty (s, -1 none) and when it came
_RTC_OLD = "<IIBIB"  # before the authenticated time: read as "none yet"


def unix_ms():
    """The RTC's time now in Unix milliseconds (known or not: see Clock.known)."""
    return time.time_ns() // 1000000 + EPOCH_TO_UNIX * 1000


def _load(path):
    """The flash file -> (last known-good time, [[first seq, offset or None]]
    oldest first); (0, []) when absent or damaged."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return 0, []
    if len(raw) == 8:  # the format before the history: the time alone
        good = struct.unpack("<I", raw[:4])[0]
        return (good, []) if struct.unpack("<I", raw[4:])[0] == good ^ 0x5A5A5A5A else (0, [])
    if len(raw) < 9 or struct.unpack("<I", raw[-4:])[0] != crc32(raw[:-4]) & 0xFFFFFFFF:
        return 0, []
    good, n = struct.unpack("<IB", raw[:5])
    if len(raw) != 9 + 9 * n:
        return 0, []
    ons = []
    for i in range(n):
        first, off, has = struct.unpack("<IIB", raw[5 + 9 * i:14 + 9 * i])
        ons.append([first, off if has else None])
    return good, ons


def _shown(t):
    """An out-of-range answer for the log: a huge int is not printed whole."""
    return "%d" % t if -(1 << 63) < t < (1 << 63) else "(beyond 64 bits)"


class Clock:
    def __init__(self, build_unix, store=None, path=None):
        self.build = build_unix
        self.floor = build_unix  # never believe a time below this
        self.store = store  # rtcmem.Region: this power-on's part
        self.path = path  # file keeping the known-good time and power-ons through power loss
        self.offset = None  # unix - RTC seconds, measured when this power-on's clock became known
        self.first = 0  # outbox seq of this power-on's first reading (0: not recorded)
        self.kept = True  # this power-on's first seq and offset are on flash
        self.saved = 0
        self.refused = 0  # NTP answers refused by this Clock (sync)
        self.unc = -1  # s either side of the last authenticated time (trusted); -1: none this power-on
        self.trusted_at = 0  # Unix s when it came
        self.earlier = []  # earlier power-ons from flash: [[first seq, offset or None]], oldest first
        if path is not None:
            self.saved, self.earlier = _load(path)
            self.floor = self._kept_floor(self.saved)
        if store is not None:
            payload, _ = store.load()
            if payload is not None and len(payload) == struct.calcsize(_RTC):
                good, off, has_off, self.first, kept, self.unc, self.trusted_at = struct.unpack(_RTC, payload)
            elif payload is not None and len(payload) == struct.calcsize(_RTC_OLD):
                good, off, has_off, self.first, kept = struct.unpack(_RTC_OLD, payload)
            if payload is not None and len(payload) in (struct.calcsize(_RTC), struct.calcsize(_RTC_OLD)):
                self.floor = self._kept_floor(good)
                self.offset = off if has_off else None
                self.kept = bool(kept)
        if self.first:  # this power-on's own entry is not an earlier one
            self.earlier = [p for p in self.earlier if p[0] < self.first]

    def _kept_floor(self, good):
        """A known-good time read back: one beyond build time + 30 years was
        never set by sync (crafted, or forged before the bound): believed, it
        would refuse every true answer for good."""
        if good > self.build + MAX_AHEAD:
            log.error("clock", "kept time %d beyond build time + 30 years: ignored", good)
            return self.floor
        return max(self.floor, good)

    def unix(self):
        return time.time() + EPOCH_TO_UNIX

    def known(self):
        return self.unix() >= self.floor

    def stamp(self):
        """Now, for a record: unix seconds when the clock is known, else the
        RTC's seconds since power-on (relative)."""
        if self.known():
            return self.unix()
        return min(time.time(), RELATIVE - 1)

    def begin(self, next_seq):
        """Every wake, before a reading is stamped: in a power-on whose clock
        is unknown, its readings start at next_seq (the outbox's next
        sequence number), recorded on flash once. A write that failed is
        tried again at the next wake."""
        if not self.first and not self.known():
            self.first = min(next_seq, U32)  # an outbox past its numbers has 2**32
            self.offset = None
            # numbers at or above next_seq are this power-on's (an outbox
            # that started again reuses none of an old entry's)
            self.earlier = [p for p in self.earlier if p[0] < next_seq][1 - HISTORY:]
            self.kept = False
        if not self.kept:
            self._save()

    def sync(self, ntp_time, ppm=None):
        """Set the RTC from ntp_time() (seconds in the port's epoch, as ntptime.time
        returns). Returns True when the clock is now known. Refused, logged
        and counted in `refused`: a time below the floor, beyond build time +
        30 years, one that does not agree with the time the RTC says has
        elapsed since the last sync (when it ran since: the module's
        docstring; ppm: the learnt drift of the sleep clock, + = the RTC falls
        behind; None or 0: not learnt), and a step of more than a day that a
        second answer does not confirm (one forged reply must not move the
        clock, nor the floor, for good), and an answer that is not an int
        (a float, inf, NaN: each answer is checked against every bound
        before it is used). Raises only the OSError from NTP."""
        t, why = self._answer(ntp_time())
        if why:
            return self._refuse(why)
        if self.known():
            why = self._off_drift(t, ppm)
            if why:
                return self._refuse(why)
        if not self.known() or abs(t - self.unix()) > BIG_STEP:
            t2, why = self._answer(ntp_time())  # the same bounds: it is the one set
            if why:
                return self._refuse(why)
            if abs(t2 - t) > AGREE:
                return self._refuse("ntp answers disagree (%d, %d): clock left as it was" % (t, t2))
            t = t2
        before = time.time()  # RTC seconds in the old timeline
        import machine

        tm = time.gmtime(t - EPOCH_TO_UNIX)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))
        if before + EPOCH_TO_UNIX < self.floor:
            self.offset = t - before  # dates this power-on's relative stamps
            self.kept = not self.first  # and goes to flash with its first seq
        self.floor = t
        self._save()
        log.info("clock", "set unix=%d", t)
        return True

    def _answer(self, raw):
        """One NTP answer (port epoch) -> (Unix seconds, None), or (None, why
        it is refused). Anything but an int is refused before any comparison:
        ntptime gives an int, and a NaN passes every bound (each comparison
        is False) while inf or NaN cannot be formatted or dated."""
        if not isinstance(raw, int) or isinstance(raw, bool):
            return None, "ntp answer refused: not an integer"
        t = raw + EPOCH_TO_UNIX
        if t < self.floor:
            return None, "ntp time %s refused: below floor %d" % (_shown(t), self.floor)
        if t > self.build + MAX_AHEAD:
            return None, "ntp time %s refused: beyond build time + 30 years" % _shown(t)
        return t, None

    def _off_drift(self, t, ppm):
        """Why t cannot be now by the RTC, which has run since the last sync
        (the floor); None when it can."""
        now = self.unix()
        elapsed = now - self.floor
        expect = now + elapsed * ppm // 1000000 if ppm else now
        bound = elapsed * (DRIFT_LEARNT_PPM if ppm else DRIFT_UNKNOWN_PPM) // 1000000 + SLACK_S
        if self.unc > 0:  # the authenticated time's own width: NTP may refine within it
            bound += self.unc
        if abs(t - expect) <= bound:
            return None
        return "ntp time %d refused: %+d s from the RTC's %d after %d s, beyond %d s of drift" % (
            t, t - expect, expect, elapsed, bound)

    def trusted(self, lo, hi):
        """An authenticated time (the fleet side's clock, app.mailbox): the
        true time now is in [lo, hi], Unix ms. The stronger source: the RTC
        is set to the middle when it is outside (a forged NTP answer that
        moved it is undone, and this power-on's offset with it), the floor
        goes to lo even when that lowers it (a forged floor on flash would
        refuse true time for good), and NTP is held to it from then on
        (sync: the interval's half-width on top of the drift bound). ->
        whether it was taken (an interval beyond the bounds NTP gets is not)."""
        if not isinstance(lo, int) or not isinstance(hi, int) or hi < lo \
                or lo // 1000 < self.build or hi // 1000 > self.build + MAX_AHEAD:
            log.error("clock", "authenticated time refused: outside build time .. + 30 years")
            return False
        half = (hi - lo) // 2
        now = unix_ms()
        if not lo - SLACK_S * 1000 <= now <= hi + SLACK_S * 1000:
            t = (lo + half) // 1000
            before = time.time()
            import machine

            tm = time.gmtime(t - EPOCH_TO_UNIX)
            machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))
            if before + EPOCH_TO_UNIX < self.floor:  # unknown until now: dates this power-on's stamps
                self.offset = t - before
            elif self.offset is not None:  # set in this power-on by an answer now undone
                self.offset += t - before - EPOCH_TO_UNIX
            log.warn("clock", "set by authenticated time unix=%d, RTC was %+d s off", t,
                     t - before - EPOCH_TO_UNIX)
        self.kept = not self.first if self.offset is not None else self.kept
        if lo // 1000 < self.saved:  # a floor on flash above the true time: rewritten now
            self.kept = False
        self.floor = lo // 1000
        self.unc = half // 1000 + 1
        self.trusted_at = self.unix()
        self._save()
        return True

    def _refuse(self, why):
        self.refused += 1
        log.warn("clock", "%s", why)
        return self.known()

    def senml_time(self, stamp, seq=None):
        """A stored stamp as SenML time: Unix seconds, minus the age in
        seconds (<= 0, relative to now), or None when it cannot be dated
        (the cases in the module's docstring). seq: the reading's outbox
        sequence number; None: taken in this power-on."""
        if stamp >= RELATIVE:
            return stamp
        if seq is None or self.first and seq >= self.first:
            if self.offset is not None:
                return stamp + self.offset
            age = time.time() - stamp
            return -age if age >= 0 and not self.known() else None
        off = None
        for first, o in self.earlier:  # the last power-on that began at or before seq
            if first <= seq:
                off = o
        return None if off is None else stamp + off

    def _save(self):
        """RTC memory always; the flash file when this power-on's entry
        changed or the known-good time moved by a day (flash: rarely)."""
        if self.path is not None and (not self.kept or self.floor - self.saved >= 86400):
            ons = self.earlier + [[self.first, self.offset]] if self.first else self.earlier
            body = struct.pack("<IB", self.floor, len(ons))
            for first, off in ons:
                body += struct.pack("<IIB", first, off or 0, 0 if off is None else 1)
            try:
                with open(self.path + ".tmp", "wb") as f:
                    f.write(body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))
                import os

                os.rename(self.path + ".tmp", self.path)
                self.saved = self.floor
                self.kept = True
            except OSError as e:  # tried again at the next wake (begin)
                log.error("clock", "%s not written: %s", self.path, e)
        if self.store is not None:
            has = self.offset is not None
            self.store.save(struct.pack(_RTC, self.floor, self.offset if has else 0, 1 if has else 0,
                                        self.first, 1 if self.kept else 0, self.unc, self.trusted_at))
