# app.session: one network session as steps the caller takes in order, each
# bounded by what is left of the budget; the radio is off after close() whatever
# happened. (Sessions against a real Mosquitto: host_tests/host/test_wake*.py.)
import json
import network
import simstate
import time

import clock
import machine
import rtcmem

from app import config, session
from ptest import raises, scratch_dir

PSK = "ab" * 32  # the stored 64-hex WPA2 key, as provisioning writes it
BUILD = 1764000000
# A CA certificate (DER) whose key was thrown away when it was made
# (openssl req -x509 -newkey ec P-256, 100 years): nothing can be signed by
# it, it only lets a certificate TLS context be made.
CA_DER = bytes.fromhex(
    "308201a63082014ba003020102021420297d25e76c675dfffa5c1507bce5aa6ed10c00300a06082a8648ce3d04030230"
    "273125302306035504030c1c50657472656c207465737420434120286e6f206b6579206b657074293020170d32363132"
    "30323138323230305a180f32313236313130383138323230305a30273125302306035504030c1c50657472656c207465"
    "737420434120286e6f206b6579206b657074293059301306072a8648ce3d020106082a8648ce3d030107034200048420"
    "6fb0e0104f6a8e65c5614e9325ace896f1e3778db4e54ce5f1aa1cbab488dfd8621b33bcbcea6ff3c8d26cc1967e1f00"
    "d3b1503f658c483bbeaca1a8df8ba3533051301d0603551d0e041604142749727ed9bf78415895dcd0e7bcd3d7099f35"
    "f3301f0603551d230418301680142749727ed9bf78415895dcd0e7bcd3d7099f35f3300f0603551d130101ff04053003"
    "0101ff300a06082a8648ce3d040302034900304602210087a5d4073412e7fcc8a9c9b678c583a2341e98dbd288036ef7"
    "8f672c9b0627d5022100d352d3f54d9123225ceb2ab29c5677172945421d488eae2312af3b1c49b2867e"
)


def node_config(port=1, budget_ms=10000):
    """A provisioned node's configuration, read back by config.load as the node does."""
    d, _ = scratch_dir()
    with open(d + "/ca.der", "wb") as f:
        f.write(CA_DER)
    with open(d + "/config.json", "w") as f:
        json.dump({"device_id": "n1", "network_budget_ms": budget_ms, "wifi": {"ssid": "home"},
                   "broker": {"host": "127.0.0.1", "port": port, "ca": d + "/ca.der"}}, f)
    with open(d + "/secrets.json", "w") as f:
        json.dump({"hmac_key": "11" * 32, "psk_key": "22" * 32, "wifi_psk": PSK}, f)
    cfg = config.load(d + "/config.json", d + "/secrets.json", d + "/config.good.json")
    assert cfg.source == "config.json"
    return cfg


def home_ap(up=True):
    simstate.board.aps = [{"ssid": "home", "bssid": "a0b1c2d3e4f5", "channel": 6, "rssi": -61,
                           "password": PSK, "up": up}]


def radio_on():
    return network.WLAN(network.STA_IF).active()


def run_all(s, clk=None):
    """Every step in order, as the wake cycle takes them."""
    synced = None
    try:
        if s.open():
            synced = s.sync_clock(clk)
            if s.connect():
                s.drain([], None)
                s.publish("t", b"x")
    finally:
        s.close()
    return synced


def test_no_access_point_ends_at_wifi_and_leaves_the_radio_off():
    cfg = node_config(budget_ms=5000)
    home_ap(up=False)
    t0 = time.ticks_ms()
    s = session.Session(cfg, machine.RTC())
    assert run_all(s) is None
    assert s.result.startswith("wifi:") and s.rssi is None and s.sent == 0
    assert not s.auth_refused  # a missing network is not someone else's key
    assert not radio_on()
    assert time.ticks_diff(time.ticks_ms(), t0) <= 5000  # within the budget


def test_later_steps_do_nothing_after_a_failed_one():
    cfg = node_config()
    home_ap(up=False)
    s = session.Session(cfg, machine.RTC())
    assert not s.open()
    why = s.result
    assert s.sync_clock(clock.Clock(BUILD)) is None
    assert not s.connect() and s.drain([1, 2], None) == 0 and not s.publish("t", b"x")
    s.close()
    assert s.result == why  # the first failure is the one reported
    assert not radio_on()


def test_broker_not_listening_is_a_link_failure_not_an_auth_refusal():
    cfg = node_config(port=1)  # nothing listens on 127.0.0.1:1
    home_ap()
    clk = clock.Clock(BUILD, rtcmem.Region(machine.RTC(), 1280, 64))
    assert not clk.known()
    s = session.Session(cfg, machine.RTC())
    synced = run_all(s, clk)
    # the link came up (RSSI and its time measured) and NTP set the clock
    # before the broker was tried: a broker outage does not stop the clock
    assert s.rssi == -61 and s.wifi_ms > 0
    assert clk.known() and synced is not None
    before, after = synced
    assert after - before > 365 * 86400 * 1000  # the RTC started at 2000, NTP says 2026
    assert s.result.startswith("broker:") and not s.auth_refused
    assert not radio_on()


def synced_by_session(clk, ppm=None, answer=None):
    """One session's NTP step (answer: what NTP says instead of the truth)."""
    import ntptime

    real = ntptime.time
    if answer is not None:
        ntptime.time = lambda: real() + answer  # sent twice when asked twice, as a forger does
    s = session.Session(node_config(), machine.RTC())
    try:
        assert s.open()
        return s.sync_clock(clk, ppm)
    finally:
        ntptime.time = real
        s.close()


def test_ntp_answers_the_rtc_cannot_account_for_are_refused_counted_and_measure_nothing():
    home_ap()
    clk = clock.Clock(BUILD, rtcmem.Region(machine.RTC(), 1280, 64))
    assert synced_by_session(clk) is not None and clk.refused == 0
    time.sleep(3600)
    now = clk.unix()
    for ppm in (None, 20000):
        assert synced_by_session(clk, ppm, answer=25 * 365 * 86400) is None  # decades ahead
    assert synced_by_session(clk, None, answer=600) is None  # 10 minutes in an hour: not drift
    assert synced_by_session(clk, 100000) is None  # the RTC 6 min behind by the learnt drift: it is not
    assert clk.refused == 4 and abs(clk.unix() - now) <= 2  # nothing moved
    b = simstate.board
    b.set_rtc_us(b.rtc_us() - 30 * 1000000)  # the RTC fell 30 s behind: a true correction
    before, after = synced_by_session(clk)
    assert 29000 <= after - before <= 31000 and clk.refused == 4


def test_no_budget_left_for_the_broker():
    cfg = node_config(budget_ms=5000)
    home_ap()
    s = session.Session(cfg, machine.RTC())
    assert s.open()
    time.sleep_ms(max(0, s.budget.left() - 400))  # the link took (nearly) all of it
    assert not s.connect()
    assert s.result == "broker:no-budget"
    s.close()
    assert not radio_on()


# app.session.due / failed: whether a wake tries the uplink, and the backoff
# (full jitter, capped) after a failed one.
from app import state  # noqa: E402


def uplink_config():
    return config.check({"wifi": {"ssid": "s"}, "broker": {"host": "b", "ca": "/certs/ca.der"}})


def test_uplink_due_on_a_full_batch_or_an_alarm_and_never_inside_the_backoff():
    st = state.State()
    cfg = uplink_config()
    st.samples = 11
    assert not session.due(st, cfg, 1000, False)
    assert session.due(st, cfg, 1000, True)
    st.samples = 12
    assert session.due(st, cfg, 1000, False)
    waits = []
    for _ in range(12):
        session.failed(st, 1000, "test")
        waits.append(st.up_next - 1000)
        assert not session.due(st, cfg, 1000, True) or st.up_next == 1000
    assert st.up_fails == 12
    assert max(waits) <= session.BACKOFF_CAP_S
    assert session.due(st, cfg, st.up_next, False)  # the wait is over
    # an RTC that went back (power cut) does not leave the node waiting an age
    st.up_next = 10 ** 6
    assert session.due(st, cfg, 0, False)
    cfg.broker = None
    assert not session.due(st, cfg, st.up_next, True)


# Session.fetch: an update's next chunks in the session (app.update.wanted),
# against a broker end the test writes (a loopback socket, as test_mqtt).
def broker_pair():
    """A client past CONNECT on a loopback socket and the broker's end of it -> (c, peer, srv)."""
    import socket

    import mqtt

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in range(47850, 47870):
        try:
            srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            break
        except OSError:
            continue
    srv.listen(1)
    c = mqtt.MQTTClient("n1", "127.0.0.1", port, insecure=True, timeout_ms=2000, window=4)
    c.raw = c.sock = socket.socket()
    c.raw.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    peer, _ = srv.accept()
    peer.settimeout(2)
    return c, peer, srv


def read_exactly(peer, n):
    got = b""
    while len(got) < n:
        more = peer.recv(n - len(got))
        assert more, "closed after %r" % got
        got += more
    return got


def qos0(topic, msg):
    import mqtt

    body = mqtt._str(topic) + msg
    return mqtt._head(0x30 | 1, len(body)) + body  # retained, as the broker sends a retained one


def chunk_topics(n):
    return ["petrel/update/3fa9c0d1e2b34455/%d" % i for i in range(n)]


def fetch_session(budget_ms=10000):
    s = session.Session(node_config(budget_ms=budget_ms), machine.RTC())
    s.client, peer, srv = broker_pair()
    return s, peer, srv


def filters(topics, qos=None):
    out = b""
    for t in topics:
        out += bytes((0, len(t))) + t.encode() + (bytes((qos,)) if qos is not None else b"")
    return out


def test_fetch_subscribes_once_at_qos0_takes_the_chunks_and_leaves_them_with_the_disconnect():
    s, peer, srv = fetch_session()
    topics = chunk_topics(3)
    # the broker's answers, there before the client reads: the SUBACK (one code
    # per filter), the retained chunks, then the PUBACK of the status at close
    peer.send(b"\x90\x05\x00\x01\x00\x00\x00")
    for i, t in enumerate(topics):
        peer.send(qos0(t, b"chunk%d" % i + bytes(32)))
    peer.send(b"\x40\x02\x00\x02")
    t0 = time.ticks_ms()
    assert s.fetch(topics) == 3 and s.fetch_acked
    assert time.ticks_diff(time.ticks_ms(), t0) < 1000  # all came: no idle wait
    body = b"\x00\x01" + filters(topics, 0)
    assert read_exactly(peer, 2 + len(body)) == bytes((0x82, len(body))) + body  # one SUBSCRIBE, QoS 0
    s.close()
    assert s.result == "ok"
    assert [m for t, m, r in s.inbox] == [b"chunk%d" % i + bytes(32) for i in range(3)]
    status = read_exactly(peer, 2 + 2 + len("petrel/n1/status") + 2 + len(b"sleeping"))
    assert status[0] == 0x33 and status.endswith(b"sleeping")  # retained QoS 1, as goodbye sends it
    unsub = b"\x00\x03" + filters(topics)
    assert read_exactly(peer, 2 + len(unsub) + 2) == bytes((0xA2, len(unsub))) + unsub + b"\xe0\x00"
    peer.settimeout(0.2)
    assert peer.recv(10) == b""  # then closed: the UNSUBACK is not waited for
    for x in (peer, srv):
        x.close()


def test_fetch_stops_when_nothing_more_comes_after_the_suback_and_within_the_budget():
    s, peer, srv = fetch_session()
    topics = chunk_topics(4)
    peer.send(b"\x90\x06\x00\x01\x00\x00\x00\x00")
    peer.send(qos0(topics[0], b"c0"))  # the others are not on the broker
    t0 = time.ticks_ms()
    assert s.fetch(topics) == 1
    waited = time.ticks_diff(time.ticks_ms(), t0)
    assert session.FETCH_IDLE_MS <= waited <= 3 * session.FETCH_IDLE_MS, waited
    assert s.result is None and s.client.sock is not None  # the session goes on
    s.client.close()
    for x in (peer, srv):
        x.close()
    # a budget nearly spent: the fetch leaves the close its 500 ms
    s, peer, srv = fetch_session(budget_ms=2000)
    peer.send(b"\x90\x06\x00\x01\x00\x00\x00\x00")  # a SUBACK, then nothing at all
    time.sleep_ms(300)
    t0 = time.ticks_ms()
    assert s.fetch(topics) == 0
    assert s.budget.left() >= 400, s.budget.left()
    s.client.close()
    for x in (peer, srv):
        x.close()


def test_fetch_asks_no_more_than_the_inbox_holds_and_nothing_without_a_session():
    s, peer, srv = fetch_session()
    s.client.inbox = [(b"petrel/n1/down/config", b"x", True)] * 14  # 2 places left of 16
    peer.send(b"\x90\x04\x00\x01\x00\x00")
    topics = chunk_topics(4)
    for t in topics[:2]:
        peer.send(qos0(t, b"c"))
    assert s.fetch(topics) == 2
    body = b"\x00\x01" + filters(topics[:2], 0)
    assert read_exactly(peer, 2 + len(body)) == bytes((0x82, len(body))) + body
    s.client.close()
    for x in (peer, srv):
        x.close()
    s = session.Session(node_config(), machine.RTC())
    assert s.fetch(topics) == 0  # never connected


def test_a_suback_refusing_one_filter_lists_the_subscribe_and_the_session_goes_on():
    import mqtt
    import mqtt_keepalive

    c, peer, srv = broker_pair()
    pid = mqtt_keepalive.subscribe_many(c, ["a/0", "a/1"], 0)
    peer.send(b"\x90\x04" + bytes((0, pid)) + b"\x00\x80")
    c.wait_all()
    assert c.refused_subs == [pid] and c.sock is not None and not c.inflight
    pid = mqtt_keepalive.subscribe_many(c, ["a/2"], 0)
    peer.send(b"\x90\x02" + bytes((0, pid)))  # no return code at all: malformed
    assert "SUBACK" in str(raises(mqtt.MQTTError, c.wait_all))
    for x in (peer, srv):
        x.close()


def test_fetch_ends_at_once_when_the_broker_refuses_the_chunk_topics():
    s, peer, srv = fetch_session()
    topics = chunk_topics(2)
    peer.send(b"\x90\x04\x00\x01\x80\x80")  # its ACL does not let the node have them
    t0 = time.ticks_ms()
    assert s.fetch(topics) == 0
    assert time.ticks_diff(time.ticks_ms(), t0) < session.FETCH_IDLE_MS
    assert s.result is None and s.client.refused_subs == [1]
    assert s.fetch_acked  # answered: the chunks are not to be had (app.cycle counts it a miss)
    s.client.close()
    for x in (peer, srv):
        x.close()


def test_a_fetch_skipped_or_never_answered_is_not_taken_for_chunks_gone():
    # app.cycle counts a session whose fetch was answered and brought no
    # progress toward giving the download up: a fetch with no SUBACK is no
    # evidence (finding 8), whether skipped or cut short by the budget
    topics = chunk_topics(2)
    s, peer, srv = fetch_session()
    s.client.inbox = [(b"petrel/n1/down/config", b"x", True)] * 16  # no room for a chunk
    assert s.fetch(topics) == 0 and not s.fetch_acked
    s.client.close()
    for x in (peer, srv):
        x.close()
    s, peer, srv = fetch_session(budget_ms=2000)  # the broker says nothing before the budget ends
    assert s.fetch(topics) == 0 and not s.fetch_acked
    s.client.close()
    for x in (peer, srv):
        x.close()
    s, peer, srv = fetch_session()
    peer.send(b"\x90\x04\x00\x01\x00\x00")  # answered, and none of them there
    assert s.fetch(topics) == 0 and s.fetch_acked
    s.client.close()
    for x in (peer, srv):
        x.close()
