"""MQTT 3.1.1 client for battery nodes: verified TLS (or TLS-PSK), QoS 0 and 1
with pipelined publishes, and a deadline on every wait.

    ctx = mqtt.tls_context(ca=ca_der)                    # or psk_identity=, psk_key=
    c = mqtt.MQTTClient("node-1", "broker.lan", 8883, ssl_context=ctx,
                        will=("petrel/node-1/status", b"lost", True))
    c.connect()
    pid = c.publish("petrel/node-1/up", payload, qos=1)  # returns at once (window)
    c.wait_all()                                          # PUBACKs, or MQTTError
    c.acked                                               # packet ids confirmed, in order
    c.disconnect()

- TLS verifies the broker by default: CERT_REQUIRED, a CA, and the server name
  (SNI and the name checked). TLS-PSK is the low-energy mode: a per-device
  identity and key, and only PSK cipher suites offered. Plain TCP exists only
  with insecure=True, and says so on the log at every connect.
- Every packet goes out in one write (no header/body split for Nagle to stall),
  QoS 1 publishes are pipelined up to `window` in flight.
- Every read has a deadline (timeout_ms); keepalive pings; a broker that stops
  answering is an MQTTError within keepalive + timeout, never a hang.
- A malformed or oversized packet from the broker closes the connection with an
  MQTTError; nothing from the network can crash the caller with another error.
"""

import socket
import struct
import time

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

_REFUSED = ("", "unacceptable protocol version", "client id rejected", "server unavailable",
            "bad user name or password", "not authorized")


class MQTTError(Exception):
    """The session with the broker is over; the message says why."""


def tls_context(ca=None, cert=None, key=None, psk_identity=None, psk_key=None):
    """A client context that authenticates the broker.

    Certificates: ca (DER bytes; PEM where the build takes it), optional client
    cert and key (mutual TLS); the server name is checked at connect.
    PSK: psk_identity and psk_key (bytes) unique to the device; only PSK suites
    are offered, so the handshake fails unless the broker knows this key."""
    try:
        import tls  # MicroPython's TLS module (its `ssl` is a Python wrapper round it)
    except ImportError:
        import ssl as tls  # CPython
    if psk_key is not None:
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        # No certificate exists in PSK mode: the shared key authenticates both
        # ends, and only PSK suites are offered below.
        ctx.verify_mode = tls.CERT_NONE
        ctx.psk_identity = psk_identity
        ctx.psk_key = psk_key
        ctx.set_ciphers([c for c in ctx.get_ciphers() if c.startswith("TLS-PSK-")])
        return ctx
    if ca is None:
        raise ValueError("a CA is needed to verify the broker (plain TCP: insecure=True)")
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    if tls.__name__ == "tls":
        ctx.load_verify_locations(ca)  # MicroPython's takes the certificate data itself
    else:
        ctx.load_verify_locations(cadata=ca)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def _varlen(n):
    """MQTT's remaining length: 7 bits a byte, high bit = more."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _packet(first, body):
    """Fixed header + remaining length + body, as one buffer."""
    return bytes([first]) + _varlen(len(body)) + body


class MQTTClient:
    def __init__(self, client_id, host, port, ssl_context=None, server_hostname=None,
                 insecure=False, keepalive=60, clean=True, will=None, user=None, password=None,
                 timeout_ms=5000, window=8, max_packet=4096):
        if ssl_context is None and not insecure:
            raise ValueError("MQTT needs a TLS context; plain TCP only with insecure=True")
        self.client_id = client_id
        self.host = host
        self.port = port
        self.ctx = ssl_context
        self.server_hostname = server_hostname or host
        self.insecure = insecure
        self.keepalive = keepalive
        self.clean = clean
        self.will = will  # (topic, message, retain), sent QoS 1
        self.user = user
        self.password = password
        self.timeout_ms = timeout_ms
        self.window = window
        self.max_packet = max_packet
        self.raw = None
        self.sock = None
        self.pid = 0
        self.inflight = {}  # packet id -> ticks_ms sent
        self.acked = []  # packet ids confirmed by PUBACK, in arrival order
        self.inbox = []  # (topic, message) published to us
        self.last_send = 0
        self.ping_sent = None
        self.connect_ms = 0

    # ------------------------------------------------------------ connection
    def connect(self):
        """Open the connection, do the TLS handshake, CONNECT; returns whether
        the broker had a session for us. MQTTError on any failure."""
        t0 = time.ticks_ms()
        self.inflight = {}  # a new connection: nothing of the old one is in flight
        self.acked = []
        self.ping_sent = None
        if self.insecure:
            import eventlog  # only then: the client stays small without the log

            eventlog.warn("mqtt", "INSECURE plain TCP to %s:%d (development setting)",
                          self.host, self.port)
        try:
            addr = socket.getaddrinfo(self.host, self.port)[0][-1]
            self.raw = socket.socket()
            self.raw.settimeout(self.timeout_ms / 1000)
            self.raw.connect(addr)
        except OSError as e:
            self.close()
            raise MQTTError("tcp connect to %s:%d failed: %s" % (self.host, self.port, e))
        if self.ctx is not None:
            try:
                self.sock = self.ctx.wrap_socket(self.raw, server_hostname=self.server_hostname)
            except (OSError, ValueError) as e:
                self.close()
                raise MQTTError("tls: broker not accepted or refused us: %s" % str(e).strip())
        else:
            self.sock = self.raw
        flags = 0x02 if self.clean else 0
        payload = _str(self.client_id)
        if self.will:
            flags |= 0x04 | 0x08 | (0x20 if self.will[2] else 0)  # will, QoS 1, retain
            payload += _str(self.will[0]) + _str(self.will[1])
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
        if self.password is not None:
            flags |= 0x40
            payload += _str(self.password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", self.keepalive) + payload
        self._send(_packet(CONNECT, body))
        first, body = self._read_packet(time.ticks_add(time.ticks_ms(), self.timeout_ms))
        if first != CONNACK or len(body) != 2:
            self.close()
            raise MQTTError("protocol: expected CONNACK, got packet 0x%02x" % first)
        if body[1]:
            self.close()
            code = body[1]
            raise MQTTError("connection refused: %s" % (_REFUSED[code] if code < 6 else code))
        self.connect_ms = time.ticks_diff(time.ticks_ms(), t0)
        return bool(body[0] & 1)

    def close(self):
        for s in (self.sock, self.raw):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.sock = None
        self.raw = None

    def disconnect(self):
        """A clean goodbye: the broker does not publish the will."""
        try:
            if self.sock is not None:
                self._send(_packet(DISCONNECT, b""))
        except MQTTError:
            pass
        self.close()

    # ------------------------------------------------------------ publish
    def publish(self, topic, msg, qos=0, retain=False):
        """Send one message; QoS 1 returns its packet id at once while fewer than
        `window` are unconfirmed, else first waits (deadline) for a PUBACK."""
        if qos not in (0, 1):
            raise ValueError("QoS 0 or 1")
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while qos and len(self.inflight) >= self.window:
            self._wait(deadline, "a free slot in the window")
        if isinstance(topic, str):
            topic = topic.encode()
        pid = self._next_pid() if qos else 0
        # one buffer for the whole packet: one copy of the message, one write
        n = 2 + len(topic) + (2 if qos else 0) + len(msg)
        head = bytes([PUBLISH | (qos << 1) | (1 if retain else 0)]) + _varlen(n)
        buf = bytearray(len(head) + n)
        buf[:len(head)] = head
        i = len(head)
        struct.pack_into("!H", buf, i, len(topic))
        buf[i + 2:i + 2 + len(topic)] = topic
        i += 2 + len(topic)
        if qos:
            struct.pack_into("!H", buf, i, pid)
            i += 2
        buf[i:] = msg
        self._send(buf)
        if qos:
            self.inflight[pid] = time.ticks_ms()
        return pid

    def wait_all(self, timeout_ms=None):
        """Wait for every outstanding PUBACK; MQTTError at the deadline."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms or self.timeout_ms)
        while self.inflight:
            self._wait(deadline, "PUBACK")

    def _wait(self, deadline, what):
        """Handle one packet from the broker; MQTTError once the deadline passed."""
        if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            self.close()
            raise MQTTError("timeout: no %s from the broker" % what)
        self._process(deadline)

    def check(self):
        """Keep the session alive between publishes: handle what the broker
        sent, ping when idle, and fail if a ping went unanswered."""
        if self.sock is None:
            raise MQTTError("not connected")
        now = time.ticks_ms()
        if self.ping_sent is not None and time.ticks_diff(now, self.ping_sent) > self.timeout_ms:
            self.close()
            raise MQTTError("broker did not answer a ping within %d ms" % self.timeout_ms)
        if self.ping_sent is None and time.ticks_diff(now, self.last_send) >= self.keepalive * 750:
            self.ping()
        self._process(now)  # only what has already arrived

    def ping(self):
        self._send(_packet(PINGREQ, b""))
        self.ping_sent = time.ticks_ms()

    def _next_pid(self):
        while True:
            self.pid = self.pid % 65535 + 1
            if self.pid not in self.inflight:
                return self.pid

    # ------------------------------------------------------------ wire
    def _send(self, pkt):
        if self.sock is None:
            raise MQTTError("not connected")
        try:
            self.sock.sendall(pkt)
        except OSError as e:
            self.close()
            raise MQTTError("send failed: %s" % e)
        self.last_send = time.ticks_ms()

    def _recv(self, n, deadline):
        out = b""
        while len(out) < n:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise MQTTError("timeout: no answer from the broker")
            try:
                self.raw.settimeout(left / 1000)
                chunk = self.sock.recv(n - len(out))
            except OSError as e:
                self.close()
                if e.args and e.args[0] in (110, 11):  # ETIMEDOUT, EAGAIN
                    raise MQTTError("timeout: no answer from the broker")
                raise MQTTError("receive failed: %s" % e)
            if not chunk:
                self.close()
                raise MQTTError("connection closed by the broker")
            out += chunk
        return out

    def _read_packet(self, deadline):
        if self.sock is None:
            raise MQTTError("not connected")
        first = self._recv(1, deadline)[0]
        n = 0
        shift = 0
        while True:
            b = self._recv(1, deadline)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                self.close()
                raise MQTTError("protocol: malformed remaining length")
        if n > self.max_packet:
            self.close()
            raise MQTTError("protocol: %d-byte packet exceeds the %d-byte limit" % (n, self.max_packet))
        return first, self._recv(n, deadline) if n else b""

    def _process(self, deadline):
        """Read and handle one packet (waiting until deadline); at deadline ==
        now, only one that is already there (returns without one otherwise)."""
        if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            if not self._readable():
                return
            deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        first, body = self._read_packet(deadline)
        kind = first & 0xF0
        if kind == PUBACK and len(body) == 2:
            pid = struct.unpack("!H", body)[0]
            if self.inflight.pop(pid, None) is None:
                self.close()
                raise MQTTError("protocol: PUBACK for unknown packet id %d" % pid)
            self.acked.append(pid)
        elif kind == PINGRESP and not body:
            self.ping_sent = None
        elif kind == PUBLISH:
            self._incoming(first, body)
        else:
            self.close()
            raise MQTTError("protocol: unexpected packet 0x%02x (%d bytes)" % (first, len(body)))

    def _incoming(self, first, body):
        qos = (first >> 1) & 3
        if len(body) < 2 or qos > 1:
            self.close()
            raise MQTTError("protocol: malformed PUBLISH")
        n = struct.unpack("!H", body[:2])[0]
        pos = 2 + n
        if len(body) < pos + (2 if qos else 0):
            self.close()
            raise MQTTError("protocol: malformed PUBLISH")
        topic = body[2:pos]
        if qos:
            self._send(_packet(PUBACK, body[pos:pos + 2]))
            pos += 2
        if len(self.inbox) < 16:
            self.inbox.append((topic, body[pos:]))

    def _readable(self):
        import select

        p = select.poll()
        p.register(self.raw, select.POLLIN)
        return bool(p.poll(0))
