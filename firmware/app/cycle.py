"""One wake of a node: battery, sample, filter, keep, maybe send, sleep.

    restore state (RTC) -> battery policy -> sensors (rail on, read, rail off)
    -> filter chains -> outbox -> uplink when due (batch full, alarm, pin wake)
    -> next wake on the grid -> save state -> deep sleep

Everything here is bounded: the sensors by their drivers' timeouts, the
network by its budget, the whole wake by the watchdog armed in app.run().
"""

import os
import struct
import time
from binascii import crc32

import machine

import clock as _clock
import eventlog as log
import filters
import outbox as _outbox
import rtcmem
import seqcounter
import uplink

from app import config, health, session, version
from app import state as _state
from app.schedule import Schedule

# The node's data files live in one folder (a folder named like a module at
# the root would shadow the module: / is on sys.path)
DATA = "data"
OUTBOX_PATH = DATA + "/outbox"
SEQ_PATH = DATA + "/seq"
CLOCK_PATH = DATA + "/clock"
DRIFT_PATH = DATA + "/drift"
DRIFT_STEP = 1000  # ppm: rewrite the kept drift only when it moved this much
POWER_NAMES = ("ok", "low", "critical")


def load_drift():
    """The sleep clock's drift kept on flash (ppm), 0 when unknown."""
    try:
        with open(DRIFT_PATH) as f:
            v = int(f.read())
        return v if -100000 < v < 100000 else 0
    except (OSError, ValueError):
        return 0


def _now_ms():
    """Milliseconds on the RTC, which runs through deep sleep (the filters'
    time, wrapping at 2**30 as they expect)."""
    return (time.time_ns() // 1000000) & 0x3FFFFFFF


def unix_ms():
    return time.time_ns() // 1000000 + _clock.EPOCH_TO_UNIX * 1000


class Wake:
    def __init__(self, st, cfg, hw, cause, wake, t0):
        self.st = st
        self.cfg = cfg
        self.hw = hw
        self.cause = cause
        self.wake = wake  # "timer", "ext0", ...
        self.t0 = t0  # ticks_ms at the start of app.run()
        self.rtc = machine.RTC()
        self.readings = 0
        self.uplink = "-"
        self.session = None
        self.ob = None
        self.chains = []

    # ------------------------------------------------------------ pieces
    def _open_store(self):
        cfg = self.cfg
        try:
            os.mkdir(DATA)
        except OSError:
            pass  # there already
        self.clk = _clock.Clock(version.BUILD_UNIX, rtcmem.Region(self.rtc, *_state.CLOCK),
                                CLOCK_PATH)
        self.ob = _outbox.Outbox(OUTBOX_PATH, rtc=rtcmem.Region(self.rtc, *_state.OUTBOX))
        if self.ob.rtc_lost:
            self.st.lost_rtc = min(self.st.lost_rtc + 1, 65535)
        clk = self.clk
        self.counter = seqcounter.SeqCounter(
            SEQ_PATH, rtcmem.Region(self.rtc, *_state.SEQ), k=64,
            floor=lambda: max(1, clk.unix() - version.BUILD_UNIX) if clk.known() else 1)
        self.channels = [(c["name"], c["unit"], c["scale"]) for c in cfg.channels]

    def _chains(self):
        """The channels' filter chains, with their state from the last wake
        (kept only for the same channel configuration)."""
        cfg = self.cfg
        self.chains = [filters.build_chain(c["name"], {"scale": c["scale"], "filters": c["filters"]})
                       for c in cfg.channels]
        self.fcrc = crc32(repr(cfg.channels).encode()) & 0xFFFFFFFF
        data, _ = rtcmem.Region(self.rtc, *_state.FILTERS).load()
        if data is None or len(data) < 4 or struct.unpack("<I", data[:4])[0] != self.fcrc:
            return
        i = 4
        for ch in self.chains:
            n = data[i]
            try:
                ch.restore(data[i + 1:i + 1 + n])
            except ValueError as e:
                log.warn("filter", "%s", e)
            i += 1 + n

    def _keep_chains(self):
        out = bytearray(struct.pack("<I", self.fcrc))
        for ch in self.chains:
            snap = ch.snapshot()
            out.append(len(snap))
            out += snap
        region = rtcmem.Region(self.rtc, *_state.FILTERS)
        if len(out) + rtcmem.OVERHEAD > region.size:
            log.warn("filter", "states need %d bytes, RTC has %d: not kept", len(out), region.size)
            return
        region.save(out)

    def battery(self):
        """-> 0 ok, 1 low, 2 critical (from the battery, or ok when unknown)."""
        try:
            mv = self.hw.battery_mv()
        except Exception as e:  # a broken divider must not stop the node
            log.warn("battery", "read failed: %s", e)
            mv = None
        p = self.cfg.power
        if mv is None:
            return 0
        self.st.batt_mv = mv
        return 2 if mv < p["critical_mv"] else 1 if mv < p["low_mv"] else 0

    def sample(self):
        """Read every wired sensor once, run each channel's chain, keep what it
        emits. -> whether an alarm changed state."""
        cfg = self.cfg
        needed = []
        for c in cfg.channels:
            s = c["sensor"].split(".")[0]
            if s not in needed:
                needed.append(s)
        values = {}
        self.hw.rails(True)
        try:
            for s in needed:
                try:
                    values.update(self.hw.read(s))
                except Exception as e:  # counted per channel as "nan" below
                    log.warn("sensor", "%s failed: %s: %s", s, type(e).__name__, e)
        finally:
            self.hw.rails(False)
        now = _now_ms()
        stamp = self.clk.stamp()
        if self.clk.known():
            # the RTC drifts between syncs (hours, in an outage): stamp with the
            # drift-corrected time, so readings keep their order across a sync
            stamp = self.sched.true_ms(unix_ms()) // 1000
            # and never at or before the last wake's: a sync that steps the
            # clock back further than an interval (a drift not yet learnt)
            # would otherwise give two wakes one timestamp, and consumers keep
            # one reading per channel and time
            if stamp <= self.st.last_stamp:
                stamp = self.st.last_stamp + 1
            self.st.last_stamp = stamp
        alarm = False
        shown = []
        from app.hardware import quantity

        for i in range(len(cfg.channels)):
            c = cfg.channels[i]
            raw = values.get(c["sensor"])
            v = None
            if raw is not None:
                native = quantity(c["sensor"])[0]
                v = (raw * c["scale"] * 2 + native) // (2 * native)  # rounded to the channel's unit
            ch = self.chains[i]
            out = ch.push(v, now)
            if out is None:
                out = ch.tick(now)
            if out is not None:
                try:
                    self.ob.append(uplink.pack_reading(i, out, ch.flags), stamp)
                    self.readings += 1
                except OSError as e:  # the flash refused: this one is lost, counted, not the wake
                    self.st.refused = min(self.st.refused + 1, 65535)
                    log.error("outbox", "reading refused channel=%s: %s", c["name"], e)
            shown.append("%s=%s" % (c["name"], "-" if v is None else v))
            if v is not None:
                alarm = self._alarms(c["name"], v, c["scale"]) or alarm
        log.info("sample", "%s at=%d", " ".join(shown), stamp)  # at: unix s, or s since power-on
        self.st.samples = min(self.st.samples + 1, 65535)
        return alarm

    def _alarms(self, name, v, scale):
        """Raise or clear this channel's alarms; True when one changed."""
        changed = False
        alarms = self.cfg.alarms
        for i in range(len(alarms)):
            a = alarms[i]
            if a["channel"] != name:
                continue
            bit = 1 << i
            raised = self.st.alarms & bit
            h = a["hysteresis"] * scale
            hi = a["above"] is not None and v > a["above"] * scale - (h if raised else 0)
            lo = a["below"] is not None and v < a["below"] * scale + (h if raised else 0)
            now = hi or lo
            if now and not raised:
                self.st.alarms |= bit
                log.warn("alarm", "raised channel=%s value=%d", name, v)
                changed = True
            elif raised and not now:
                self.st.alarms &= ~bit
                log.info("alarm", "cleared channel=%s value=%d", name, v)
                changed = True
        return changed

    def send(self, alarm):
        """Uplink if due; the outcome in self.uplink."""
        st, cfg = self.st, self.cfg
        rtc_s = time.time()
        if not session.due(st, cfg, rtc_s, alarm, self.cause == "poweron"):
            self.uplink = "backoff" if st.up_next > rtc_s and (alarm or st.samples >= cfg.uplink_every) \
                else "-"
            return
        try:
            key = bytes.fromhex(cfg.secret("hmac_key"))
        except config.ConfigError as e:  # not provisioned: keep the readings, say why
            log.error("uplink", "%s: nothing can be sent", e)
            self.uplink = "no-key"
            return
        enc = uplink.encoder(cfg.device_id, self.channels, key, self.counter, self.clk)
        kid = cfg.device_id.encode()

        def health_msg(s):
            self.st.rejected = min(self.st.rejected + enc.rejected, 65535)
            enc.rejected = 0
            return health.message(health.record(self.st, self.ob.stats(), self.cause, s, self._fdrops(),
                                                self.wake),
                                  key, kid, self.counter)

        self.session = session.Session(cfg, st, session.Budget(cfg.network_budget_ms))
        self.session.run(self.ob, self.clk, self.counter, enc, health_msg, self.sched, self.rtc)
        self.uplink = self.session.result
        if self.session.rssi is not None:
            st.rssi = max(-128, min(127, self.session.rssi))
        if self.uplink in ("ok", "partial"):
            st.up_fails = 0
            st.up_next = 0
            st.samples = 0
        else:
            session.failed(st, time.time(), self.uplink)

    def _fdrops(self):
        n = 0
        for ch in self.chains:
            n += sum(ch.drops) - ch.drops[filters.OK]
        return n

    # ------------------------------------------------------------ the wake
    def run(self):
        st, cfg = self.st, self.cfg
        power = self.battery()
        if power != st.power:
            log.warn("power", "mode=%s batt_mv=%d", POWER_NAMES[power], st.batt_mv)
        st.power = power
        self._open_store()
        interval = cfg.sample_s
        if not st.ppm and not st.synced:
            st.ppm = load_drift()  # RTC memory lost: the chip's drift is still on flash
        self.sched = Schedule(interval, st.schedule())
        if power == 2:
            # protect the cells: no sensors, no radio; what RTC memory holds
            # goes to flash, so a battery that dies in its sleep loses nothing
            self._flush()
            return self.sleep(cfg.power["critical_sleep_s"] * 1000)
        self._chains()
        alarm = self.sample()
        self._keep_chains()
        if self.wake in ("ext0", "ext1"):
            log.warn("alarm", "pin wake=%s", self.wake)
            alarm = True
        if power == 0:
            self.send(alarm)
        else:
            self.uplink = "low-battery"
            self._flush()
            interval = cfg.sample_s * cfg.power["low_stretch"]
            self.sched = Schedule(interval, st.schedule())
        return self.sleep(None)

    def _flush(self):
        try:
            self.ob.flush()
        except OSError as e:
            log.error("outbox", "flush failed: %s", e)

    def _keep_drift(self):
        """The learnt drift is the chip's, not the wake's: kept on flash when
        it moved by more than DRIFT_STEP, so a power cut does not lose it."""
        ppm = self.sched.state["ppm"]
        if ppm and abs(ppm - load_drift()) > DRIFT_STEP:
            try:
                with open(DRIFT_PATH + ".tmp", "w") as f:
                    f.write("%d" % ppm)
                os.rename(DRIFT_PATH + ".tmp", DRIFT_PATH)
            except OSError as e:
                log.warn("schedule", "drift not kept: %s", e)

    def sleep(self, ms):
        """-> the deep sleep to ask for (None: the next slot of the grid), with
        the wake summary on the log."""
        st = self.st
        if ms is None:
            ms = self.sched.sleep_ms(unix_ms(), self.clk.known())
            st.keep_schedule(self.sched.state)
            self._keep_drift()
        st.crash_streak = 0
        st.awake_ms = time.ticks_diff(time.ticks_ms(), self.t0)
        depth = len(self.ob) if self.ob is not None else 0
        log.info("wake", "cause=%s wake=%s boot=%d readings=%d queue=%d batt_mv=%d uplink=%s "
                 "awake_ms=%d sleep_ms=%d", self.cause, self.wake, st.boots, self.readings, depth,
                 st.batt_mv, self.uplink, st.awake_ms, ms)
        return ms

