"""The health record sent with each uplink, on <topic>/health: what a fleet
operator needs to see a node going wrong before it goes silent.

A CBOR map with short keys, authenticated like the readings (COSE_Mac0 under
the device key, the same never-repeating sequence):
    fw    firmware version          boot  boots since power-on
    rst   reset cause of this wake  wake  what woke it (timer, ext0 ...)
    heap  free heap (bytes, -1 unknown)
    awake last wake's awake time ms rssi  Wi-Fi RSSI dBm
    wifi  this connect's ms         q     readings waiting in the outbox
    drop  readings dropped (outbox full)  lost  readings lost with RTC memory
    crash crashes since power-on    safe  safe-mode entries
    wdt   watchdog resets           auth  broker/TLS refusals
    batt  battery mV (0 unknown)    rej   readings the encoder left out
    refused  readings the outbox could not keep (flash failing)
    fdrop filter drops (all channels, all reasons but "ok")
"""

import gc

import cose

from app import version


def free_heap():
    try:
        gc.collect()
        return gc.mem_free()
    except AttributeError:  # CPython: no heap figure
        return -1


def record(st, ob_stats, cause, rssi=None, wifi_ms=0, filter_drops=0, wake=""):
    """ob_stats: Outbox.stats(), or None when the outbox was not opened (safe
    mode); rssi, wifi_ms: this session's link (rssi None: not measured)."""
    s = ob_stats or {"depth": -1, "drops": -1}
    return {
        "fw": version.VERSION, "boot": st.boots, "rst": cause, "wake": wake, "heap": free_heap(),
        "awake": st.awake_ms, "rssi": rssi if rssi is not None else 0, "wifi": wifi_ms,
        "q": s["depth"], "drop": s["drops"], "lost": st.lost_rtc, "crash": st.crashes,
        "safe": st.safe_entries, "wdt": st.wdt_resets, "auth": st.auth_fails, "batt": st.batt_mv,
        "rej": st.rejected, "refused": st.refused, "fdrop": filter_drops,
    }


def message(rec, key, kid, counter):
    # cbor (the generic encoder) loads here, after the drain: a batch needs
    # only cborput, and the drain is where the heap is tightest
    import cbor

    return cose.mac0(key, kid, counter.next(), cbor.dumps(rec))
