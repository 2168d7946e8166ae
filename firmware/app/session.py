"""One network session within a hard budget, as steps the caller takes in order:

    s = Session(cfg, rtc)                 # the budget starts now
    try:
        if s.open():                      # Wi-Fi
            synced = s.sync_clock(clk, ppm)  # NTP: (rtc_ms_before, ms_after) or None
            if s.connect():               # MQTT over verified TLS (or TLS-PSK), "online"
                s.drain(ob, encode, kind) # the outbox, in authenticated batches
                s.publish(topic, msg)     # e.g. the health record
                s.await_time(ms)          # only after a health record that asked for time
                s.fetch(topics)           # an update's next chunks (app.update.wanted)
    finally:
        s.close()                         # "sleeping", DISCONNECT, radio off
    s.result, s.sent, s.rssi, s.wifi_ms, s.auth_refused, s.inbox

The downlink mailbox (app.mailbox) costs no wake of its own and, with
nothing waiting, no round trip: the session is persistent (clean session
off, the client id the device id), so the broker keeps the node's
subscription to <topic>/down/+ (QoS 1) while it sleeps and queues what is
published there; at the next connect it sends it right after CONNACK, ahead
of the PUBACKs the session waits for anyway. Only when the broker had no
session for us (the first connect, a broker that lost it) is SUBSCRIBE sent,
pipelined with the publishes: its SUBACK comes with their PUBACKs, and the
retained copy of the newest message of each kind follows it. s.inbox holds
what came, [(topic, message, retained)], handled after the radio is off.

Every step gets what is left of the budget as its deadline; when the budget
runs out the session ends where it is: confirmed readings are acknowledged,
the rest stay in the outbox for the next time. A failure backs the next
attempt off (full jitter, doubling up to an hour), so a node whose network is
gone does not spend its battery knocking on it every wake.
"""

import os
import time

import clock
import eventlog as log
import mqtt
import rtcmem
import uplink
import wifi

from app import state

BACKOFF_BASE_S = 300
BACKOFF_CAP_S = 3600
WINDOW = 4  # QoS 1 messages in flight
FETCH_IDLE_MS = 1000  # an update's chunks: nothing more after the SUBACK for this long, none to come


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
    st.bump("up_fails")
    st.up_next = rtc_s + wait
    log.warn("uplink", "failed why=%s fails=%d next_in_s=%d", why, st.up_fails, wait)


def _tls(cfg):
    b = cfg.broker
    if b.tls == "psk":
        return mqtt.tls_context(psk_identity=b.psk_identity, psk_key=bytes.fromhex(cfg.secret("psk_key")))
    with open(b.ca, "rb") as f:
        ca = f.read()
    cert = key = None
    if b.tls == "mtls":
        with open(b.cert, "rb") as f:
            cert = f.read()
        with open(b.key, "rb") as f:
            key = f.read()
    return mqtt.tls_context(ca=ca, cert=cert, key=key)


def _auth_refusal(msg):
    """The broker would not have us (TLS refused, CONNACK refused), as opposed
    to a link that failed: worth counting, it may be someone else's key."""
    return msg.startswith("tls:") or msg.startswith("refused")


class Session:
    """result: None until a step ends the session, then "ok", "partial"
    (budget ran out, readings left), or the failure ("wifi:<why>",
    "broker:<why>"). A step that fails returns False and the later ones do
    nothing; close() always leaves the radio off."""

    def __init__(self, cfg, rtc):
        self.cfg = cfg
        self.rtc = rtc
        self.budget = Budget(cfg.network_budget_ms)
        self.result = None
        self.sent = 0  # readings the broker confirmed
        self.pending = 0  # readings left in the outbox after the drain
        self.rssi = None  # dBm, once the link is up
        self.wifi_ms = 0  # how long the link took
        self.auth_refused = False  # TLS or CONNACK refused: maybe not our key
        self.link = None
        self.client = None
        self.inbox = []  # what the broker had for us (the downlink), taken at close()
        self.subscribed = False  # SUBSCRIBE sent: the broker had no session for us
        self.fetched = None  # the chunk topics fetch() subscribed to, left at close()
        self.fetch_acked = False  # fetch()'s SUBSCRIBE was answered: a session that could bring chunks

    def open(self):
        """Wi-Fi within the budget, leaving a second of it for the broker (a
        link with no time left to use it is radio time for nothing)."""
        cfg = self.cfg
        self.link = wifi.Wifi(cfg.wifi.ssid, cfg.secret("wifi_psk", None),
                              rtc=rtcmem.Region(self.rtc, *state.WIFI), static=True)
        if not self.link.connect(max(0, self.budget.left() - 1000)):
            self.result = "wifi:%s" % self.link.why
            return False
        self.wifi_ms, self.rssi = self.link.ms, self.link.rssi
        return True

    def sync_clock(self, clk, ppm=None):
        """NTP on every session: cheap next to TLS, and each answer measures
        the sleep clock's drift since the last one. ppm: the learnt drift
        (None: not learnt), which bounds the step clk.sync accepts. -> (RTC
        Unix ms just before, Unix ms just after) when the clock was set, for
        Schedule.synced; None otherwise (an answer refused, counted in
        clk.refused, sets nothing and measures nothing)."""
        if self.link is None or self.result is not None or self.budget.left() < 2000:
            return None
        import ntptime

        before = clock.unix_ms()
        refused = clk.refused
        try:
            ok = clk.sync(ntptime.time, ppm)
        except OSError as e:
            log.warn("clock", "ntp failed: %s", e)
            return None
        return (before, clock.unix_ms()) if ok and clk.refused == refused else None

    def connect(self, status=b"online"):
        """MQTT over TLS, then the retained status. -> whether connected."""
        if self.link is None or self.result is not None:
            return False
        cfg, b = self.cfg, self.cfg.broker
        left = self.budget.left()
        if left < 500:
            self.result = "broker:no-budget"
            return False
        try:
            self.client = mqtt.MQTTClient(cfg.device_id, b.host, b.port, ssl_context=_tls(cfg),
                                          keepalive=60, will=uplink.will(cfg.device_id), clean=False,
                                          timeout_ms=min(5000, left), window=WINDOW)
            if not self.client.connect():  # no session kept for us: (re)subscribe, not waited for
                self.client.subscribe(cfg.topic + "/down/+", 1)
                self.subscribed = True
            uplink.hello(self.client, cfg.device_id, status)
            return True
        except (mqtt.MQTTError, OSError, ValueError) as e:
            self._failed(e)
            return False

    def drain(self, ob, encode, kind=None):
        """The outbox in batches, each acknowledged in it on its PUBACK, while
        the budget lasts. -> readings confirmed."""
        c, cfg = self.client, self.cfg
        if c is None:
            return 0
        try:
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
        except (mqtt.MQTTError, OSError, ValueError) as e:
            self._failed(e)
        self.pending = len(ob)
        return self.sent

    def publish(self, topic, msg):
        """One QoS 1 message, if the budget still has room for it."""
        if self.client is None or self.budget.left() <= 500:
            return False
        try:
            self.client.publish(topic, msg, qos=1)
            return True
        except (mqtt.MQTTError, OSError, ValueError) as e:
            self._failed(e)
            return False

    def await_time(self, ms):
        """Wait up to ms (within the budget) for the answer to the time
        request the health record just carried: the fleet side's clock,
        <topic>/down/time. -> whether it came (then in self.inbox at close)."""
        c = self.client
        if c is None:
            return False
        import mqtt_keepalive

        t = (self.cfg.topic + "/down/time").encode()

        def came(inbox):
            for item in inbox:
                if item[0] == t:
                    return True
            return False

        try:
            return mqtt_keepalive.wait_msg(c, max(0, min(ms, self.budget.left() - 500)), came, mqtt.MQTTError)
        except (mqtt.MQTTError, OSError, ValueError) as e:
            self._failed(e)
            return False

    def fetch(self, topics):
        """An update's next chunks (app.update.wanted): one SUBSCRIBE at QoS
        0 for all of them (nothing is queued for the node while it sleeps, a
        chunk missed is asked again next time), then wait until all came, the
        budget (less 500 ms for close) ends, or FETCH_IDLE_MS pass with
        nothing new after the SUBACK (the broker sends retained messages right
        after it: a chunk not there by then is not on the broker), or the
        broker refuses the topics (its ACL: counted as no chunk). The
        subscriptions go with the DISCONNECT (close). The chunks land in
        self.inbox with the other downlink messages. -> how many came;
        self.fetch_acked: whether the broker answered the SUBSCRIBE (a fetch
        skipped, for the budget or the inbox's room, or cut short before its
        SUBACK, is no evidence that the chunks are gone)."""
        c = self.client
        if c is None or self.result is not None:
            return 0
        import mqtt_keepalive

        inbox = getattr(c, "inbox", ())
        topics = topics[:16 - len(inbox)]  # the client keeps 16 messages at most (mqtt_keepalive)
        if not topics or self.budget.left() < 1500:
            return 0
        want = [t.encode() for t in topics]

        def got(inbox):
            n = 0
            for item in inbox:
                if item[0] in want:
                    n += 1
            return n

        try:
            c.timeout_ms = min(5000, self.budget.left())
            pid = mqtt_keepalive.subscribe_many(c, topics, 0)
            self.fetched = topics

            def done(inbox):  # all came, or none will
                return got(inbox) >= len(want) or pid in c.refused_subs

            seen = -1
            while True:
                left = self.budget.left() - 500
                if left <= 0 or mqtt_keepalive.wait_msg(c, min(left, FETCH_IDLE_MS), done, mqtt.MQTTError):
                    break
                n = len(getattr(c, "inbox", ()))
                if n == seen and pid not in c.inflight:  # nothing new since the SUBACK
                    break
                seen = n
            self.fetch_acked = pid not in c.inflight  # only a SUBACK (taken or refused) takes it out
        except (mqtt.MQTTError, OSError, ValueError) as e:
            self._failed(e)
        n = got(getattr(c, "inbox", ()) if self.client is not None else self.inbox)
        log.info("update", "fetched %d of %d chunks%s", n, len(want),
                 " (the broker refused the topics)" if self.fetched and c.refused_subs else "")
        return n

    def close(self, status=b"sleeping"):
        """The last PUBACKs and the retained status (None: leave the one
        connect() set) within what is left of the budget, a clean DISCONNECT
        (no will), and the radio off whatever happened: never sleep with it on."""
        c = self.client
        try:
            if c is not None:
                c.timeout_ms = max(200, min(5000, self.budget.left()))
                if self.fetched:  # goodbye's steps, the chunks' UNSUBSCRIBE sent with the DISCONNECT
                    if status is not None:
                        c.publish(uplink.status_topic(self.cfg.device_id), status, qos=1, retain=True)
                    c.wait_all()
                    import mqtt_keepalive

                    mqtt_keepalive.leave(c, self.fetched)
                else:
                    uplink.goodbye(c, self.cfg.device_id, status)
                self.result = "partial" if self.pending else "ok"
        except (mqtt.MQTTError, OSError, ValueError) as e:
            self._failed(e)
        finally:
            if c is not None:
                self.inbox = getattr(c, "inbox", [])
            self.client = None
            if self.link is not None:
                self.link.off()

    def _failed(self, e):
        msg = str(e)
        self.auth_refused = _auth_refusal(msg)
        self.result = "broker:%s" % msg[:60]
        if self.client is not None:
            # what had come is kept: each message was whole and acknowledged
            self.inbox = getattr(self.client, "inbox", [])
            self.client.close()
            self.client = None
