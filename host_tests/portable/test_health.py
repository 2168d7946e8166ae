# app.health: the health record the node sends on <topic>/health.
from app import health, state


def test_health_record_carries_the_counters():
    st = state.State()
    st.boots, st.crashes, st.auth_fails, st.batt_mv = 7, 2, 1, 2980
    r = health.record(st, {"depth": 5, "drops": 0}, "deepsleep", rssi=-71, wifi_ms=180, filter_drops=3)
    assert r["boot"] == 7 and r["crash"] == 2 and r["auth"] == 1 and r["batt"] == 2980
    assert r["q"] == 5 and r["fdrop"] == 3 and r["rst"] == "deepsleep" and r["fw"]
    assert r["rssi"] == -71 and r["wifi"] == 180  # the session's link, passed as values
    assert health.record(st, None, "poweron")["rssi"] == 0  # no link measured
    assert health.record(st, None, "poweron")["q"] == -1  # outbox not opened (safe mode)
    st.exhausted, st.ntp_refused = 4, 9
    r = health.record(st, None, "deepsleep")
    assert r["exhausted"] == 4 and r["ntp_refused"] == 9
    # new fields at the end: old readers keep their order
    assert health.FIELDS[21:23] == ("exhausted", "ntp_refused")
    assert health.FIELDS[23:30] == ("cfgv", "secv", "dref", "dwhy", "cfgerr", "treq", "tunc")
    # the downlink's: nothing pushed (defaults), then what app.mailbox reports
    r = health.record(st, None, "deepsleep")
    assert (r["cfgv"], r["dref"], r["dwhy"], r["cfgerr"], r["treq"], r["tunc"]) == (0, 0, "", "", 0, -1)
    st.treq = 77
    r = health.record(st, None, "deepsleep", down={"cfgv": 3, "secv": 2, "dref": 1, "dwhy": "forged:1",
                                                   "cfgerr": ""}, tunc=2)
    assert (r["cfgv"], r["secv"], r["dref"], r["dwhy"], r["treq"], r["tunc"]) == (3, 2, 1, "forged:1", 77, 2)


class _Update:
    """app.update as N2 builds it, or broken: report(st) -> got, or raising."""

    def __init__(self, got):
        self.got = got

    def report(self, st):
        if isinstance(self.got, Exception):
            raise self.got
        return self.got


def test_health_record_carries_the_update_fields_and_survives_their_modules():
    import app
    import appslot

    st = state.State()
    assert health.FIELDS[30:] == ("appv", "appt", "aprb", "aperr", "upd", "uperr", "fwv", "fwt")
    saved = getattr(app, "update", None)
    try:
        appslot._cur = appslot.State()
        appslot._cur.v_active, appslot._cur.trial, appslot._cur.rollbacks = 7, 1, 2
        appslot._cur.err = "crashed 2 wakes"
        app.update = _Update({"upd": "app v7 12/30", "uperr": "forged", "fwv": 3, "fwt": 1})
        r = health.record(st, None, "deepsleep")
        assert (r["appv"], r["appt"], r["aprb"], r["aperr"]) == (7, 1, 2, "crashed 2 wakes")
        assert (r["upd"], r["uperr"], r["fwv"], r["fwt"]) == ("app v7 12/30", "forged", 3, 1)
        # a broken update module, or one answering nonsense: the defaults, the record whole
        for got in (ValueError("bug"), None, {"upd": 5, "fwv": "x", "fwt": 1}):
            app.update = _Update(got)
            r = health.record(st, None, "deepsleep")
            assert (r["upd"], r["uperr"], r["fwv"]) == ("", "", 0) and r["appv"] == 7
            assert r["fwt"] == (1 if got and not isinstance(got, Exception) else 0)
            assert len(health.pack(r, "p-1")) == len(health.FIELDS)
        appslot._cur = None
        del app.update
        r = health.record(st, None, "deepsleep")  # no data/appslot here: the factory app
        assert (r["appv"], r["appt"], r["aprb"], r["aperr"]) == (0, 0, 0, "")
    finally:
        appslot._cur = None
        if saved is not None:
            app.update = saved
        elif hasattr(app, "update"):
            del app.update


class Counter:
    n = 41

    def next(self):
        self.n += 1
        return self.n


def resolve(records):
    """RFC 8428 section 4.6 for what the health pack uses: bn + n, bt, v or vs."""
    out, bn, bt = {}, "", None
    for r in records:
        bn = r.get(-2, bn)
        bt = r.get(-3, bt)
        assert 0 in r and (2 in r) != (3 in r), r  # a name, one value
        out[bn + r[0]] = r[2] if 2 in r else r[3]
    return out, bt


def test_health_is_a_senml_pack_a_generic_reader_reads():
    import cbor
    import cose

    st = state.State()
    st.boots, st.wdt_resets = 13, 1
    rec = health.record(st, {"depth": 0, "drops": 2}, "deepsleep", -61, 180, 0, "ext0", 300, 3600)
    key = b"k" * 32
    msg = health.message(rec, key, "node-1", Counter(), 1767225600)
    kid, seq, payload = cose.verify(key, msg)
    assert kid == b"node-1" and seq == 42
    pack = cbor.loads(payload)
    assert [r[0] for r in pack] == list(health.FIELDS)  # one record per field, in order
    got, bt = resolve(pack)
    assert bt == 1767225600  # the node's time
    want = dict(("node-1/health/" + k, rec[k]) for k in health.FIELDS)
    assert got == want
    assert got["node-1/health/wake"] == "ext0" and got["node-1/health/boot"] == 13
    assert got["node-1/health/uplink_s"] == 3600 and got["node-1/health/drop"] == 2
    assert 3 in pack[0] and 2 in pack[1]  # fw as text (vs), boot a number (v)
    # the clock unknown: no bt at all (not 0, not a relative time)
    _, bt = resolve(cbor.loads(cose.verify(key, health.message(rec, key, "node-1", Counter()))[2]))
    assert bt is None
