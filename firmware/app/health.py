"""The health record sent with each uplink, on <topic>/health: what a fleet
operator needs to see a node going wrong before it goes silent.

A SenML pack (RFC 8428, CBOR), authenticated like the readings (COSE_Mac0
under the device key, the same never-repeating sequence): the first record
carries bn "<device_id>/health/" and, when the node's clock is known, bt (its
Unix time); one record per field, n = the field's name and v (a number) or vs
(text). A generic SenML reader gets "<device_id>/health/boot" = 13, and so on.
    fw    firmware version (vs)     boot  boots since power-on
    rst   reset cause of this wake (vs)   wake  what woke it (vs: timer, ext0 ...)
    heap  free heap (bytes, -1 unknown)
    awake last wake's awake time ms rssi  Wi-Fi RSSI dBm (0 not measured)
    wifi  this connect's ms         q     readings waiting in the outbox (-1 not opened)
    drop  readings dropped (outbox full)  lost  readings lost with RTC memory
    crash crashes since power-on    safe  safe-mode entries
    wdt   watchdog resets           auth  broker/TLS refusals
    batt  battery mV (0 unknown)    rej   readings the encoder left out
    refused  readings the outbox could not keep (flash failing)
    fdrop filter drops (all channels, all reasons but "ok")
    sample_s  sampling interval, s  uplink_s  interval between uplinks, s
              (sample_s x uplink_every: a reader's expire_after)
    exhausted  readings the outbox refused: no sequence number left (a new
               device id is needed; lib/outbox.py)
    ntp_refused  NTP answers refused: below the floor, beyond build + 30
               years, not what the RTC measured since the last sync, or
               unconfirmed (lib/clock.py): forged or broken time
The downlink's (app.mailbox; README, "Managing nodes in the field"):
    cfgv  the pushed configuration's version running (0: none pushed)
    secv  the same for pushed secrets
    dref  downlink messages refused    dwhy  how many by reason (vs), "forged:1 replay:2"
    cfgerr why the last pushed file was refused or reverted (vs; names keys, never values)
    treq  a time request's nonce (0: none): the fleet side answers with its clock
    tunc  s either side of the last authenticated time (-1: none this power-on)
App updates (issue 17; appslot at the root, app.update):
    appv  the running app's version (0: the factory app as deployed)
    appt  1 while it runs on trial    aprb  rollbacks so far
    aperr why the last update was rolled back (vs)
    upd   the download in progress (vs, "app v7 12/30"; "": none)
    uperr why the last update was refused (vs)
    fwv   the MicroPython firmware's version as the node knows it (0: as flashed)
    fwt   1 during the firmware's trial wake
The counters count since power-on (RTC memory), saturating at 65535; drop
and q are the outbox's own.
"""

import gc

import cose

from app import version

# the pack's order; a new field goes at the end
FIELDS = ("fw", "boot", "rst", "wake", "heap", "awake", "rssi", "wifi", "q", "drop", "lost", "crash",
          "safe", "wdt", "auth", "batt", "rej", "refused", "fdrop", "sample_s", "uplink_s", "exhausted",
          "ntp_refused", "cfgv", "secv", "dref", "dwhy", "cfgerr", "treq", "tunc",
          "appv", "appt", "aprb", "aperr", "upd", "uperr", "fwv", "fwt")
UPDATE_DEFAULTS = {"appv": 0, "appt": 0, "aprb": 0, "aperr": "", "upd": "", "uperr": "", "fwv": 0, "fwt": 0}


def free_heap():
    try:
        gc.collect()
        return gc.mem_free()
    except AttributeError:  # CPython: no heap figure
        return -1


def record(st, ob_stats, cause, rssi=None, wifi_ms=0, filter_drops=0, wake="", sample_s=0, uplink_s=0,
           down=None, tunc=-1):
    """-> {field: value}. ob_stats: Outbox.stats(), or None when the outbox
    was not opened (safe mode); rssi, wifi_ms: this session's link (rssi
    None: not measured); sample_s, uplink_s: the configured intervals;
    down: app.mailbox.report()'s fields (None: nothing pushed, none refused);
    tunc: the clock's (Clock.unc)."""
    s = ob_stats or {"depth": -1, "drops": -1}
    d = down or {"cfgv": 0, "secv": 0, "dref": 0, "dwhy": "", "cfgerr": ""}
    rec = {
        "fw": version.VERSION, "boot": st.boots, "rst": cause, "wake": wake, "heap": free_heap(),
        "awake": st.awake_ms, "rssi": rssi if rssi is not None else 0, "wifi": wifi_ms,
        "q": s["depth"], "drop": s["drops"], "lost": st.lost_rtc, "crash": st.crashes,
        "safe": st.safe_entries, "wdt": st.wdt_resets, "auth": st.auth_fails, "batt": st.batt_mv,
        "rej": st.rejected, "refused": st.refused, "fdrop": filter_drops,
        "sample_s": sample_s, "uplink_s": uplink_s, "exhausted": st.exhausted, "ntp_refused": st.ntp_refused,
        "cfgv": d["cfgv"], "secv": d["secv"], "dref": d["dref"], "dwhy": d["dwhy"], "cfgerr": d["cfgerr"],
        "treq": st.treq, "tunc": tunc,
    }
    rec.update(UPDATE_DEFAULTS)
    _merge(rec, _appslot_report)
    _merge(rec, lambda: _update_report(st))
    return rec


def _appslot_report():
    import appslot  # at the root: the factory's, whichever app runs

    return appslot.report()


def _update_report(st):
    from app import update

    return update.report(st)


def _merge(rec, source):
    """The update fields a module reports, each checked against its default's
    type: a missing or broken module leaves the defaults, never the record."""
    try:
        got = source()
    except Exception:  # noqa: BLE001  ImportError (a node without it) or a bug in it
        return
    if not isinstance(got, dict):
        return
    for k in UPDATE_DEFAULTS:
        v = got.get(k)
        if v is not None and type(v) is type(UPDATE_DEFAULTS[k]):
            rec[k] = v


def pack(rec, device_id, unix=None):
    """The record as SenML records (a list of maps with RFC 8428's CBOR labels)."""
    out = []
    for name in FIELDS:
        v = rec[name]
        out.append({0: name, 3 if isinstance(v, str) else 2: v})  # n, vs or v
    out[0][-2] = device_id + "/health/"  # bn
    if unix is not None:
        out[0][-3] = unix  # bt: the node's clock, when known
    return out


def message(rec, key, device_id, counter, unix=None):
    """The sealed health message; unix: the node's time when its clock is known."""
    # cbor (the generic encoder) loads here, after the drain: a batch needs
    # only cborput, and the drain is where the heap is tightest
    import cbor

    return cose.mac0(key, device_id.encode(), counter.next(), cbor.dumps(pack(rec, device_id, unix)))
