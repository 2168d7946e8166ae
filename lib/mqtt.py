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
- TCP_NODELAY on the socket (by number: the ESP32's lwIP and Linux agree on
  6 and 1): no delayed-ACK wait inside the TLS handshake, and a PUBLISH goes
  out as its header, then the message as it is, never copied into one packet
  (a 60-reading batch: 787 B less at the peak). Where the socket refuses the
  option, or with nodelay = False, Nagle is on and every packet goes out in
  one write instead (a second would wait out the broker's delayed ACK). QoS 1
  publishes are pipelined up to `window` in flight.
- subscribe() is pipelined too (wait_all() waits for its SUBACK); messages
  published to us land in `inbox` (mqtt_keepalive: its bound and refusals).
- Every read has a deadline (timeout_ms); keepalive pings; a broker that stops
  answering is an MQTTError within keepalive + timeout, never a hang.
- A malformed or oversized packet from the broker closes the connection with an
  MQTTError; nothing from the network can crash the caller with another error.

Small on purpose: loaded from a .mpy, every function, name and string here is
heap the TLS context (3 KB in one piece), the TLS socket (520 bytes) and the
packets then cannot have (bench/uplink.py finds the smallest heap that
completes a batch; what fails there is one of those large pieces, the heap
being fragmented, not a lack of bytes; README, "Memory budget"). Hence packet
types as literals, few methods and names, short messages, no constant tuples
or bytes (each is an object of 64 B on the 64-bit VM; a message string too).
Each new name is a qstr for good, and the qstr pool that overflows is followed
by one twice its size (in the bench's run: the 61st name costs 1.1 KB), so
parameters and attributes reuse names the firmware has anyway (end, head).
Few attributes: what only connect() reads is one tuple (broker), since the
instance's table grows in steps (12 slots for the 11 here, 17 for 13..17).
The code a session needs once before its handshake (TLS context set-up, the
CONNECT packet) is in mqtt_setup, which connect() lets go before the handshake;
the warning of a plain-TCP connect in mqtt_insecure; check() (keepalive) and
messages published to us in mqtt_keepalive, loaded only when needed. None
imports this module back: what they need of it is handed to them (_head, _str,
MQTTError).
gc.collect() before the client's long-lived objects and the TLS context are
made puts them in the holes left by garbage, so the large free runs stay whole.
"""

import errno
import gc
import socket
import sys
import time


class MQTTError(Exception):
    """The session with the broker is over; the message says why."""


def tls_context(ca=None, cert=None, key=None, psk_identity=None, psk_key=None):
    """A client context that authenticates the broker.

    Certificates: ca (DER bytes; PEM where the build takes it), optional client
    cert and key (mutual TLS); the server name is checked at connect.
    PSK: psk_identity and psk_key (bytes) unique to the device; only PSK suites
    are offered, so the handshake fails unless the broker knows this key."""
    gc.collect()
    try:
        import tls  # MicroPython's TLS module (its `ssl` is a Python wrapper round it)
    except ImportError:
        import ssl as tls  # CPython
    # 3 KB in one piece: made first, while the heap has a run that long
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    import mqtt_setup  # the rest, once a session: connect() lets it go again

    return mqtt_setup.context(tls, ctx, ca, cert, key, psk_identity, psk_key)


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 255)) + s


def _head(code, n):
    """Fixed header: the type byte (code), then the remaining length n, 7 bits a byte."""
    out = bytearray((code,))
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return out


class MQTTClient:
    max_packet = 4096  # the largest packet taken from the broker
    nodelay = True  # TCP_NODELAY (False: Nagle, each packet in one write); set per client too

    def __init__(self, client_id, host, port, ssl_context=None, server_hostname=None,
                 insecure=False, keepalive=60, clean=True, will=None, user=None, password=None,
                 timeout_ms=5000, window=8, max_packet=4096):
        gc.collect()  # our long-lived objects into the holes, not past them
        self.keepalive = keepalive
        self.timeout_ms = timeout_ms
        self.window = window
        if max_packet != self.max_packet:  # a class attribute unless changed: one slot less
            self.max_packet = max_packet
        import mqtt_setup  # let go again by connect(), before the handshake

        # what connect() needs, one attribute (each is a slot of the instance's
        # table): host, port, the name TLS checks, the TLS context, CONNECT
        self.broker = (host, port, server_hostname or host, ssl_context,
                       mqtt_setup.connect(_head, _str, ssl_context, insecure, client_id, keepalive, clean, will,
                                          user, password))
        self.raw = self.sock = self.ping_sent = None
        self.pid = self.last_send = 0
        self.inflight = {}  # packet id -> ticks_ms sent
        self.acked = []  # packet ids confirmed by PUBACK, in arrival order
        # self.inbox: [(topic, message, retained)] published to us, made by the first one

    def connect(self):
        """Open the connection, do the TLS handshake, CONNECT; returns whether
        the broker had a session for us. MQTTError on any failure."""
        self.inflight = {}  # a new connection: nothing of the old one is in flight
        self.acked = []
        self.ping_sent = None
        host, port, name, context, packet = self.broker
        if context is None:  # only with insecure=True: say so at every connect
            import mqtt_insecure

            mqtt_insecure.warn(host, port)
        # the setup code (mqtt_setup) is done with: garbage before the handshake
        sys.modules.pop("mqtt_setup", None)
        gc.collect()  # as in __init__: keep big free runs for TLS and the packets
        stage = "tcp: %s"
        try:
            addr = socket.getaddrinfo(host, port)[0][-1]
            self.raw = self.sock = socket.socket()
            if self.nodelay:  # before the TLS wrap: mbedTLS writes a handshake flight in
                # pieces, and with Nagle the last waits out the broker's delayed ACK
                try:  # IPPROTO_TCP 6, TCP_NODELAY 1: lwIP's (ESP32), Linux's, BSD's numbers
                    self.raw.setsockopt(6, 1, 1)
                except (OSError, AttributeError):  # a socket without it: Nagle, one write a packet
                    self.nodelay = False
            self.raw.settimeout(self.timeout_ms / 1000)
            self.raw.connect(addr)
            if context is not None:
                stage = "tls: %s"  # the broker not accepted (CA, name, date), or it refused us
                self.sock = context.wrap_socket(self.raw, server_hostname=name)
        except (OSError, ValueError) as e:
            self.close()
            raise MQTTError(stage % str(e).strip())
        self._send(packet)
        # the broker's first packet is CONNACK, 4 bytes: 0x20, 2, flags, code
        ack = self._recv(4, time.ticks_add(time.ticks_ms(), self.timeout_ms))
        if ack[0] != 0x20 or ack[1] != 2:
            self.close()
            raise MQTTError("unexpected packet 0x%02x" % ack[0])
        if ack[3]:  # 1 protocol version, 2 client id, 3 unavailable, 4 user/password, 5 not authorized
            self.close()
            raise MQTTError("refused: code %d" % ack[3])
        return bool(ack[2] & 1)

    def close(self):
        for s in (self.sock, self.raw):
            try:
                s.close()
            except (OSError, AttributeError):  # already closed, or None
                pass
        self.sock = self.raw = None

    def disconnect(self):
        """A clean goodbye: the broker does not publish the will."""
        try:
            self._send(_head(0xE0, 0))  # not bytes((0xE0, 0)): a constant tuple is 32 B for good
        except MQTTError:
            pass
        self.close()

    # ------------------------------------------------------------ publish
    def publish(self, topic, msg, qos=0, retain=False):
        """Send one message; QoS 1 returns its packet id at once while fewer than
        `window` are unconfirmed, else first waits (deadline) for a PUBACK."""
        if qos < 0 or qos > 1:
            raise ValueError("QoS must be 0 or 1")
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while qos and len(self.inflight) >= self.window:
            self._process(deadline)
        pid = 0
        if qos:
            pid = self.pid
            while pid == self.pid or pid in self.inflight:  # the next id not in flight
                pid = pid % 65535 + 1
            self.pid = pid
        pre = _str(topic)
        if qos:
            pre += bytes((pid >> 8, pid & 255))
        pre = _head(0x30 | qos << 1 | (1 if retain else 0), len(pre) + len(msg)) + pre
        if self.nodelay:  # the message written as it is, no copy: nothing waits for an ACK
            self._send(pre)
            self._send(msg)
        else:  # with Nagle a second write would wait out a delayed ACK: one write
            self._send(pre + msg)
        if qos:
            self.inflight[pid] = time.ticks_ms()
        return pid

    def subscribe(self, topic, qos=1):
        """SUBSCRIBE in one write, not waited for (pipelined like publish):
        its packet id is in inflight, so wait_all() waits for the SUBACK
        too. -> the packet id. A refused one (SUBACK 0x80) is listed in
        refused_subs; messages to us land in inbox (mqtt_keepalive)."""
        import mqtt_keepalive

        return mqtt_keepalive.subscribe(self, topic, qos, _head, _str)

    def wait_all(self, timeout_ms=None):
        """Wait for every outstanding PUBACK (and SUBACK); MQTTError at the deadline."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms or self.timeout_ms)
        while self.inflight:
            self._process(deadline)

    def check(self):
        """Keep the session alive between publishes: handle what the broker
        sent, ping when idle, and fail if a ping went unanswered. In a module
        of its own: a short wake never needs it, and unloaded it costs no heap."""
        import mqtt_keepalive

        mqtt_keepalive.check(self, MQTTError)

    # ------------------------------------------------------------ wire
    def _send(self, msg):
        if self.sock is None:
            raise MQTTError("not connected")
        try:
            self.sock.sendall(msg)
        except OSError as e:
            self.close()
            raise MQTTError("link: %s" % e)
        self.last_send = time.ticks_ms()

    def _recv(self, n, end):
        out = bytes()
        while len(out) < n:
            try:
                left = time.ticks_diff(end, time.ticks_ms())
                if left <= 0:
                    raise OSError(errno.ETIMEDOUT)
                self.raw.settimeout(left / 1000)
                chunk = self.sock.recv(n - len(out))
            except OSError as e:  # ETIMEDOUT, EAGAIN: the deadline passed
                self.close()
                # by name: the ESP32 (newlib) numbers ETIMEDOUT 116, Linux 110
                raise MQTTError("timeout: no answer" if e.args and e.args[0] in (errno.ETIMEDOUT, errno.EAGAIN)
                                else "link: %s" % e)
            if not chunk:
                self.close()
                raise MQTTError("connection closed")
            out += chunk
        return out

    def _process(self, end, head=None):
        """Read and handle one packet (PUBACK, PINGRESP, a PUBLISH to us),
        waiting until the tick `end`; MQTTError past it. head: the packet's
        first byte, when the caller read it (mqtt_keepalive.wait_msg).
        The deadline is _recv's: it checks it before every read."""
        if self.sock is None:
            raise MQTTError("not connected")
        if head is None:
            head = self._recv(1, end)[0]
        n = 0
        for shift in range(0, 28, 7):  # the remaining length: 4 bytes at most
            b = self._recv(1, end)[0]
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
        else:
            self.close()
            raise MQTTError("malformed remaining length")
        if n > self.max_packet:
            if head & 0xF0 == 0x30:  # a PUBLISH too big for us: read past, acked, noted (rare)
                import mqtt_keepalive

                return mqtt_keepalive.skip(self, head, n, end, MQTTError)
            self.close()
            raise MQTTError("%d bytes exceeds max_packet" % n)
        body = self._recv(n, end)
        kind = head & 0xF0
        if kind == 0x40 and len(body) == 2:  # PUBACK
            pid = body[0] << 8 | body[1]
            if self.inflight.pop(pid, None) is None:
                self.close()
                raise MQTTError("unknown packet id %d" % pid)
            self.acked.append(pid)
        elif kind == 0xD0 and not body:  # PINGRESP
            self.ping_sent = None
        elif kind == 0x30 or kind == 0x90:  # a PUBLISH to us, a SUBACK: rare, loaded then
            import mqtt_keepalive

            mqtt_keepalive.incoming(self, head, body, MQTTError)
        else:
            self.close()
            raise MQTTError("unexpected packet 0x%02x" % head)
