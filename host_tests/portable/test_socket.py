# boards/sim/socket: no traffic without the simulated link, link loss seen by
# firmware, radio time (round trips, airtime) and TLS handshake time from the
# board's figures, never host time. (The ledger itself: test_simledger.py.)
import errno
import sys

import simstate
import socket
import time
from ptest import raises, station

MP = sys.implementation.name == "micropython"


def peer():
    """A listening host socket on loopback (the broker's place) -> (srv, addr)."""
    srv = socket.host.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in range(47840, 47900):  # MicroPython has no getsockname
        try:
            addr = socket.host.getaddrinfo("127.0.0.1", port)[0][-1]
            srv.bind(addr)
            break
        except OSError:
            continue
    srv.listen(2)
    return srv, addr


def session():
    """A connected station and a TCP session to a peer -> (wlan, client, server side, srv)."""
    w = station()
    srv, addr = peer()
    c = socket.socket()
    c.connect(socket.getaddrinfo("127.0.0.1", addr_port(addr))[0][-1])
    s, _ = srv.accept()
    return w, c, s, srv


def addr_port(addr):
    if isinstance(addr, tuple):
        return addr[1]
    return (addr[2] << 8) | addr[3]  # MicroPython: a raw sockaddr_in


def total(b):
    p = b.phases()
    return p["boot"] + p["cpu"] + p["radio"] + p["tls"] + p["sleep"]


def test_no_name_lookup_before_wifi_has_an_address():
    w = station(connect=False)
    assert raises(OSError, socket.getaddrinfo, "127.0.0.1", 1883).args[0] == -202
    w.connect("home", "correct horse")
    time.sleep_ms(500)  # associating, DHCP still to come
    assert raises(OSError, socket.getaddrinfo, "127.0.0.1", 1883).args[0] == -202
    while not w.isconnected():
        time.sleep_ms(10)
    assert socket.getaddrinfo("127.0.0.1", 1883)
    t0 = simstate.board.world_us
    socket.getaddrinfo("localhost", 1883)  # a name costs a DNS round trip, an address none
    assert simstate.board.world_us - t0 == simstate.board.rtt_us


def test_without_wifi_used_this_boot_sockets_are_the_hosts_unless_the_link_is_required():
    assert socket.getaddrinfo("127.0.0.1", 1883)  # the MQTT tests on loopback
    simstate.board.link_required = True  # as in the boot runner: real firmware boots
    assert raises(OSError, socket.getaddrinfo, "127.0.0.1", 1883).args[0] == -202


def test_an_access_point_going_down_mid_session_breaks_the_next_send():
    w, c, s, srv = session()
    c.send(b"hello")
    assert s.recv(5) == b"hello"
    b = simstate.board
    b.schedule(b.world_us + 1000000, "ap", "home", False)
    time.sleep_ms(500)
    assert c.send(b"still up") == 8
    time.sleep_ms(600)
    assert raises(OSError, c.send, b"x").args[0] == errno.ECONNABORTED
    assert raises(OSError, c.recv, 10).args[0] == errno.ECONNABORTED
    assert raises(OSError, socket.getaddrinfo, "127.0.0.1", 1).args[0] == -202
    b.schedule(b.world_us + 1000, "ap", "home", True)  # it comes back: this session stays dead
    time.sleep_ms(10)
    assert raises(OSError, c.write, b"x").args[0] == errno.ECONNABORTED
    c.close()
    s.close()
    srv.close()


def test_disconnect_or_radio_off_aborts_sessions():
    for how in ("disconnect", "off"):
        w, c, s, srv = session()
        if how == "off":
            w.active(False)
        else:
            w.disconnect()
        assert raises(OSError, c.sendall, b"x").args[0] == errno.ECONNABORTED
        assert raises(OSError, c.readinto, bytearray(4)).args[0] == errno.ECONNABORTED
        srv2, addr = peer()
        assert raises(OSError, socket.socket().connect, addr).args[0] == errno.EHOSTUNREACH
        for x in (c, s, srv, srv2):
            x.close()


def test_traffic_costs_round_trips_and_airtime_never_host_time():
    b = simstate.board
    b.radio_kbps = 1000  # 8 us a byte
    station()
    srv, addr = peer()
    before = b.phases()
    c = socket.socket()
    c.connect(addr)
    s, _ = srv.accept()
    assert b.phases()["radio"] - before["radio"] == b.rtt_us  # SYN, SYN-ACK
    t0 = b.world_us
    c.sendall(b"x" * 100)
    assert b.world_us - t0 == 800
    s.send(b"y" * 50)
    t0 = b.world_us
    got = b""
    while len(got) < 50:
        got += c.recv(50 - len(got))  # the answer: one round trip, then its bytes
    assert b.world_us - t0 == b.rtt_us + 400
    assert (b.tx_bytes, b.rx_bytes) == (100, 50)
    p = b.phases()
    assert p["cpu"] == before["cpu"] and p["tls"] == 0
    assert total(b) == b.world_us
    for x in (c, s, srv):
        x.close()


def test_a_read_that_times_out_lets_its_timeout_pass_on_the_virtual_clock():
    w, c, s, srv = session()
    c.settimeout(0.05)
    t0 = simstate.board.world_us
    assert raises(OSError, c.recv, 10).args[0] == errno.ETIMEDOUT
    assert simstate.board.world_us - t0 == 50000
    c.setblocking(False)
    assert raises(OSError, c.recv, 10).args[0] == errno.EAGAIN
    assert c.read(10) is None  # a stream read: None when nothing is there yet
    for x in (c, s, srv):
        x.close()


def test_poll_sees_data_on_a_simulated_socket():
    import select

    w, c, s, srv = session()
    p = select.poll()
    p.register(c, select.POLLIN)
    assert not p.poll(0)
    s.send(b"!")
    time.sleep_ms(1)
    for _ in range(100):  # loopback: the byte is there almost at once
        if p.poll(10):
            break
    assert p.poll(0)
    assert c.recv(1) == b"!"
    if MP:  # the VM polls through the stream ioctl: a lost link shows as an error
        w.disconnect()
        assert p.poll(0)[0][1] & (select.POLLERR | select.POLLHUP)
    for x in (c, s, srv):
        x.close()


def hello(suites):
    """A TLS 1.2 ClientHello record offering these cipher suites."""
    body = b"\x03\x03" + b"\x00" * 32 + b"\x00" + bytes([0, 2 * len(suites)])
    for x in suites:
        body += bytes([x >> 8, x & 255])
    body += b"\x01\x00"  # compression: null
    hs = b"\x01" + bytes([0, len(body) >> 8, len(body) & 255]) + body
    return b"\x16\x03\x01" + bytes([len(hs) >> 8, len(hs) & 255]) + hs


def test_a_psk_client_hello_costs_the_psk_handshake_a_certificate_one_the_certificate_handshake():
    b = simstate.board
    b.tls_psk_us, b.tls_cert_us = 40000, 900000
    for suites, charge in (([0x00A8, 0xC0A4, 0x00FF], 40000),  # PSK suites + SCSV
                           ([0xC02B, 0x00A8, 0x00FF], 900000)):  # ECDHE-ECDSA offered too
        w, c, s, srv = session()
        before = b.phases()["tls"]
        c.sendall(hello(suites))
        assert b.phases()["tls"] - before == charge
        # the rest of the handshake is inside that figure: no round trip, no airtime
        radio = b.phases()["radio"]
        s.send(b"\x16\x03\x03\x00\x04serv")
        assert c.recv(9) and b.phases()["radio"] == radio
        c.sendall(b"\x14\x03\x03\x00\x01\x01")  # change cipher spec: still handshaking
        assert b.phases()["radio"] == radio
        c.sendall(b"\x17\x03\x03\x00\x02hi")  # application data: the radio counts again
        assert b.phases()["radio"] > radio
        assert b.phases()["tls"] - before == charge  # booked once
        for x in (c, s, srv):
            x.close()


def test_plain_tcp_that_looks_like_nothing_tls_is_not_charged_as_tls():
    w, c, s, srv = session()
    c.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # an MQTT CONNECT
    c.sendall(hello([0x00A8]))  # later bytes are not a handshake
    assert simstate.board.phases()["tls"] == 0
    for x in (c, s, srv):
        x.close()


def test_the_interpreters_own_tls_client_hello_is_booked():
    import tls

    b = simstate.board
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_NONE
    kinds = [("cert", b.tls_cert_us)]
    if MP:
        kinds.append(("psk", b.tls_psk_us))
    else:  # CPython 3.11's ssl has no client PSK: said plainly
        e = raises(NotImplementedError, setattr, ctx, "psk_key", b"k" * 16)
        assert "PSK" in str(e)
    for kind, charge in kinds:
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = tls.CERT_NONE
        if kind == "psk":
            ctx.psk_identity = b"node-1"
            ctx.psk_key = bytes(16)
            ctx.set_ciphers([x for x in ctx.get_ciphers() if x.startswith("TLS-PSK-")])
        w, c, s, srv = session()
        c.settimeout(0.2)  # the peer never answers: the handshake ends in a timeout
        before = b.phases()["tls"]
        raises(OSError, ctx.wrap_socket, c, server_hostname="localhost")
        assert b.phases()["tls"] - before == charge, kind
        for x in (c, s, srv):
            x.close()


def test_tcp_nodelay_is_offered_as_on_the_esp32_and_reaches_the_host_socket():
    # lwip's values, which Linux shares: the client sets it where hasattr says so
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY) == (6, 1)
    w, c, s, srv = session()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not MP:  # CPython can read it back from the host socket
        assert c._s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    # the host kernel sees what is passed: an option it does not know is its error
    assert raises(OSError, c.setsockopt, socket.IPPROTO_TCP, 9999, 1).args[0] == 92  # ENOPROTOOPT (Linux)
    c.send(b"after")
    assert s.recv(5) == b"after"
    for x in (c, s, srv):
        x.close()
