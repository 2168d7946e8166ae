"""`petrel collect` (tools/petrel/collect.py) against a real Mosquitto: nothing
lost and nothing stored twice when the collector is SIGKILLed, when one of two
collectors in a shared group is, when the broker restarts; SIGTERM commits and
exits 0; refusals counted and logged; retained messages dropped; TLS verified.

The kill tests run the collector as `python -m petrel.cli collect` and feed it a
burst of 600 messages of 60 readings (the node's batch), so that when it is
killed after its first commits it holds hundreds of messages received and not
yet committed (acknowledging them on receipt would lose them: this is what the
tests catch); the store is then compared reading by reading with what was sent.
"""

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import paho.mqtt.client as paho
import pytest

from petrel import provision, store as _store, testmsg
from petrel.broker import Broker
from petrel.collect import Collector

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ("p-c01", "p-c02", "p-c03")
CHANNELS = (("t", "Cel", 100), ("rh", "%RH", 10))
T0 = 1767225600


@pytest.fixture(scope="module")
def keys():
    return {d: os.urandom(32) for d in DEVICES}


def make_registry(path, keys):
    db = sqlite3.connect(str(path))
    db.execute(provision.SCHEMA)
    for d, k in keys.items():
        db.execute("INSERT INTO devices (device_id, hmac_key, created) VALUES (?, ?, '2026-01-01')", (d, k))
    db.commit()
    db.close()
    return path


def feed(keys, n, per=60, first_seq=1):
    """n up messages round-robin over the devices -> (messages, expected):
    messages [(topic, data)], expected {(device, channel, rid): exact}."""
    msgs, expected = [], {}
    for i in range(n):
        d = DEVICES[i % len(DEVICES)]
        seq = first_seq + i // len(DEVICES)
        rows = []
        for k in range(per):
            ch, unit, scale = CHANNELS[k % len(CHANNELS)]
            rid = seq * per + k
            m = 2000 + (seq * 7 + k) % 500
            rows.append((ch, unit, m, scale, T0 + seq * 60 + k, rid))
            v = testmsg.value(m, scale)
            expected[(d, ch, rid)] = str(v) if isinstance(v, int) else str(m / scale)
        msgs.append(("petrel/%s/up" % d, testmsg.up(keys[d], d, seq, rows)))
    return msgs, expected


class Publisher:
    """The nodes' side: QoS 1 with a persistent session, publishing in a
    thread at a steady pace; paho resends what the broker did not acknowledge."""

    def __init__(self, port, client_id="test-nodes"):
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.reconnect_delay_set(0.1, 1)
        self.c.max_inflight_messages_set(100)
        self.acked = set()  # mids the broker acknowledged (also after a reconnect's resend)
        self.c.on_publish = lambda c, u, mid, rc, props: self.acked.add(mid)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.infos = []
        self.thread = None

    def send(self, msgs, rate=3000):
        def run():
            t0 = time.monotonic()
            for i, (topic, data) in enumerate(msgs):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.infos.append(self.c.publish(topic, data, qos=1))
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def wait(self, timeout=30):
        self.thread.join(timeout)
        deadline = time.monotonic() + timeout
        while not all(i.mid in self.acked for i in self.infos):
            assert time.monotonic() < deadline, "the broker did not acknowledge every publish"
            time.sleep(0.05)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def counts(db):
    st = _store.open(db)
    try:
        return st.counts()
    finally:
        st.close()


def stored(db):
    st = _store.open(db)
    try:
        return {(r.device, r.channel, r.rid): r.exact for r in st.readings()}
    finally:
        st.close()


class Proc:
    """`python -m petrel.cli collect` in a subprocess, its log in a file."""

    def __init__(self, tmp, port, client_id, db, registry, group=None):
        self.log = Path(tmp) / ("%s-%d.log" % (client_id, time.monotonic_ns()))
        args = [sys.executable, "-m", "petrel.cli", "collect", "--registry", str(registry), "--db", str(db),
                "--host", "127.0.0.1", "--port", str(port), "--insecure-plain", "--client-id", client_id,
                "--no-homeassistant"]
        if group:
            args += ["--group", group]
        self.f = open(self.log, "w")
        self.p = subprocess.Popen(args, stdout=self.f, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                  env=dict(os.environ, PYTHONPATH=str(ROOT / "tools")))
        wait_for(lambda: "subscribed" in self.text() or self.p.poll() is not None, 20,
                 "the collector to subscribe")
        assert self.p.poll() is None, self.text()

    def text(self):
        return self.log.read_text()

    def kill(self, sig=signal.SIGKILL, timeout=20):
        self.p.send_signal(sig)
        rc = self.p.wait(timeout)
        self.f.close()
        return rc


def assert_all_once(db, expected, n_messages):
    got = stored(db)
    missing = set(expected) - set(got)
    assert not missing, "%d readings lost, e.g. %s" % (len(missing), sorted(missing)[:3])
    assert got == expected  # nothing else, and every value as sent
    c = counts(db)
    assert c["readings"] == len(expected) and c["messages"] == n_messages
    return c


def test_sigkill_mid_stream_then_restart_loses_nothing_and_stores_nothing_twice(broker, keys, tmp_path):
    reg, db = make_registry(tmp_path / "devices.sqlite", keys), tmp_path / "r.sqlite"
    msgs, expected = feed(keys, 600)
    col = Proc(tmp_path, broker.ports["plain"], "kill-a", db, reg)
    pub = Publisher(broker.ports["plain"], "nodes-kill").send(msgs)
    try:
        wait_for(lambda: counts(db)["readings"] > 0, 20, "a first commit")
        assert col.kill() == -signal.SIGKILL
        at_kill = counts(db)["readings"]
        pub.wait()  # the rest waits at the broker, in the collector's session
        assert at_kill < len(expected) / 2, "the kill came late in the stream: no test"
        col = Proc(tmp_path, broker.ports["plain"], "kill-a", db, reg)
        wait_for(lambda: counts(db)["readings"] >= len(expected), 20, "everything stored")
        time.sleep(0.3)  # anything extra would arrive now
        assert_all_once(db, expected, len(msgs))
    finally:
        col.kill()
        pub.close()


def test_two_collectors_in_a_group_one_killed_every_reading_stored_once(broker, keys, tmp_path):
    reg, db = make_registry(tmp_path / "devices.sqlite", keys), tmp_path / "r.sqlite"
    msgs, expected = feed(keys, 600)
    a = Proc(tmp_path, broker.ports["plain"], "group-a", db, reg, group="g1")
    b = Proc(tmp_path, broker.ports["plain"], "group-b", db, reg, group="g1")
    pub = Publisher(broker.ports["plain"], "nodes-group").send(msgs)
    try:
        wait_for(lambda: counts(db)["readings"] > 0, 20, "a first commit")
        assert a.kill() == -signal.SIGKILL
        pub.wait()
        a = Proc(tmp_path, broker.ports["plain"], "group-a", db, reg, group="g1")
        wait_for(lambda: counts(db)["readings"] >= len(expected), 20, "everything stored")
        time.sleep(0.3)
        assert_all_once(db, expected, len(msgs))
        assert "refused" not in b.text().replace("0 refused", "")  # b saw only its own share
    finally:
        a.kill()
        b.kill()
        pub.close()


def test_a_retired_group_member_hands_over_its_backlog_and_gets_no_more_share(broker, keys, tmp_path):
    # a member stopped for good keeps its persistent session and, with it, a
    # share of the fleet's messages that nobody stores: --retire takes that
    # backlog, then ends the session, and the group's other members get the rest
    reg, db = make_registry(tmp_path / "devices.sqlite", keys), tmp_path / "r.sqlite"
    msgs, expected = feed(keys, 300)
    later, expected_later = feed(keys, 150, first_seq=1000)
    a = Proc(tmp_path, broker.ports["plain"], "retire-a", db, reg, group="g2")
    b = Proc(tmp_path, broker.ports["plain"], "retire-b", db, reg, group="g2")
    pub = Publisher(broker.ports["plain"], "nodes-retire")
    try:
        assert a.kill(signal.SIGTERM) == 0
        pub.send(msgs).wait()
        wait_for(lambda: counts(db)["messages"] >= len(msgs) // 3, 20, "b's share stored")
        time.sleep(0.5)
        held = len(msgs) - counts(db)["messages"]
        assert held >= len(msgs) // 3, "the stopped member's session held nothing: no test"
        r = subprocess.run(
            [sys.executable, "-m", "petrel.cli", "collect", "--registry", str(reg), "--db", str(db),
             "--host", "127.0.0.1", "--port", str(broker.ports["plain"]), "--insecure-plain",
             "--client-id", "retire-a", "--group", "g2", "--no-homeassistant", "--retire"],
            cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT / "tools")),
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "session ended" in r.stderr
        assert_all_once(db, expected, len(msgs))
        pub.send(later).wait()  # b alone now: retire-a's share is not held for it
        wait_for(lambda: counts(db)["messages"] >= len(msgs) + len(later), 20,
                 "b storing all of the later messages")
        assert_all_once(db, {**expected, **expected_later}, len(msgs) + len(later))
    finally:
        b.kill()
        pub.close()


def test_sigterm_commits_what_it_received_acknowledges_it_and_exits_0(broker, keys, tmp_path):
    reg, db = make_registry(tmp_path / "devices.sqlite", keys), tmp_path / "r.sqlite"
    msgs, expected = feed(keys, 600)
    col = Proc(tmp_path, broker.ports["plain"], "term-a", db, reg)
    pub = Publisher(broker.ports["plain"], "nodes-term").send(msgs)
    try:
        wait_for(lambda: counts(db)["readings"] > 0, 20, "a first commit")
        assert col.kill(signal.SIGTERM) == 0, col.text()
        assert "stopped:" in col.text()
        pub.wait()
        col = Proc(tmp_path, broker.ports["plain"], "term-a", db, reg)
        wait_for(lambda: counts(db)["readings"] >= len(expected), 20, "everything stored")
        time.sleep(0.3)
        c = assert_all_once(db, expected, len(msgs))
        # what the first run committed it also acknowledged before leaving:
        # the broker sent none of it again
        assert c["refused"] == {}, c
    finally:
        col.kill()
        pub.close()


def test_broker_restarted_mid_stream_loses_nothing(keys, tmp_path):
    """A broker with persistence, restarted as a service manager does (SIGTERM:
    it saves its sessions): the collector reconnects with backoff, its session
    and the messages queued in it come back."""
    db = tmp_path / "r.sqlite"
    msgs, expected = feed(keys, 600)
    with Broker(tmp_path / "broker", persistence=True) as b:
        st = _store.open(db)
        col = Collector(st, keys, "127.0.0.1", b.ports["plain"], insecure_plain=True,
                        client_id="restart-a").start()
        assert col.subscribed.wait(10)
        # at a pace (2 s): the restart comes with most of the stream still to
        # publish, some of it while the collector is still away (backoff)
        pub = Publisher(b.ports["plain"], "nodes-restart").send(msgs, rate=300)
        try:
            wait_for(lambda: counts(db)["readings"] > 0, 20, "a first commit")
            b.restart()
            assert counts(db)["readings"] < len(expected) / 2, "the restart came late: no test"
            pub.wait(60)
            wait_for(lambda: counts(db)["readings"] >= len(expected), 30, "everything stored")
            wait_for(col.connected.is_set, 10, "the collector back")
            time.sleep(0.3)
            assert_all_once(db, expected, len(msgs))
        finally:
            col.stop()
            st.close()
            pub.close()


def test_refusals_counted_and_logged_retained_dropped_and_the_service_goes_on(broker, keys, tmp_path, caplog):
    db = tmp_path / "r.sqlite"
    good, expected = feed(keys, 6)
    d, d2 = DEVICES[0], DEVICES[1]
    pub = Publisher(broker.ports["plain"], "nodes-refusals")
    # a retained up message (a good one): Mosquitto 2.0.11 hands it to a
    # group's members when they subscribe; it is not data
    pub.c.publish(good[0][0], good[0][1], qos=1, retain=True).wait_for_publish(5)
    st = _store.open(db)
    caplog.set_level(logging.INFO, logger="petrel.collect")
    col = Collector(st, keys, "127.0.0.1", broker.ports["plain"], insecure_plain=True,
                    client_id="refusals", group="refusals").start()
    try:
        assert col.subscribed.wait(10)
        # v5's retain handling 2 keeps it away from us on 2.0.11; a member
        # subscribing without it (as a 3.1.1 client does) gets it: dropped
        time.sleep(0.3)
        assert col.counts["retained"] == 0
        col.client.subscribe([(t, 1) for t in col.topics()])
        wait_for(lambda: col.counts["retained"] == 1, 5, "the retained message")
        bad = [("petrel/%s/up" % d, testmsg.up(os.urandom(32), d, 100, [("t", "Cel", 1, 1, T0, 900)])),
               ("petrel/p-nobody/up", testmsg.up(os.urandom(32), "p-nobody", 1, [("t", "Cel", 1, 1, T0, 1)])),
               ("petrel/%s/up" % d, b"\xff" * 40),
               ("petrel/%s/up" % d, b"\x00" * (70 * 1024)),
               good[1]]
        pub.send(good[1:] + bad, rate=1000).wait()
        wait_for(lambda: sum(counts(db)["refused"].values()) >= 5, 10, "the refusals counted")
        c = counts(db)
        assert c["refused"] == {"mac": 1, "unknown_kid": 1, "structure": 1, "oversized": 1, "duplicate": 1}, c
        # rows only for registered devices: a name from the network adds none
        assert set((r[0], r[1]) for r in st.refusals()) == {
            (d, "mac"), (None, "unknown_kid"), (d, "structure"), (d, "oversized"), (d2, "duplicate")}
        # one line each: "refused <device> <reason>" (then a bounded detail)
        lines = [" ".join(r.getMessage().split()[:3]) for r in caplog.records
                 if r.getMessage().startswith("refused ")]
        assert sorted(lines) == sorted(["refused %s mac" % d, "refused p-nobody unknown_kid",
                                        "refused %s structure" % d, "refused %s oversized" % d,
                                        "refused %s duplicate" % d2])
        assert set(stored(db)) == set(k for k in expected if k[0] != d or k[2] >= 2 * 60)  # not the retained one
        pub.send(feed(keys, 9)[0][6:], rate=1000).wait()
        wait_for(lambda: counts(db)["messages"] == 8, 10, "the service to go on storing")
    finally:
        pub.c.publish(good[0][0], b"", qos=1, retain=True).wait_for_publish(5)  # the broker is shared
        col.stop()
        st.close()
        pub.close()


def test_tls_verifies_the_broker_against_the_ca(broker, keys, tmp_path):
    msgs, expected = feed(keys, 6)
    st = _store.open(tmp_path / "r.sqlite")
    # a CA that did not sign the broker's certificate: never connected
    wrong = Collector(st, keys, "localhost", broker.ports["tls"], ca=broker.pki["other_ca"],
                      client_id="tls-wrong").start()
    ok = Collector(st, keys, "localhost", broker.ports["tls"], ca=broker.pki["ca"], client_id="tls-ok").start()
    pub = Publisher(broker.ports["plain"], "nodes-tls")
    try:
        assert ok.subscribed.wait(10)
        pub.send(msgs).wait()
        wait_for(lambda: st.counts()["readings"] == len(expected), 10, "the readings over TLS")
        assert stored(tmp_path / "r.sqlite") == expected
        assert not wrong.connected.is_set() and wrong.counts["messages"] == 0
    finally:
        wrong.stop()
        ok.stop()
        st.close()
        pub.close()


def test_needs_a_ca_or_an_explicit_plain_connection(keys, tmp_path):
    with pytest.raises(ValueError):
        Collector(None, keys, "localhost", 8883)
    reg = make_registry(tmp_path / "devices.sqlite", keys)
    r = subprocess.run([sys.executable, "-m", "petrel.cli", "collect", "--registry", str(reg),
                        "--db", str(tmp_path / "r.sqlite")], capture_output=True, text=True, timeout=30,
                       cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT / "tools")))
    assert r.returncode == 2 and "--ca" in r.stderr


class FlakyStore:
    """The real store, whose first commits fail as a locked or unreachable database does."""

    def __init__(self, st, failures):
        self.st, self.failures = st, failures

    def commit_many(self, msgs):
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return self.st.commit_many(msgs)

    def __getattr__(self, name):
        return getattr(self.st, name)


def test_store_errors_are_retried_and_nothing_is_acknowledged_before_the_commit(broker, keys, tmp_path, caplog):
    msgs, expected = feed(keys, 30)
    st = _store.open(tmp_path / "r.sqlite")
    caplog.set_level(logging.INFO, logger="petrel.collect")
    col = Collector(FlakyStore(st, 3), keys, "127.0.0.1", broker.ports["plain"], insecure_plain=True,
                    client_id="flaky").start()
    pub = Publisher(broker.ports["plain"], "nodes-flaky")
    try:
        assert col.subscribed.wait(10)
        pub.send(msgs).wait()
        wait_for(lambda: st.counts()["readings"] == len(expected), 10, "everything stored")
        assert stored(tmp_path / "r.sqlite") == expected and st.counts()["refused"] == {}
        assert sum("store error" in r.getMessage() for r in caplog.records) == 3
    finally:
        col.stop()
        st.close()
        pub.close()


def test_a_device_provisioned_while_it_runs_is_known_without_a_restart(broker, keys, tmp_path):
    msgs, expected = feed(keys, 3)
    st = _store.open(tmp_path / "r.sqlite")
    first = {DEVICES[0]: keys[DEVICES[0]]}  # the registry as it was at start
    col = Collector(st, first, "127.0.0.1", broker.ports["plain"], insecure_plain=True,
                    client_id="reload", reload_keys=lambda: keys).start()
    pub = Publisher(broker.ports["plain"], "nodes-reload")
    try:
        assert col.subscribed.wait(10)
        pub.send(msgs).wait()
        wait_for(lambda: st.counts()["readings"] == len(expected), 10, "everything stored")
        assert st.counts()["refused"] == {}
    finally:
        col.stop()
        st.close()
        pub.close()


def test_a_time_request_is_answered_within_the_nodes_wait_even_behind_a_backlog(broker, keys, tmp_path):
    """The node waits about a second in its session for the answer to its
    health record's treq: measured from the node's publish to the answer's
    arrival, idle and while the committer works through a burst of 600
    messages of 60 readings (the kill tests' burst)."""
    msgs, expected = feed(keys, 600)
    d = DEVICES[0]
    st = _store.open(tmp_path / "r.sqlite")
    col = Collector(st, keys, "127.0.0.1", broker.ports["plain"], insecure_plain=True,
                    client_id="time-backlog").start()
    answers = {}
    w = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="time-watch")
    ready = threading.Event()
    w.on_subscribe = lambda *a: ready.set()
    w.on_message = lambda c, u, m: answers.setdefault(cbor2.loads(cbor2.loads(m.payload).value[2])["n"],
                                                      time.monotonic())
    w.connect("127.0.0.1", broker.ports["plain"])
    w.loop_start()
    w.subscribe("petrel/%s/down/time" % d, 1)
    node = Publisher(broker.ports["plain"], "node-asks-time")
    pub = Publisher(broker.ports["plain"], "nodes-time-burst")
    try:
        assert col.subscribed.wait(10) and ready.wait(5)

        def ask(nonce, seq):
            t0 = time.monotonic()
            node.c.publish("petrel/%s/health" % d, testmsg.health(keys[d], d, seq, {"treq": nonce}), qos=1)
            wait_for(lambda: nonce in answers, 5, "the time answer")
            return answers[nonce] - t0

        idle = [ask(100 + i, 300 + i) for i in range(5)]  # seqs above the burst's 1..200
        pub.send(msgs, rate=3000)
        wait_for(lambda: col._q.qsize() > 100, 10, "a backlog in the committer's queue")
        backlog = col._q.qsize()
        busy = ask(200, 310)
        stored_when_answered = st.counts()["messages"]
        pub.wait()
        wait_for(lambda: st.counts()["messages"] == 606, 60, "everything stored")
        lat = sorted(col.time_latency)
        print("time answer, node publish -> answer received: idle max %.1f ms; behind a queue of %d "
              "messages (%d of 606 stored) %.1f ms; in the collector (arrival -> publish) max %.2f ms"
              % (max(idle) * 1000, backlog, stored_when_answered, busy * 1000, lat[-1] * 1000))
        assert max(idle) < 0.5 and busy < 0.5  # well inside the node's second
        assert stored_when_answered < 606  # answered ahead of the queue, not after it
        assert col.counts["time"] == 6 and sorted(answers) == [100, 101, 102, 103, 104, 200]
    finally:
        col.stop()
        st.close()
        pub.close()
        node.close()
        w.loop_stop()
        w.disconnect()
