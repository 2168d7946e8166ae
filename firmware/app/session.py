"""One network session within a hard budget: Wi-Fi up, clock checked, MQTT
over verified TLS (or TLS-PSK), "online", the outbox drained in authenticated
batches, the health record, "sleeping", radio off.

Every step gets what is left of the budget as its deadline; when the budget
runs out the session ends where it is: confirmed readings are acknowledged,
the rest stay in the outbox for the next time. A failure backs the next
attempt off (full jitter, doubling up to an hour), so a node whose network is
gone does not spend its battery knocking on it every wake.
"""

import os
import time

import eventlog as log
import mqtt
import rtcmem
import uplink
import wifi as _wifi

from app import state as _state

BACKOFF_BASE_S = 300
BACKOFF_CAP_S = 3600
WINDOW = 4  # QoS 1 messages in flight


class Budget:
    def __init__(self, ms):
        self.t0 = time.ticks_ms()
        self.ms = ms

    def left(self):
        return self.ms - time.ticks_diff(time.ticks_ms(), self.t0)


def due(st, cfg, rtc_s, alarm, poweron=False):
    """Whether this wake should try an uplink: a full batch of samples, an
    alarm, or the first wake after power-on (the fleet learns the node is back,
    the clock is set and the wakes go back on the grid); never inside the
    backoff after a failure."""
    if cfg.broker is None or cfg.wifi is None:
        return False
    if not (alarm or poweron or st.samples >= cfg.uplink_every):
        return False
    # beyond the cap the RTC went back (power cut): do not wait on it
    return not (0 < st.up_next - rtc_s <= BACKOFF_CAP_S)


def failed(st, rtc_s, why):
    """Back off: the next attempt at random in 0..min(cap, base * 2**fails)."""
    cap = min(BACKOFF_CAP_S, BACKOFF_BASE_S << min(st.up_fails, 8))
    wait = int.from_bytes(os.urandom(2), "little") % (cap + 1)
    st.up_fails = min(st.up_fails + 1, 255)
    st.up_next = rtc_s + wait
    log.warn("uplink", "failed why=%s fails=%d next_in_s=%d", why, st.up_fails, wait)


def _tls(cfg):
    b = cfg.broker
    if b["tls"] == "psk":
        return mqtt.tls_context(psk_identity=b["psk_identity"],
                                psk_key=bytes.fromhex(cfg.secret("psk_key")))
    with open(b["ca"], "rb") as f:
        ca = f.read()
    cert = key = None
    if b["tls"] == "mtls":
        with open(b["cert"], "rb") as f:
            cert = f.read()
        with open(b["key"], "rb") as f:
            key = f.read()
    return mqtt.tls_context(ca=ca, cert=cert, key=key)


def _auth_refusal(msg):
    """The broker would not have us (TLS refused, CONNACK refused), as opposed
    to a link that failed: worth counting, it may be someone else's key."""
    return msg.startswith("tls:") or msg.startswith("refused")


class Session:
    """self.result: "ok", "partial" (budget ran out, readings left), or the
    failure ("wifi:<why>", "broker:<why>")."""

    def __init__(self, cfg, st, budget):
        self.cfg = cfg
        self.st = st
        self.budget = budget
        self.sent = 0
        self.result = None
        self.rssi = None
        self.wifi_ms = 0
        self.link = None

    def run(self, ob, clk, counter, encode, health, sched, rtc):
        """sched: the Schedule, which learns the drift at the NTP sync."""
        cfg, st = self.cfg, self.st
        w = _wifi.Wifi(cfg.wifi["ssid"], cfg.secret("wifi_psk", None),
                       rtc=rtcmem.Region(rtc, *_state.WIFI), static=True)
        self.link = w
        try:
            # leave a second of the budget for the broker: a link with no time
            # left to use it is radio time for nothing
            if not w.connect(max(0, self.budget.left() - 1000)):
                self.result = "wifi:%s" % w.why
                return
            self.wifi_ms, self.rssi = w.ms, w.rssi
            self._clock(clk, sched)
            self._mqtt(ob, clk, counter, encode, health)
        finally:
            w.off()  # never sleep with the radio on

    def _clock(self, clk, sched):
        """NTP on every session: cheap next to TLS, and each answer measures the
        sleep clock's drift since the last one (app.schedule)."""
        if self.budget.left() < 2000:
            return
        import ntptime

        before = time.time_ns() // 1000000 + clock_epoch_ms()
        try:
            ok = clk.sync(ntptime.time)
        except OSError as e:
            log.warn("clock", "ntp failed: %s", e)
            return
        if ok and sched is not None:
            after = time.time_ns() // 1000000 + clock_epoch_ms()
            step = sched.synced(before, after)
            if step is not None:
                log.info("schedule", "step_ms=%d ppm=%d", step, sched.state["ppm"])

    def _mqtt(self, ob, clk, counter, encode, health):
        cfg, st = self.cfg, self.st
        b = cfg.broker
        left = self.budget.left()
        if left < 500:
            self.result = "broker:no-budget"
            return
        c = None
        try:
            c = mqtt.MQTTClient(cfg.device_id, b["host"], b["port"], ssl_context=_tls(cfg),
                                keepalive=60, will=uplink.will(cfg.device_id),
                                timeout_ms=min(5000, left), window=WINDOW)
            c.connect()
            uplink.hello(c, cfg.device_id)
            kind = uplink.time_kind(clk)
            while len(ob):
                left = self.budget.left()
                if left < 1000:
                    break
                c.timeout_ms = min(5000, left)
                n = uplink.drain(c, ob, cfg.topic + "/up", encode, batch=cfg.batch,
                                 max_records=cfg.batch * WINDOW, kind=kind)
                self.sent += n
                if n == 0:
                    break
            if self.budget.left() > 500:
                c.publish(cfg.topic + "/health", health(self), qos=1)
            # the last waits (PUBACKs of health and "sleeping") within the budget too
            c.timeout_ms = max(200, min(5000, self.budget.left()))
            uplink.goodbye(c, cfg.device_id)
            self.result = "ok" if not len(ob) else "partial"
        except (mqtt.MQTTError, OSError, ValueError) as e:
            msg = str(e)
            if _auth_refusal(msg):
                st.auth_fails = min(st.auth_fails + 1, 65535)
            self.result = "broker:%s" % msg[:60]
            if c is not None:
                c.close()


def clock_epoch_ms():
    import clock

    return clock.EPOCH_TO_UNIX * 1000
