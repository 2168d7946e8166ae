"""Safe mode: the application crashed wake after wake, so none of it runs.
The node only says so: Wi-Fi, a retained "safe" status and a health record
(crash count, reset cause) for whoever watches the fleet, then a long sleep.
Sensors, filters and the outbox are left alone: they may be what crashes.
"""

import mqtt
import rtcmem
import uplink
import wifi as _wifi

import eventlog as log

from app import health, session
from app import state as _state


def run(st, cfg, cause, t0):
    sm = cfg.safe_mode
    log.warn("safe", "safe mode: wakes_left=%d crashes=%d", st.safe_left, st.crashes)
    if cfg.broker is not None and cfg.wifi is not None:
        try:
            _report(st, cfg, cause)
        except Exception as e:  # noqa: BLE001  nothing may keep a safe node awake
            log.warn("safe", "report failed: %s", e)
    st.awake_ms = 0
    return sm["sleep_s"] * 1000


def _report(st, cfg, cause):
    import machine
    import seqcounter

    rtc = machine.RTC()
    budget = session.Budget(cfg.network_budget_ms)
    w = _wifi.Wifi(cfg.wifi["ssid"], cfg.secret("wifi_psk", None), rtc=rtcmem.Region(rtc, *_state.WIFI),
                   static=True)
    try:
        if not w.connect(max(0, budget.left() - 1000)):
            log.warn("safe", "wifi failed: %s", w.why)
            return
        counter = seqcounter.SeqCounter("data/seq", rtcmem.Region(rtc, *_state.SEQ), k=64)
        b = cfg.broker
        c = mqtt.MQTTClient(cfg.device_id, b["host"], b["port"], ssl_context=session._tls(cfg),
                            will=uplink.will(cfg.device_id),
                            timeout_ms=max(500, min(5000, budget.left())))
        c.connect()
        c.publish(uplink.status_topic(cfg.device_id), b"safe", qos=1, retain=True)
        key = bytes.fromhex(cfg.secret("hmac_key"))
        msg = health.message(health.record(st, None, cause), key, cfg.device_id.encode(), counter)
        c.publish(cfg.topic + "/health", msg, qos=1)
        c.wait_all()
        c.disconnect()
        log.info("safe", "reported")
    finally:
        w.off()
