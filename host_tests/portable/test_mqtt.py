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
