"""One wake of a node: battery, sample, filter, keep, maybe send, sleep.

    restore state (RTC) -> battery policy -> sensors (rail on, read, rail off)
    -> filter chains -> outbox -> uplink when due (batch full, alarm, pin wake)
    -> next wake on the grid -> save state -> deep sleep

Everything here is bounded: the sensors by their drivers' timeouts, the
network by its budget, the whole wake by the watchdog armed in ladder.run().
"""

import struct
import time

import machine

import clock
import eventlog as log
import filters
import outbox
import rtcmem
import uplink

from app import config, health, session, state, stores
from app.hardware import quantity
from app.schedule import Schedule

POWER_NAMES = ("ok", "low", "critical")
READING_MIN = -filters.VALUE_LIMIT - 1  # a reading is a signed 32-bit int (uplink.pack_reading)
TIME_WAIT_MS = 1500  # for the fleet side's clock, in the session that asked (a LAN round trip + the collector)
TIME_WAITS = 1  # a wait that came to nothing (no time service): not again this power-on


def _now_ms():
    """Milliseconds on the RTC, which runs through deep sleep (the filters'
    time, wrapping at 2**30 as they expect)."""
    return (time.time_ns() // 1000000) & 0x3FFFFFFF


class Wake:
    def __init__(self, st, cfg, hw, cause, wake, t0):
        self.st = st  # app.state.State: what RTC memory keeps across sleeps
        self.cfg = cfg  # app.config.Config
        self.hw = hw  # app.hardware.Hardware
        self.cause = cause  # why the chip booted: "deepsleep", "poweron", ...
        self.wake = wake  # what woke it: "timer", "ext0", ...
        self.t0 = t0  # ticks_ms at the start of ladder.run()
        self.rtc = machine.RTC()
        self.clk = None  # the node's stores (app.stores), made by run()
        self.ob = None
        self.counter = None
        self.sched = None  # app.schedule.Schedule: the next slot of the grid
        self.chains = [c.chain for c in cfg.channels]  # built once, by config.check
        self.readings = 0  # readings kept this wake
        self.uplink = "-"  # what the uplink did: "-", "ok", "partial", "backoff", a failure
        # the uplink attempt's outcome (None: none made), for the ladder to
        # judge a trial by once the whole wake is done (appslot, app.fwupdate)
        self.trial_uplink = None

    # ------------------------------------------------------------ pieces
    def _open_stores(self):
        node = stores.make(self.rtc)
        self.clk, self.counter, self.ob = node.clk, node.counter, node.ob
        if self.ob.rtc_lost:
            self.st.bump("lost_rtc")

    def _restore_chains(self):
        """The chains' state from the last wake, kept only for the same
        channel configuration."""
        data, _ = rtcmem.Region(self.rtc, *state.FILTERS).load()
        if data is None or len(data) < 4 or struct.unpack("<I", data[:4])[0] != self.cfg.channels_crc:
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
        out = bytearray(struct.pack("<I", self.cfg.channels_crc))
        for ch in self.chains:
            snap = ch.snapshot()
            out.append(len(snap))
            out += snap
        region = rtcmem.Region(self.rtc, *state.FILTERS)
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
        return 2 if mv < p.critical_mv else 1 if mv < p.low_mv else 0

    def _read_sensors(self):
        """Every wired sensor once, rail on only while reading. -> {quantity: raw}"""
        needed = []
        for c in self.cfg.channels:
            s = c.sensor.split(".")[0]
            if s not in needed:
                needed.append(s)
        values = {}
        self.hw.rails(True)
        try:
            for s in needed:
                try:
                    values.update(self.hw.read(s))
                except Exception as e:  # counted per channel as "nan" by its chain
                    log.warn("sensor", "%s failed: %s: %s", s, type(e).__name__, e)
        finally:
            self.hw.rails(False)
        return values

    def _stamp(self):
        """This wake's timestamp: Unix seconds, or seconds since power-on."""
        stamp = self.clk.stamp()
        if self.clk.known():
            # the RTC drifts between syncs (hours, in an outage): stamp with the
            # drift-corrected time, so readings keep their order across a sync
            stamp = self.sched.true_ms(clock.unix_ms()) // 1000
            # and never at or before the last wake's: a sync that steps the
            # clock back further than an interval (a drift not yet learnt)
            # would otherwise give two wakes one timestamp, and consumers keep
            # one reading per channel and time
            if stamp <= self.st.last_stamp:
                stamp = self.st.last_stamp + 1
            self.st.last_stamp = stamp
        return stamp

    def sample(self):
        """Read every wired sensor once, run each channel's chain, keep what it
        emits. -> whether an alarm changed state."""
        values = self._read_sensors()
        now = _now_ms()
        stamp = self._stamp()
        alarm = False
        shown = []
        channels = self.cfg.channels
        for i in range(len(channels)):
            c = channels[i]
            raw = values.get(c.sensor)
            v = None
            if raw is not None:
                native = quantity(c.sensor)[0]
                v = (raw * c.scale * 2 + native) // (2 * native)  # rounded to the channel's unit
            ch = self.chains[i]
            out = ch.push(v, now)
            if out is None:
                out = ch.tick(now)
            if out is not None and not (isinstance(out, int) and READING_MIN <= out <= filters.VALUE_LIMIT):
                # a driver's value beyond what a reading stores (a chain without
                # a filter that bounds it passes it on): pack_reading would raise
                # struct.error under CPython and wrap on the chip. Dropped and
                # counted as the filters count theirs (health: fdrop)
                ch.drops[filters.RANGE] += 1
                log.warn("filter", "value beyond a reading dropped channel=%s", c.name)
                out = None
            if out is not None:
                try:
                    self.ob.append(uplink.pack_reading(i, out, ch.flags), stamp)
                    self.readings += 1
                except outbox.Exhausted as e:  # no number left: refused, counted, never wrapped
                    self.st.bump("exhausted")
                    log.error("outbox", "reading refused channel=%s: %s", c.name, e)
                except OSError as e:  # the flash refused: this one is lost, counted, not the wake
                    self.st.bump("refused")
                    log.error("outbox", "reading refused channel=%s: %s", c.name, e)
            shown.append("%s=%s" % (c.name, "-" if v is None else v))
            if v is not None:
                alarm = self._alarms(c, v) or alarm
        log.info("sample", "%s at=%d", " ".join(shown), stamp)  # at: unix s, or s since power-on
        self.st.bump("samples")
        return alarm

    def _alarms(self, c, v):
        """Raise or clear channel c's alarms for its value v; True when one changed."""
        changed = False
        alarms = self.cfg.alarms
        for i in range(len(alarms)):
            a = alarms[i]
            if a.channel != c.name:
                continue
            bit = 1 << i
            raised = self.st.alarms & bit
            h = a.hysteresis * c.scale
            hi = a.above is not None and v > a.above * c.scale - (h if raised else 0)
            lo = a.below is not None and v < a.below * c.scale + (h if raised else 0)
            now = hi or lo
            if now and not raised:
                self.st.alarms |= bit
                log.warn("alarm", "raised channel=%s value=%d", c.name, v)
                changed = True
            elif raised and not now:
                self.st.alarms &= ~bit
                log.info("alarm", "cleared channel=%s value=%d", c.name, v)
                changed = True
        return changed

    def send(self, alarm):
        """Uplink if due: one session, driven step by step; the outcome in self.uplink."""
        st, cfg = self.st, self.cfg
        rtc_s = time.time()
        trial = self._trial()
        if trial:
            st.up_next = 0  # a trial is judged by its uplinks: no backoff puts them off
        if not session.due(st, cfg, rtc_s, alarm, self.cause == "poweron" or trial):
            self.uplink = "backoff" if st.up_next > rtc_s and (alarm or st.samples >= cfg.uplink_every) \
                else "-"
            return
        try:
            key = bytes.fromhex(cfg.secret("hmac_key"))
        except config.ConfigError as e:  # not provisioned: keep the readings, say why
            log.error("uplink", "%s: nothing can be sent", e)
            self.uplink = "no-key"
            return
        channels = [(c.name, c.unit, c.scale) for c in cfg.channels]
        enc = uplink.encoder(cfg.device_id, channels, key, self.counter, self.clk, layout=cfg.senml_layout)
        s = session.Session(cfg, self.rtc)
        try:
            if s.open():
                self._sync(s)
                if s.connect():
                    s.drain(self.ob, enc, uplink.time_kind(self.clk))
                    st.bump("rejected", enc.rejected)
                    from app import mailbox  # after the drain: its heap is not the batch's

                    wait = self._time_request()
                    rec = health.record(st, self.ob.stats(), self.cause, s.rssi, s.wifi_ms,
                                        self._filter_drops(), self.wake, cfg.sample_s,
                                        cfg.sample_s * cfg.uplink_every, mailbox.report(st), self.clk.unc)
                    try:
                        msg = health.message(rec, key, cfg.device_id, self.counter,
                                             self.clk.unix() if self.clk.known() else None)
                    except ValueError as e:  # seqcounter.Exhausted: nothing can be sealed any more
                        log.error("uplink", "health record not sealed: %s", e)
                    else:
                        if s.publish(cfg.topic + "/health", msg) and wait and not s.await_time(TIME_WAIT_MS):
                            st.bump("treq_unanswered")
                            log.warn("clock", "no authenticated time within %d ms", TIME_WAIT_MS)
                    if st.upd != 1 and st.upd != 3:  # a download in progress (0: data/update not read yet)
                        self._fetch(s)
        finally:
            s.close()
        self.uplink = s.result
        self.trial_uplink = self.uplink in ("ok", "partial")
        if trial or st.upd == 2:
            # a trial may end in a reset or a switch back (a rolled-back
            # firmware is another MicroPython build), and a download under
            # way may finish in the mailbox (a firmware's switch resets from
            # there); the next app reads RTC memory with its own code. What
            # RTC memory holds goes to flash first.
            self._flush()
        if s.inbox or st.down_busy or st.upd == 2:
            self._mailbox(s)
        if s.auth_refused:
            st.bump("auth_fails")
        if s.rssi is not None:
            st.rssi = max(-128, min(127, s.rssi))
        if self.uplink in ("ok", "partial"):
            st.up_fails = 0
            st.up_next = 0
            st.samples = 0
        else:
            session.failed(st, time.time(), self.uplink)

    def _time_request(self):
        """Ask the fleet side for its clock in this health record (treq, a
        nonce) when the clock is not backed by an authenticated time this
        power-on, or that time is a day old; a request is kept until it is
        answered or too old to be of use. -> whether to wait for the answer
        in this session: only while the clock is unknown or unbacked, and not
        after TIME_WAITS waits came to nothing (no time service: no radio
        time spent on it at every wake)."""
        st, clk = self.st, self.clk
        unbacked = not clk.known() or clk.unc < 0
        if not unbacked and clk.unix() - clk.trusted_at < 86400:
            return False
        now = clock.unix_ms()
        if not st.treq or not 0 <= now - st.treq_ms <= 3600000:
            import os

            st.treq = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF or 1
            st.treq_ms = now
        return unbacked and st.treq_unanswered < TIME_WAITS

    def _fetch(self, s):
        """The next chunks of an update's download, in this session (taken
        by the mailbox after the radio is off). st.upd_miss counts the
        fetches the broker answered since the download last advanced (the
        chunk taken resets it: app.updating.take): chunks gone from the
        broker, or a next chunk that is never the one the chain expects
        while later ones come, end in the download given up after
        FETCH_MISSES, not in radio time on it at every uplink for ever. A
        fetch skipped or never answered proves nothing and is not counted."""
        st = self.st
        try:
            from app import update

            if st.upd_miss >= update.FETCH_MISSES:
                st.upd_miss = 0
                update.abandon(st, "no progress in %d sessions" % update.FETCH_MISSES)
            topics = update.wanted(st, self.cfg)
        except Exception as e:  # noqa: BLE001  no update today; the session goes on
            log.error("update", "fetch: %s: %s", type(e).__name__, e)
            return
        if topics:
            s.fetch(topics)
            if s.fetch_acked:
                st.bump("upd_miss")

    def _trial(self):
        """-> bit 1: the app runs on trial (appslot), bit 2: the firmware
        does (app.fwupdate: only after a reset, which a firmware switch ends
        in). A trial's wake makes an uplink attempt: it is how it is judged."""
        t = 0
        try:
            import appslot

            if appslot.on_trial():
                t |= 1
        except ImportError:  # a node deployed without slots
            pass
        except Exception as e:  # noqa: BLE001  never a reason to skip the wake
            log.error("update", "appslot: %s: %s", type(e).__name__, e)
        if self.cause != "deepsleep":
            try:
                from app import fwupdate

                if fwupdate.on_trial():
                    t |= 2
            except ImportError:
                pass
            except Exception as e:  # noqa: BLE001
                log.error("update", "fwupdate: %s: %s", type(e).__name__, e)
        return t

    def _mailbox(self, s):
        """What came down in the session (app.mailbox), after the radio is
        off; a trial's uplink counted. Never ends the wake: a bug in it is
        logged, the readings are safe in the outbox already."""
        from app import mailbox

        try:
            if s.inbox or self.st.upd == 2:
                mailbox.receive(self.st, self.cfg, self.clk, s.inbox)
            mailbox.after_uplink(self.st, self.uplink in ("ok", "partial"))
        except Exception as e:  # noqa: BLE001
            log.error("down", "mailbox: %s: %s", type(e).__name__, e)

    def _sync(self, s):
        """NTP, bounded by the drift the schedule learnt; after a refused sync
        by the bound of an unknown drift, so that a node whose drift changed
        is not refused its true time for good (a forger gains at most 10 % of
        the time since the last sync: lib/clock.py). Refusals counted
        for the health record."""
        st = self.st
        ppm = self.sched.state["ppm"] if not st.ntp_streak else None
        synced = s.sync_clock(self.clk, ppm or None)
        if self.clk.refused:
            st.bump("ntp_refused", self.clk.refused)
            st.bump("ntp_streak")
        elif synced is not None:
            st.ntp_streak = 0
            if st.treq:  # a time request's moment, on the RTC's new timeline
                st.treq_ms += synced[1] - synced[0]
            step = self.sched.synced(synced[0], synced[1])
            if step is not None:
                log.info("schedule", "step_ms=%d ppm=%d", step, self.sched.state["ppm"])

    def _filter_drops(self):
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
        self._open_stores()
        if not st.ppm and not st.synced:
            st.ppm = stores.load_drift()  # RTC memory lost: the chip's drift is still on flash
        interval = cfg.sample_s if power == 0 else cfg.sample_s * cfg.power.low_stretch
        self.sched = Schedule(interval, st.schedule())
        if power == 2:
            # protect the cells: no sensors, no radio; what RTC memory holds
            # goes to flash, so a battery that dies in its sleep loses nothing
            self._flush()
            return self.sleep(cfg.power.critical_sleep_s * 1000)
        self._restore_chains()
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
        return self.sleep(None)

    def _flush(self):
        try:
            self.ob.flush()
        except OSError as e:
            log.error("outbox", "flush failed: %s", e)

    def sleep(self, ms):
        """-> the deep sleep to ask for (None: the next slot of the grid), with
        the wake summary on the log."""
        st = self.st
        if ms is None:
            ms = self.sched.sleep_ms(clock.unix_ms(), self.clk.known())
            st.keep_schedule(self.sched.state)
            stores.keep_drift(self.sched.state["ppm"])
        st.crash_streak = 0
        st.awake_ms = time.ticks_diff(time.ticks_ms(), self.t0)
        depth = len(self.ob) if self.ob is not None else 0
        log.info("wake", "cause=%s wake=%s boot=%d readings=%d queue=%d batt_mv=%d uplink=%s "
                 "awake_ms=%d sleep_ms=%d", self.cause, self.wake, st.boots, self.readings, depth,
                 st.batt_mv, self.uplink, st.awake_ms, ms)
        return ms
