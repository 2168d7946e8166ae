"""lib/mqtt on the MicroPython VM against a real Mosquitto with TLS on loopback."""

import socket
import threading
import time

import pytest

from mqttcheck import Subscriber
from petrel.vm import run_source as run_vm

CLIENT = """
import sys, time, mqtt
args = sys.argv[1:]
def ctx(kind):
    if kind == "psk":
        return mqtt.tls_context(psk_identity=args[3].encode(), psk_key=bytes.fromhex(args[4]))
    if kind == "plain":
        return None
    ca = open(args[3], "rb").read()
    if kind == "mtls":
        return mqtt.tls_context(ca=ca, cert=open(args[4], "rb").read(), key=open(args[5], "rb").read())
    return mqtt.tls_context(ca=ca)
kind, port, host = args[0], int(args[1]), args[2]
c = mqtt.MQTTClient("vm-" + kind, "127.0.0.1", port, ssl_context=ctx(kind), server_hostname=host,
                    insecure=(kind == "plain"), timeout_ms=3000,
                    will=("petrel/vm/status", b"lost", True))
t0 = time.ticks_ms()
try:
    c.connect()
except mqtt.MQTTError as e:
    print("REFUSED", e)
    sys.exit(0)
print("CONNECTED", time.ticks_diff(time.ticks_ms(), t0))
c.publish("petrel/vm/status", b"online", qos=1, retain=True)
for i in range(60):
    c.publish("petrel/vm/up", b"reading %d" % i, qos=1)
c.wait_all()
print("ACKED", len(c.acked))
c.disconnect()
"""


def client(broker, kind, listener=None, host="localhost", extra=()):
    pki = broker.pki
    port = broker.ports[listener or kind]
    if kind == "psk":
        ident, key = extra or next(iter(broker.psk.items()))
        args = [kind, port, host, ident, key]
    elif kind == "plain":
        args = [kind, port, host]
    elif kind == "mtls":
        args = [kind, port, host, pki["ca"].with_suffix(".der"), pki["client"].with_suffix(".der"),
                pki["client_key"].with_suffix(".key.der")]
    else:
        args = [kind, port, host, extra[0] if extra else pki["ca"].with_suffix(".der")]
    return run_vm(CLIENT, args, timeout=60)


def connected_clients(broker, client_id):
    return broker.log().count("as %s " % client_id)


def run_vm_against_a_frozen_broker(broker, script, args, freeze_after_s, timeout_s):
    """Run script on the VM and freeze the broker (SIGSTOP) freeze_after_s
    into it, until the script ends (at most timeout_s) -> its output."""
    result = {}

    def run():
        result["out"] = run_vm(script, args, timeout=timeout_s)[1]

    t = threading.Thread(target=run)
    t.start()
    time.sleep(freeze_after_s)
    broker.pause()
    try:
        t.join(timeout_s - 5)
    finally:
        broker.resume()
    return result.get("out", "")


def test_tls_happy_path_delivers_every_qos1_message(broker):
    sub = Subscriber(broker, "petrel/vm/up")
    rc, out = client(broker, "tls")
    assert "ACKED 61" in out, out
    msgs = sub.wait(60)
    sub.close()
    assert [m[1] for m in msgs] == [b"reading %d" % i for i in range(60)]


def test_wrong_ca_is_refused_before_any_application_byte(broker):
    before = connected_clients(broker, "vm-tls")
    rc, out = client(broker, "tls", extra=[broker.pki["other_ca"].with_suffix(".der")])
    assert "REFUSED tls:" in out, out
    assert connected_clients(broker, "vm-tls") == before  # no CONNECT reached the broker


def test_wrong_hostname_is_refused(broker):
    before = connected_clients(broker, "vm-tls")
    rc, out = client(broker, "tls", host="wrong.example")
    assert "REFUSED tls:" in out and "CN" in out, out
    assert connected_clients(broker, "vm-tls") == before


def test_expired_certificate_is_refused(broker):
    rc, out = client(broker, "tls", listener="expired")
    assert "REFUSED tls:" in out and "expired" in out, out


def test_mutual_tls_requires_a_client_certificate(broker):
    before = connected_clients(broker, "vm-tls")
    rc, out = client(broker, "tls", listener="mtls")
    assert "REFUSED" in out, out
    assert connected_clients(broker, "vm-tls") == before
    rc, out = client(broker, "mtls")
    assert "ACKED 61" in out, out


def test_tls_psk_right_key_works_wrong_key_or_identity_refused(broker):
    rc, out = client(broker, "psk")
    assert "ACKED 61" in out, out
    ident, key = next(iter(broker.psk.items()))
    wrong = ("%02x" % (int(key[:2], 16) ^ 1)) + key[2:]
    rc, out = client(broker, "psk", extra=(ident, wrong))
    assert "REFUSED tls:" in out, out
    rc, out = client(broker, "psk", extra=("stranger", key))
    assert "REFUSED tls:" in out, out


def test_plain_tcp_only_when_insecure_and_it_warns():
    rc, out = run_vm("import mqtt\n"
                     "try:\n"
                     "    mqtt.MQTTClient('x', '127.0.0.1', 1883)\n"
                     "except ValueError as e:\n"
                     "    print('REFUSED', e)\n")
    assert "REFUSED MQTT needs a TLS context" in out
    rc, out = run_vm("import mqtt\n"
                     "try:\n"
                     "    mqtt.tls_context()\n"
                     "except ValueError as e:\n"
                     "    print('REFUSED', e)\n")
    assert "REFUSED a CA is needed" in out


def test_plain_connect_logs_a_warning(broker):
    rc, out = client(broker, "plain")
    assert "ACKED 61" in out
    assert "W " in out and "INSECURE plain TCP" in out


def test_frozen_broker_is_noticed_within_the_timeout(broker):
    script = """
import sys, time, mqtt
c = mqtt.MQTTClient("vm-frozen", "127.0.0.1", int(sys.argv[1]), insecure=True, timeout_ms=2000,
                    keepalive=4)
c.connect()
time.sleep(1.5)  # the broker freezes meanwhile
t0 = time.ticks_ms()
try:
    for i in range(20):
        c.publish("petrel/vm/up", b"x", qos=1)
    c.wait_all()
    print("NOT NOTICED")
except mqtt.MQTTError as e:
    print("GAVE UP", time.ticks_diff(time.ticks_ms(), t0), e)
"""
    out = run_vm_against_a_frozen_broker(broker, script, [broker.ports["plain"]], 0.7, 30)
    assert "GAVE UP" in out, out
    ms = int(out.split("GAVE UP")[1].split()[0])
    assert 1900 <= ms <= 6000  # the 2 s read deadline (plus a busy machine), not a hang


class FakeBroker:
    """A TCP server that answers CONNECT with CONNACK, then sends `evil`."""

    def __init__(self, evil, linger=3):
        self.evil = evil
        self.linger = linger
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        conn, _ = self.srv.accept()
        conn.settimeout(5)
        try:
            conn.recv(1024)
            conn.sendall(b"\x20\x02\x00\x00")
            # the client's publish, all of it (its header and message may come as two
            # writes): unread bytes at the close would make it a reset, not a close
            got = b""
            while len(got) < 2 or len(got) < 2 + got[1]:  # a short remaining length: one byte
                more = conn.recv(64)
                if not more:
                    break
                got += more
            conn.sendall(self.evil)
            time.sleep(self.linger)
        except OSError:
            pass
        conn.close()
        self.srv.close()


@pytest.mark.parametrize("evil,linger,why", [
    (b"\x40\xff\xff\xff\xff\x7f", 3, "malformed remaining length"),
    (b"\xd0\xff\xff\x03" + b"x" * 10, 3, "exceeds"),  # past max_packet, not a PUBLISH
    # a PUBLISH past max_packet is read past (mqtt_keepalive.skip): cut short, its deadline ends it
    (b"\x30\xff\xff\x03" + b"x" * 10, 3, "timeout"),
    (b"\x40\x02\x12\x34", 3, "unknown packet id"),
    (b"\x90\x03\x00\x01\x00", 3, "unexpected SUBACK"),  # for a PUBLISH's id: no SUBSCRIBE sent
    (b"\xb0\x02\x00\x01", 3, "unexpected packet"),  # UNSUBACK: never asked for
    (b"\x40\x05\x00", 3, "timeout"),  # announces 5 bytes, sends 1, then nothing
    (b"\x40", 0, "connection closed"),
    (b"\x34\x03\x00\x01t", 3, "malformed PUBLISH"),  # QoS 2, never asked for
    (b"\x32\x03\x00\x05t", 3, "malformed PUBLISH"),  # the topic runs past the packet
])
def test_malformed_or_oversized_packets_close_cleanly(evil, linger, why):
    fake = FakeBroker(evil, linger)
    script = """
import sys, mqtt
c = mqtt.MQTTClient("vm-x", "127.0.0.1", int(sys.argv[1]), insecure=True, timeout_ms=1500)
c.connect()
c.publish("t", b"x", qos=1)
try:
    c.wait_all()
    print("NO ERROR")
except mqtt.MQTTError as e:
    print("ERROR", e)
print("sock", c.sock)
"""
    rc, out = run_vm(script, [fake.port], timeout=20)
    assert rc == 0, out
    assert "ERROR" in out and why in out, out
    assert "sock None" in out  # the connection was closed, not left half-open


def test_a_publish_to_us_is_acknowledged_and_kept():
    # a persistent session's message (QoS 1, id 5), then the PUBACK of ours
    fake = FakeBroker(b"\x32\x07\x00\x01t\x00\x05hi" + b"\x40\x02\x00\x01", 1)
    script = """
import sys, mqtt
c = mqtt.MQTTClient("vm-x", "127.0.0.1", int(sys.argv[1]), insecure=True, timeout_ms=1500)
c.connect()
c.publish("t", b"x", qos=1)
c.wait_all()
print("INBOX", c.inbox, c.acked)
"""
    rc, out = run_vm(script, [fake.port], timeout=20)
    assert rc == 0, out
    assert "INBOX [(b't', b'hi', False)] [1]" in out, out


KEEPALIVE = """
import sys, time, select, mqtt
c = mqtt.MQTTClient("vm-ka", "127.0.0.1", int(sys.argv[1]), insecure=True, keepalive=1,
                    timeout_ms=1500)
c.connect()
pings = 0
t0 = time.ticks_ms()
try:
    while time.ticks_diff(time.ticks_ms(), t0) < int(sys.argv[2]):
        sent = c.ping_sent
        c.check()
        if sent is None and c.ping_sent is not None:
            pings += 1
        select.poll().poll(50)
    print("ALIVE pings=%d answered=%s" % (pings, c.ping_sent is None or time.ticks_diff(time.ticks_ms(), c.ping_sent) < 100))
except mqtt.MQTTError as e:
    print("GAVE UP after %d ms: %s" % (time.ticks_diff(time.ticks_ms(), t0), e))
"""


def test_keepalive_pings_an_idle_session(broker):
    rc, out = run_vm(KEEPALIVE, [broker.ports["plain"], 3500], timeout=30)
    assert "ALIVE" in out, out
    pings = int(out.split("pings=")[1].split()[0])
    assert pings >= 2  # every 0.75 x keepalive while idle (3-4 on a quiet machine)


def test_keepalive_notices_a_frozen_broker(broker):
    out = run_vm_against_a_frozen_broker(broker, KEEPALIVE, [broker.ports["plain"], 20000], 1.0, 40)
    assert "GAVE UP" in out and "ping" in out, out
    ms = int(out.split("after ")[1].split()[0])
    assert ms < 6000  # frozen at ~1 s; noticed within keepalive + timeout (+ a busy machine), not a hang


# Subscriptions against the real Mosquitto: each packet the client handles is
# logged in the order it arrived (M: a message to us, R: a retained one,
# S: our SUBACK, A: a PUBACK of ours).
SUBSCRIBER = """
import sys, time, mqtt
port, cid, clean, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "clean", sys.argv[4]
c = mqtt.MQTTClient(cid, "127.0.0.1", port, insecure=True, clean=clean, timeout_ms=3000)
print("PRESENT", c.connect())
sid = c.subscribe(topic, qos=1) if sys.argv[5] == "sub" else None
print("SUB_IN_FLIGHT", sid in c.inflight)
for i in range(int(sys.argv[6])):
    c.publish("petrel/%s/up" % cid, b"own %d" % i, qos=1)
if sys.argv[7] == "log":
    log = []
    deadline = time.ticks_add(time.ticks_ms(), 3000)
    while c.inflight:
        n_in, n_ack, sub = len(getattr(c, "inbox", ())), len(c.acked), sid in c.inflight
        c._process(deadline)
        if len(getattr(c, "inbox", ())) > n_in:
            log.append("R" if c.inbox[-1][2] else "M")
        elif len(c.acked) > n_ack:
            log.append("A")
        elif sub and sid not in c.inflight:
            log.append("S")
    print("LOG", "".join(log))
else:
    c.wait_all()
print("SUB_IN_FLIGHT_AFTER", sid in c.inflight, "REFUSED", getattr(c, "refused_subs", None))
print("INBOX", getattr(c, "inbox", []))
c.disconnect()
"""


def subscriber(broker, cid, clean, topic, sub, own, log):
    rc, out = run_vm(SUBSCRIBER, [broker.ports["plain"], cid, "clean" if clean else "keep", topic,
                                  "sub" if sub else "-", own, "log" if log else "-"], timeout=30)
    assert rc == 0, out
    return out


def publish(broker, topic, payload, retain=False):
    import paho.mqtt.publish as paho_publish

    paho_publish.single(topic, payload, qos=1, retain=retain, hostname="127.0.0.1",
                        port=broker.ports["plain"], client_id="host-pub")


def test_a_persistent_session_gets_what_was_published_while_it_slept_before_its_own_pubacks(broker):
    topic = "petrel/vm-persist/down"
    out = subscriber(broker, "vm-persist", False, topic, True, 0, False)
    assert "SUB_IN_FLIGHT True" in out  # subscribe() did not wait
    assert "SUB_IN_FLIGHT_AFTER False REFUSED []" in out  # wait_all() waited for the SUBACK
    for i in range(3):  # while the node sleeps
        publish(broker, topic, b"cmd %d" % i)
    out = subscriber(broker, "vm-persist", False, topic, False, 2, True)
    assert "PRESENT True" in out, out  # the broker kept the session
    assert "LOG MMMAA" in out, out  # the queued messages first, then the PUBACKs of ours
    assert "INBOX [(b'petrel/vm-persist/down', b'cmd 0', False), (b'petrel/vm-persist/down', b'cmd 1', " \
           "False), (b'petrel/vm-persist/down', b'cmd 2', False)]" in out, out
    # they were acknowledged: a third connect finds none waiting
    out = subscriber(broker, "vm-persist", False, topic, False, 1, True)
    assert "LOG A" in out and "INBOX []" in out, out


def test_a_fresh_subscription_gets_the_retained_message_before_the_pubacks_after_its_suback(broker):
    topic = "petrel/vm-ret/config"
    publish(broker, topic, b"interval=300", retain=True)
    out = subscriber(broker, "vm-ret", True, topic, True, 2, True)
    assert "PRESENT False" in out, out
    assert "LOG SRAA" in out, out
    assert "INBOX [(b'petrel/vm-ret/config', b'interval=300', True)]" in out, out
    assert "REFUSED []" in out, out


def test_a_port_taken_before_mosquitto_binds_it_is_picked_again(tmp_path, monkeypatch):
    # two test processes at once: another one may take a port between
    # free_ports() and mosquitto's bind; the broker starts on fresh ones
    import socket as _socket

    from petrel import broker as _broker

    taken = _socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    real, calls = _broker.free_ports, []

    def first_one_taken(n):
        ports = real(n)
        calls.append(ports)
        if len(calls) == 1:
            ports[0] = taken.getsockname()[1]
        return ports

    monkeypatch.setattr(_broker, "free_ports", first_one_taken)
    b = _broker.Broker(tmp_path / "b")
    try:
        b.start()
        assert len(calls) == 2 and taken.getsockname()[1] not in b.ports.values()
        _socket.create_connection(("127.0.0.1", b.ports["plain"]), timeout=2).close()
    finally:
        b.stop()
        taken.close()
