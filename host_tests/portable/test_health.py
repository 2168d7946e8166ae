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
