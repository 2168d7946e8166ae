"""Wall-clock time a node can trust.

After a power loss the ESP32's RTC restarts at 2000-01-01, and NTP is not
authenticated: a time below the firmware's build time, or below the last
known-good time, is never believed. Until the clock is known, readings are
stamped with the RTC's seconds since power-on, below 2**28, which SenML reads
as relative time; once NTP sets the clock, the offset measured at that moment
turns those stamps into wall-clock time.

    clk = Clock(build_unix=1764000000, store=rtcmem.Region(rtc, 1280, 64))
    t = clk.stamp()                 # for the outbox: unix seconds, or relative
    clk.sync(ntptime.time)          # when the link is up and the clock is unknown
    clk.senml_time(t)               # unix seconds, or negative seconds before now
    unix_ms()                       # the RTC's time now, in Unix milliseconds
"""

import struct
import time

import eventlog as log

# Seconds between the port's epoch and 1970 (the ESP32 counts from 2000).
EPOCH_TO_UNIX = 0 if time.gmtime(0)[0] == 1970 else 946684800
RELATIVE = 1 << 28  # SenML: times below this are relative to "now"
MAX_AHEAD = 30 * 365 * 86400  # beyond build time + 30 years: a broken or forged answer
BIG_STEP = 86400  # a step larger than this needs a second, agreeing answer
AGREE = 5  # seconds two answers may differ


def unix_ms():
    """The RTC's time now in Unix milliseconds (known or not: see Clock.known)."""
    return time.time_ns() // 1000000 + EPOCH_TO_UNIX * 1000


class Clock:
    def __init__(self, build_unix, store=None, path=None):
        self.build = build_unix
        self.floor = build_unix  # never believe a time below this
        self.store = store  # rtcmem.Region: last known-good time and sync offset
        self.path = path  # file keeping the last known-good time through power loss
        self.offset = None  # unix - RTC seconds, measured at the last sync this power-on
        self.saved = 0
        if path is not None:
            try:
                with open(path, "rb") as f:
                    raw = f.read()
                if len(raw) == 8 and struct.unpack("<I", raw[4:])[0] == (struct.unpack("<I", raw[:4])[0] ^ 0x5A5A5A5A):
                    self.saved = struct.unpack("<I", raw[:4])[0]
                    self.floor = max(self.floor, self.saved)
            except OSError:
                pass
        if store is not None:
            payload, _ = store.load()
            if payload is not None and len(payload) == 9:
                good, off, has_off = struct.unpack("<IiB", payload)
                self.floor = max(self.floor, good)
                if has_off:
                    self.offset = off

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

    def sync(self, ntp_time):
        """Set the RTC from ntp_time() (seconds in the port's epoch, as ntptime.time
        returns). Returns True when the clock is now known. Refused and logged:
        a time below the floor, beyond build time + 30 years, and a step of
        more than a day that a second answer does not confirm (one forged
        reply must not move the clock, nor the floor, for good). OSError from
        NTP goes to the caller."""
        t = ntp_time() + EPOCH_TO_UNIX
        if t < self.floor:
            log.warn("clock", "ntp time %d refused: below floor %d", t, self.floor)
            return self.known()
        if t > self.build + MAX_AHEAD:
            log.warn("clock", "ntp time %d refused: beyond build time + 30 years", t)
            return self.known()
        if not self.known() or abs(t - self.unix()) > BIG_STEP:
            t2 = ntp_time() + EPOCH_TO_UNIX
            if abs(t2 - t) > AGREE:
                log.warn("clock", "ntp answers disagree (%d, %d): clock left as it was", t, t2)
                return self.known()
            t = t2
        before = time.time()  # RTC seconds in the old timeline
        import machine

        tm = time.gmtime(t - EPOCH_TO_UNIX)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))
        if before + EPOCH_TO_UNIX < self.floor:
            self.offset = t - before  # turns earlier relative stamps into unix time
        self.floor = t
        self._save()
        log.info("clock", "set unix=%d", t)
        return True

    def senml_time(self, stamp):
        """A stored stamp as SenML time: unix seconds, or negative seconds
        relative to now when it was taken before the clock was known."""
        if stamp >= RELATIVE:
            return stamp
        if self.offset is not None:
            return stamp + self.offset
        return stamp - time.time()

    def _save(self):
        if self.path is not None and self.floor - self.saved >= 86400:  # flash: once a day at most
            with open(self.path + ".tmp", "wb") as f:
                f.write(struct.pack("<II", self.floor, self.floor ^ 0x5A5A5A5A))
            import os

            os.rename(self.path + ".tmp", self.path)
            self.saved = self.floor
        if self.store is not None:
            has = self.offset is not None
            self.store.save(struct.pack("<IiB", self.floor, self.offset if has else 0, 1 if has else 0))
