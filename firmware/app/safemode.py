"""Safe mode: the application crashed wake after wake, so none of it runs.
The node only says so: Wi-Fi, a retained "safe" status and a health record
(crash count, reset cause) for whoever watches the fleet, then a long sleep.
Sensors, filters and the outbox are left alone: they may be what crashes.
The downlink is read: a configuration pushed to fix the crash is taken
(app.mailbox), and a new configuration leaves safe mode at once (ladder).
The session and the stores are the cycle's own (app.session, app.stores).
"""

import machine

import eventlog as log

from app import health, mailbox, session, stores


def run(st, cfg, cause):
    log.warn("safe", "safe mode: wakes_left=%d crashes=%d", st.safe_left, st.crashes)
    if cfg.broker is not None and cfg.wifi is not None:
        try:
            _report(st, cfg, cause)
        except Exception as e:  # noqa: BLE001  nothing may keep a safe node awake
            log.warn("safe", "report failed: %s", e)
    st.awake_ms = 0
    return cfg.safe_mode.sleep_s * 1000


def _report(st, cfg, cause):
    key = bytes.fromhex(cfg.secret("hmac_key"))
    rtc = machine.RTC()
    node = stores.make(rtc, with_outbox=False)
    s = session.Session(cfg, rtc)
    sent = False
    clk = node.clk
    try:
        if s.open() and s.connect(status=b"safe"):
            rec = health.record(st, None, cause, s.rssi, s.wifi_ms, 0, "", cfg.sample_s,
                                cfg.sample_s * cfg.uplink_every, mailbox.report(st), clk.unc)
            sent = s.publish(cfg.topic + "/health", health.message(
                rec, key, cfg.device_id, node.counter, clk.unix() if clk.known() else None))
    finally:
        s.close(status=None)  # "safe" stays the retained status
    if s.inbox:  # a fix pushed to a node that crashes is what safe mode waits for
        mailbox.receive(st, cfg, clk, s.inbox)
    if s.auth_refused:
        st.bump("auth_fails")
    if sent and s.result == "ok":  # the health record's PUBACK came with close()'s wait
        log.info("safe", "reported")
    else:
        log.warn("safe", "report failed: %s", s.result)
