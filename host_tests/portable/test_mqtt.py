# lib/mqtt pieces that need no broker: packet framing and the secure defaults.
import mqtt
from ptest import raises


def test_remaining_length_boundaries():
    for n, head in ((0, b"\x30\x00"), (127, b"\x30\x7f"), (128, b"\x30\x80\x01"),
                    (16383, b"\x30\xff\x7f"), (16384, b"\x30\x80\x80\x01")):
        pkt = mqtt._head(0x30, n) + b"x" * n
        assert pkt[:len(head)] == head and len(pkt) == len(head) + n


def test_strings_are_length_prefixed_utf8():
    assert mqtt._str("petrel/é") == b"\x00\x09petrel/\xc3\xa9"


def test_no_plain_tcp_without_saying_so():
    e = raises(ValueError, mqtt.MQTTClient, "node", "127.0.0.1", 1883)
    assert "insecure" in str(e)
    raises(ValueError, mqtt.tls_context)
    c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
    raises(ValueError, c.publish, "t", b"x", 2)


def test_publish_without_a_connection_is_an_mqtt_error():
    c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
    raises(mqtt.MQTTError, c.publish, "t", b"x", 1)


class Writes:
    """A connected socket that keeps what is written to it, write by write."""

    def __init__(self):
        self.writes = []

    def sendall(self, b):
        self.writes.append(b)


def test_a_publish_is_its_header_then_the_message_uncopied_or_with_nagle_one_write():
    msg = bytearray(bytes(range(200)) * 4)  # 800 B: a remaining length of two bytes
    # PUBLISH QoS 1 retained, remaining length 2 + 12 + 2 + 800 = 816, topic, id 1
    head = b"\x33\xb0\x06\x00\x0cpetrel/n1/up\x00\x01"
    c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
    c.sock = Writes()
    assert c.publish("petrel/n1/up", msg, qos=1, retain=True) == 1
    assert c.sock.writes[0] == head
    assert c.sock.writes[1] is msg  # written as it is: no second 800 B at the heap's peak
    assert len(c.sock.writes) == 2
    c.nodelay = False  # Nagle on: a second write would wait out the broker's delayed ACK
    c.sock = Writes()
    assert c.publish("petrel/n1/up", msg, qos=1, retain=True) == 2
    assert c.sock.writes == [head[:-1] + b"\x02" + msg]  # the same bytes, in one write


def test_disconnect_is_two_bytes_in_one_write_then_closed():
    c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
    c.sock = w = Writes()
    c.disconnect()
    assert w.writes == [b"\xe0\x00"] and c.sock is None
    c.disconnect()  # again, not connected: nothing to say, no error


class NoOptions:
    """socket for mqtt.connect() whose sockets have no setsockopt() and refuse
    to connect: connect() stops at the TCP stage, after the option."""

    def getaddrinfo(self, host, port):
        return [(2, 1, 6, "", (host, port))]

    def socket(self):
        return self

    def settimeout(self, t):
        pass

    def connect(self, addr):
        raise OSError(111)  # ECONNREFUSED

    def close(self):
        pass


class Sockets(NoOptions):
    """The same with setsockopt(): its calls recorded, refused (OSError) if refuse."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.options = []

    def setsockopt(self, level, option, value):
        self.options.append((level, option, value))
        if self.refuse:
            raise OSError(92)  # ENOPROTOOPT


def test_connect_sets_tcp_nodelay_and_a_socket_that_refuses_it_means_one_write_a_packet():
    real = mqtt.socket
    try:
        for refuse in (False, True):
            mqtt.socket = Sockets(refuse)
            c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
            assert "tcp:" in str(raises(mqtt.MQTTError, c.connect))
            assert mqtt.socket.options == [(6, 1, 1)]  # IPPROTO_TCP, TCP_NODELAY (lwIP and Linux)
            assert c.nodelay is not refuse  # refused: this client writes each packet whole
        mqtt.socket = NoOptions()
        c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
        assert "tcp:" in str(raises(mqtt.MQTTError, c.connect)) and c.nodelay is False
        assert mqtt.MQTTClient.nodelay  # other clients still try
        mqtt.socket = Sockets(False)
        c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
        c.nodelay = False  # asked for Nagle: the option is left alone
        raises(mqtt.MQTTError, c.connect)
        assert mqtt.socket.options == []
    finally:
        mqtt.socket = real


def test_waiting_past_the_deadline_is_an_error_not_a_spin():
    import socket

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in range(47810, 47830):  # a free loopback port (MicroPython has no getsockname)
        try:
            srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            break
        except OSError:
            continue
    srv.listen(1)
    c = mqtt.MQTTClient("node", "127.0.0.1", port, insecure=True, timeout_ms=0)
    c.raw = socket.socket()
    c.raw.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    c.sock = c.raw
    c.inflight = {1: 0}  # a PUBACK that never comes, and no time left
    raises(mqtt.MQTTError, c.wait_all)
    assert c.sock is None  # closed, not left half-open
    srv.close()


def connected_pair(window=8):
    """A client already past CONNECT on a loopback socket, and the broker's end
    of it (a plain socket: the test writes the broker's packets) -> (c, peer, srv)."""
    import socket

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in range(47830, 47850):
        try:
            srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            break
        except OSError:
            continue
    srv.listen(1)
    c = mqtt.MQTTClient("node", "127.0.0.1", port, insecure=True, timeout_ms=2000, window=window)
    c.raw = c.sock = socket.socket()
    c.raw.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    peer, _ = srv.accept()
    peer.settimeout(2)
    return c, peer, srv


class Talker:
    """A broker's socket with a PINGRESP always waiting, without end."""

    def __init__(self):
        self.reads = 0
        self.left = b""

    def settimeout(self, t):
        pass

    def recv(self, n):
        self.reads += 1
        if self.reads > 100000:
            raise RuntimeError("still reading, long past the deadline")
        if not self.left:
            self.left = b"\xd0\x00"
        out, self.left = self.left[:n], self.left[n:]
        return out

    def close(self):
        pass


def test_a_broker_that_keeps_talking_cannot_hold_wait_all_past_its_deadline():
    # PINGRESPs, never the PUBACK: every read finds data waiting, so only the
    # deadline, checked before each read, ends the wait (and says so)
    import time

    c = mqtt.MQTTClient("node", "127.0.0.1", 1883, insecure=True)
    c.raw = c.sock = talker = Talker()
    c.inflight = {1: time.ticks_ms()}
    e = raises(mqtt.MQTTError, c.wait_all, 20)
    assert "timeout" in str(e) and c.sock is None
    assert 0 < talker.reads < 100000


def read_exactly(peer, n):
    got = b""
    while len(got) < n:
        got += peer.recv(n - len(got))
    return got


def test_subscribe_is_one_write_not_waited_for_and_wait_all_waits_for_its_suback():
    c, peer, srv = connected_pair()
    pid = c.subscribe("petrel/n1/down", qos=1)
    # SUBSCRIBE (0x82), remaining length, packet id, the topic, the QoS asked
    want = b"\x82\x13" + bytes((pid >> 8, pid & 255)) + b"\x00\x0epetrel/n1/down\x01"
    assert read_exactly(peer, len(want)) == want
    assert pid in c.inflight  # returned at once, its SUBACK still to come
    pid2 = c.publish("petrel/n1/up", b"x", qos=1)
    assert pid2 != pid
    read_exactly(peer, 2 + 2 + 12 + 1)
    peer.send(b"\x90\x03" + bytes((pid >> 8, pid & 255)) + b"\x01")
    peer.send(b"\x40\x02" + bytes((pid2 >> 8, pid2 & 255)))
    c.wait_all()
    assert not c.inflight and c.acked == [pid2]  # a SUBACK is not a PUBACK
    assert c.refused_subs == [] and c.sock is not None
    for x in (peer, srv):
        x.close()
    c.close()


def test_a_refused_subscription_is_listed_and_the_session_goes_on():
    c, peer, srv = connected_pair()
    ok = c.subscribe("petrel/n1/down")
    bad = c.subscribe("$SYS/#")
    peer.send(b"\x90\x03" + bytes((bad >> 8, bad & 255)) + b"\x80")
    peer.send(b"\x90\x03" + bytes((ok >> 8, ok & 255)) + b"\x00")
    c.wait_all()
    assert c.refused_subs == [bad]
    assert c.sock is not None
    c.close()
    for x in (peer, srv):
        x.close()


def test_acks_that_do_not_match_a_subscription_close_the_session():
    for wrong, why in ((b"\x90\x03\x00\x07\x00", "SUBACK"),  # for an id never used
                       (b"\x40\x02\x00\x01", "unknown packet id 1"),  # PUBACK for the SUBSCRIBE's id
                       (b"\x92\x03\x00\x01\x00", "SUBACK"),  # reserved flags set
                       (b"\x90\x03\x00\x02\x00", "SUBACK")):  # for the PUBLISH's id
        c, peer, srv = connected_pair()
        assert c.subscribe("t") == 1
        assert c.publish("t", b"x", qos=1) == 2
        peer.send(wrong)
        assert why in str(raises(mqtt.MQTTError, c.wait_all))
        assert c.sock is None
        for x in (peer, srv):
            x.close()


def test_messages_to_us_keep_topic_payload_and_retained_flag_and_qos1_is_acked():
    c, peer, srv = connected_pair()
    c.subscribe("cmd/#")
    read_exactly(peer, 2 + 2 + 7 + 1)
    # a retained QoS 1 message (id 9), a live QoS 0 one, then the SUBACK
    peer.send(b"\x33\x0b\x00\x05cmd/a\x00\x09on")
    peer.send(b"\x30\x09\x00\x05cmd/bhi")
    peer.send(b"\x90\x03\x00\x01\x01")
    c.wait_all()
    assert c.inbox == [(b"cmd/a", b"on", True), (b"cmd/b", b"hi", False)]
    assert read_exactly(peer, 4) == b"\x40\x02\x00\x09"  # the QoS 1 one acknowledged
    c.close()
    for x in (peer, srv):
        x.close()


def test_a_full_inbox_does_not_accept_more():
    c, peer, srv = connected_pair()
    c.subscribe("cmd/#")
    read_exactly(peer, 2 + 2 + 7 + 1)
    for i in range(17):  # QoS 1, ids 100..116: the 17th finds the inbox full
        peer.send(b"\x32\x0b\x00\x05cmd/a" + bytes((0, 100 + i)) + b"%02d" % i)
    peer.send(b"\x90\x03\x00\x01\x01")
    c.wait_all()
    assert len(c.inbox) == 16 and c.inbox[-1][1] == b"15"
    acks = read_exactly(peer, 16 * 4)
    assert acks[-4:] == b"\x40\x02\x00\x73"  # id 115 is the last acknowledged
    peer.settimeout(0.2)
    raises(OSError, peer.recv, 4)  # no PUBACK for 116: the broker keeps it for the next connect
    c.close()
    for x in (peer, srv):
        x.close()


def test_a_publish_past_max_packet_is_read_past_acked_and_noted_and_the_session_goes_on():
    # one such message queued in a persistent session would otherwise end
    # every session the node opens, for good
    c, peer, srv = connected_pair()
    c.max_packet = 64
    pid = c.publish("petrel/n1/up", b"x", qos=1)
    read_exactly(peer, 2 + 2 + 12 + 2 + 1)
    body = b"\x00\x0dcmd/n1/config" + b"\x00\x2a" + b"z" * 300  # QoS 1, id 42, 300 bytes
    peer.send(mqtt._head(0x33, len(body)) + body)
    peer.send(b"\x30\x09\x00\x05cmd/bhi")  # and the packet after it is read as usual
    peer.send(b"\x40\x02" + bytes((pid >> 8, pid & 255)))
    c.wait_all()
    assert c.inbox == [(b"cmd/n1/config", None, True), (b"cmd/b", b"hi", False)]
    assert read_exactly(peer, 4) == b"\x40\x02\x00\x2a"  # acknowledged: not sent again
    assert c.sock is not None
    # a packet past max_packet that is not a PUBLISH still ends the session
    peer.send(mqtt._head(0xD0, 100) + b"\0" * 100)
    raises(mqtt.MQTTError, c._process, mqtt.time.ticks_add(mqtt.time.ticks_ms(), 1000))
    assert c.sock is None
    for x in (peer, srv):
        x.close()


def test_wait_msg_returns_at_the_time_limit_with_the_session_up_or_when_the_message_came():
    import mqtt_keepalive

    c, peer, srv = connected_pair()

    def came(inbox):
        return any(t == b"down/time" for t, m, r in inbox)

    assert not mqtt_keepalive.wait_msg(c, 200, came, mqtt.MQTTError)
    assert c.sock is not None  # nothing came in time: not an error, nothing closed
    peer.send(b"\x30\x09\x00\x05cmd/bhi")  # another message first
    peer.send(b"\x30\x0e\x00\x09down/timet=1")
    assert mqtt_keepalive.wait_msg(c, 2000, came, mqtt.MQTTError)
    assert [t for t, m, r in c.inbox] == [b"cmd/b", b"down/time"]
    peer.close()  # the broker goes: an error, not a wait
    raises(mqtt.MQTTError, mqtt_keepalive.wait_msg, c, 2000, lambda inbox: False, mqtt.MQTTError)
    srv.close()
