"""The collector's store (tools/petrel/store.py, store_pg.py): the sequence
window, idempotent readings, refusal counts and queries, each test on SQLite
and on a real PostgreSQL server (conftest's pg_server)."""

import threading

import pytest

from petrel import store, testmsg
from petrel.verify import Rejected, Verifier

KA, KB = b"a" * 31 + b"1", b"b" * 31 + b"2"
T0 = 1767225600
V = Verifier({"p-A": KA, "p-B": KB})


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "readings.sqlite")
    return request.getfixturevalue("pg_url")


def up(seq, rids, device="p-A", key=KA, time="dated", received=T0 + 1000):
    rows = [("t", "Cel", 2000 + r, 100, T0 + 60 * r if time == "dated" else -60, r) for r in rids]
    return V.open("petrel/%s/up" % device, testmsg.up(key, device, seq, rows, time=time), received=received)


def refused(st, msg):
    with pytest.raises(Rejected) as e:
        st.commit(msg)
    return e.value.reason


def test_readings_are_stored_once_and_read_back_in_time_order(url):
    with store.open(url) as st:
        assert st.commit(up(5, [3, 1, 2])) == (3, 0)
        # a resend after a lost PUBACK: new COSE seq, the same reading ids, one new
        assert st.commit(up(6, [1, 2, 3, 4])) == (1, 3)
        got = [(r.device, r.channel, r.rid, r.exact, r.value, r.unit, r.time, r.quality) for r in st.readings()]
        assert got == [("p-A", "t", r, "20.%02d" % r, 20 + r / 100, "Cel", T0 + 60 * r, "dated") for r in (1, 2, 3, 4)]
        assert st.counts() == {"readings": 4, "messages": 2, "health": 0, "refused": {}}


def test_a_repeated_seq_is_a_duplicate_and_one_below_the_window_a_replay(url):
    with store.open(url) as st:
        st.commit(up(2000, [1]))
        assert refused(st, up(2000, [1])) == "duplicate"
        assert refused(st, up(2000, [9])) == "duplicate"  # the seq decides, not the content
        assert st.commit(up(1500, [2])) == (1, 0)  # late but inside the window, never seen: stored
        assert refused(st, up(1500, [2])) == "duplicate"
        assert refused(st, up(2000 - store.WINDOW, [3])) == "replay"
        assert refused(st, up(0, [4])) == "replay"
        assert st.commit(up(2000 - store.WINDOW + 1, [5])) == (1, 0)
        st.commit(up(5000, [6]))  # the window moves with the highest seq
        assert refused(st, up(3976, [7])) == "replay"
        assert st.commit(up(3977, [7])) == (1, 0)
        assert st.counts()["readings"] == 5
        # each device has its own window
        assert st.commit(up(1, [1], "p-B", KB)) == (1, 0)


def test_replays_are_refused_across_a_reopen_and_across_two_stores(url):
    old = up(7, [1, 2])
    st = store.open(url)
    st.commit(old)
    st.close()
    st = store.open(url)  # the collector restarted
    assert refused(st, old) == "duplicate"
    other = store.open(url)  # a second collector on the same database
    assert refused(other, old) == "duplicate"
    other.commit(up(9000, [3]))
    assert refused(st, up(100, [4])) == "replay"  # st sees other's highest seq
    assert st.commit(up(8999, [4])) == (1, 0)
    assert [r.rid for r in other.readings()] == [1, 2, 3, 4]
    st.close()
    other.close()


def test_two_stores_committing_one_devices_messages_out_of_order(url):
    a, b = store.open(url), store.open(url)
    msgs = [up(seq, [seq]) for seq in range(1, 201)]
    a.commit(msgs[199])
    for m in reversed(msgs[:199]):
        (a if m.seq % 2 else b).commit(m)
    assert len(list(a.readings())) == 200
    a.close()
    b.close()


def test_two_stores_racing_on_the_same_messages_store_each_once(url):
    """Two collectors given the same 300 messages (a shared group's redelivery
    after a crash) at once: each message stored by exactly one of them."""
    msgs = [up(seq, [2 * seq, 2 * seq + 1], "p-A" if seq % 3 else "p-B", KA if seq % 3 else KB)
            for seq in range(1, 301)]
    results = {}

    def run(name, order):
        st = store.open(url)
        out = results[name] = []
        for k in range(0, len(order), 7):  # batches, as a collector commits them
            out.extend(st.commit_many(order[k:k + 7]))
        st.close()

    threads = [threading.Thread(target=run, args=("a", msgs)), threading.Thread(target=run, args=("b", msgs[::-1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    a, b = results["a"], results["b"][::-1]
    for ra, rb in zip(a, b):
        ok = [r for r in (ra, rb) if not isinstance(r, Rejected)]
        assert len(ok) == 1 and ok[0] == (2, 0), (ra, rb)
        assert [r.reason for r in (ra, rb) if isinstance(r, Rejected)] == ["duplicate"]
    with store.open(url) as st:
        assert st.counts()["readings"] == 600 and st.counts()["messages"] == 300
        assert sorted((r.device, r.rid) for r in st.readings()) == sorted(
            (m.device, r.rid) for m in msgs for r in m.readings)


def test_a_batch_with_a_refused_message_keeps_the_others(url):
    with store.open(url) as st:
        st.commit(up(10, [1]))
        got = st.commit_many([up(11, [2]), up(10, [3]), up(12, [2, 4])])
        assert got[0] == (1, 0) and got[1].reason == "duplicate" and got[2] == (1, 1)
        assert [r.rid for r in st.readings()] == [1, 2, 4]


def test_health_records_and_device_summaries(url):
    with store.open(url) as st:
        h1 = V.open("petrel/p-A/health", testmsg.health(KA, "p-A", 3, {"fw": "0.7.0", "q": 4}, bt=T0), received=T0)
        h2 = V.open("petrel/p-A/health", testmsg.health(KA, "p-A", 9, {"fw": "0.7.1", "q": 0}), received=T0 + 60)
        assert st.commit(h2) == (0, 0)
        assert st.commit(h1) == (0, 0)  # older, committed later: the summary keeps the latest
        assert refused(st, h1) == "duplicate"
        st.commit(up(4, [1, 2], received=T0 + 30))
        st.commit(up(1, [1], "p-B", KB, received=T0 + 10))
        assert st.devices() == [
            dict(device="p-A", first_seen=T0 + 60, last_seen=T0 + 60, readings=2, health={"fw": "0.7.1", "q": 0}),
            dict(device="p-B", first_seen=T0 + 10, last_seen=T0 + 10, readings=1, health=None)]
        assert st.counts() == {"readings": 3, "messages": 4, "health": 2, "refused": {}}


def test_refusals_are_counted_by_device_and_reason(url):
    with store.open(url) as st:
        for dev, why in (("p-A", "mac"), ("p-A", "mac"), (None, "unknown_kid"), (None, "structure"),
                         ("p-B", "replay")):
            st.refusal(dev, why)
        assert st.counts()["refused"] == {"mac": 2, "unknown_kid": 1, "structure": 1, "replay": 1}
        assert [(d, r, n) for d, r, n, _ in st.refusals()] == [
            (None, "structure", 1), (None, "unknown_kid", 1), ("p-A", "mac", 2), ("p-B", "replay", 1)]


def test_queries_by_device_channel_and_time_with_undated_last(url):
    with store.open(url) as st:
        st.commit(up(1, [1, 2, 3]))
        st.commit(up(2, [7, 8], time="undated"))
        st.commit(up(3, [9], time="relative", received=T0 + 5000))
        st.commit(up(1, [4], "p-B", KB))
        assert [(r.device, r.rid, r.quality) for r in st.readings()] == [
            ("p-A", 1, "dated"), ("p-A", 2, "dated"), ("p-A", 3, "dated"), ("p-B", 4, "dated"),
            ("p-A", 9, "relative"), ("p-A", 7, "undated"), ("p-A", 8, "undated")]
        assert [r.rid for r in st.readings(device="p-A", since=T0 + 120)] == [2, 3, 9]
        assert [r.rid for r in st.readings(since=T0 + 120, until=T0 + 240)] == [2, 3, 4]
        assert [r.rid for r in st.readings(channel="t", limit=2)] == [1, 2]
        assert list(st.readings(channel="h")) == []
        assert [r.time for r in st.readings(device="p-A") if r.rid == 9] == [T0 + 5000 - 60]


def test_the_widest_values_the_verifier_lets_through_fit_the_schema(url):
    import cbor2

    pack = [{-2: "p-A/" + "c" * 64, -4: "u" * 256, -3: (1 << 36) - 1, "i": (1 << 63) - 1, "flags": 65535,
             2: cbor2.CBORTag(4, [-40, (1 << 64) - 1])}]
    m = V.open("petrel/p-A/up", testmsg.mac0(KA, "p-A", (1 << 63) - 1, cbor2.dumps(pack)))
    with store.open(url) as st:
        assert st.commit(m) == (1, 0)
        r = next(st.readings())
        assert (r.rid, r.flags, r.time, r.exact) == ((1 << 63) - 1, 65535, (1 << 36) - 1, m.readings[0].exact)
        assert refused(st, m) == "duplicate"


def test_open_urls(tmp_path):
    st = store.open("sqlite:///" + str(tmp_path / "a.sqlite"))
    st.close()
    assert (tmp_path / "a.sqlite").exists()
    with pytest.raises(ValueError):
        store.open("mysql://x")
    with pytest.raises(ValueError):
        store.open(str(tmp_path / "missing" / "a.sqlite"))


def test_the_window_check_waits_for_another_collectors_transaction(url):
    """Another collector is mid-transaction on the device and raises its
    highest seq to 5000: a commit of seq 100 meanwhile must wait for it and
    then refuse 100 as a replay (read before the other's commit, it would pass)."""
    with store.open(url) as st:
        st.commit(up(1, [1]))
        if url.startswith("postgresql"):
            import psycopg

            other = psycopg.connect(url)
            other.execute("SELECT high_seq FROM devices WHERE device = 'p-A' FOR UPDATE")
        else:
            import sqlite3

            other = sqlite3.connect(url, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE devices SET high_seq = 5000 WHERE device = 'p-A'")
        got = []
        t = threading.Thread(target=lambda: got.append(st.commit_many([up(100, [2])])[0]))
        t.start()
        t.join(0.5)
        assert t.is_alive()  # waiting for the other's transaction
        other.commit() if url.startswith("postgresql") else other.execute("COMMIT")
        t.join(10)
        other.close()
        assert got[0].reason == "replay"


RACER = """
import sys
from petrel import store, testmsg
from petrel.verify import Rejected, Verifier
key, url, order = b"a" * 31 + b"1", sys.argv[1], sys.argv[2]
v = Verifier({"p-A": key})
seqs = list(range(1, 401))[::1 if order == "up" else -1]
st = store.open(url)
ok = 0
for s in seqs:
    m = v.open("petrel/p-A/up", testmsg.up(key, "p-A", s, [("t", "Cel", s, 1, %d + s, s)]))
    ok += not isinstance(st.commit_many([m])[0], Rejected)
print(ok)
""" % T0


def test_two_processes_on_one_sqlite_file(tmp_path):
    """Two collector processes on one SQLite file, the same 400 messages in
    opposite orders: every message stored once between them."""
    import subprocess
    import sys

    url = str(tmp_path / "shared.sqlite")
    store.open(url).close()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, url, order], stdout=subprocess.PIPE, text=True)
             for order in ("up", "down")]
    stored = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(stored) == 400 and min(stored) > 0, stored
    with store.open(url) as st:
        assert [r.rid for r in st.readings()] == list(range(1, 401))
        assert st.counts()["messages"] == 400
