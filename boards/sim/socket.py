"""Fake `socket` of the ESP32 (lwip) over the host's real sockets.

Bytes really travel (to a broker on loopback), but the link is the simulated
one and time is the board's:
- getaddrinfo() fails with OSError(-202), as lwip on the ESP32 does, unless the
  station has an address (network.WLAN status GOT_IP, its AP up);
- once the link is lost (AP down, station disconnected or inactive), every
  operation on a socket raises OSError(ECONNABORTED), as lwip aborts the
  connections of an interface that lost its address;
- virtual time is a model, never host wall time: one round trip (board.rtt_us)
  per connect, per name lookup and for the first read after a write, plus the
  bytes at board.radio_kbps, booked as "radio" in the ledger (simstate.py). A
  read that times out for real lets the virtual clock run its timeout;
- setsockopt() goes to the host socket: TCP_NODELAY (IPPROTO_TCP, as the
  ESP32 port names them) turns Nagle off on the real connection;
- TLS: the client's ClientHello (record 0x16, handshake 1) books the handshake
  as "tls": board.tls_psk_us when only PSK suites are offered, else
  board.tls_cert_us. Round trips and bytes of the handshake are inside that
  figure, up to the client's first application-data record.

The link is enforced once firmware has used network.WLAN this boot (or always
with board.link_required, as the boot runner sets it): code that never touches
Wi-Fi, such as the MQTT tests against a broker on loopback, keeps the host's
networking, with the traffic still booked.

On the VM this file replaces the built-in `socket` (`usocket` stays the
built-in); the socket class is an io.IOBase stream, so tls.wrap_socket() and
select.poll() take it. Under CPython the harness gives it to firmware-side
importers only, and `tls` (simtls.py) wraps it."""

import sys
import errno

from simstate import board

if sys.implementation.name == "micropython":
    import io
    import select
    import usocket as _real

    _Base = io.IOBase
else:
    import select

    _real = sys.modules["socket"]  # CPython's own, loaded before the harness swaps names
    _Base = object

for _n in dir(_real):
    if _n[0].isupper() and _n[1:2].isupper():  # AF_INET, SOCK_STREAM, SOL_SOCKET ...
        globals()[_n] = getattr(_real, _n)

# The ESP32 port's socket has these (lwip's values, the same as Linux's); the
# unix port's lacks them, and setsockopt passes them to the host socket as is.
if "TCP_NODELAY" not in globals():
    IPPROTO_TCP = 6
    TCP_NODELAY = 1

host = _real  # the host's own socket module, for a test's peer (a broker stand-in)
EAI_FAIL = -202  # what getaddrinfo raises on the ESP32 without a link
_POLL_ERR = 8 | 16  # MP_STREAM_POLL_ERR | MP_STREAM_POLL_HUP
_PSK_SUITES = ((0x002C, 0x002E), (0x008C, 0x0095), (0x00A8, 0x00B9), (0xC033, 0xC03B),
               (0xC064, 0xC06B), (0xC08E, 0xC09B), (0xC0A4, 0xC0A5), (0xC0A8, 0xC0AB),
               (0xCCAB, 0xCCAE), (0xD001, 0xD005))
_SIGNALLING = (0x00FF, 0x5600)  # renegotiation info and fallback SCSVs: not suites


def link_up():
    """Whether the simulated station can carry traffic now."""
    w = board.wlan
    if w is None:
        return not board.link_required
    if not w["active"]:
        return False
    import network

    return network.WLAN(network.STA_IF).status() == network.STAT_GOT_IP


def _numeric(host):
    for c in host:
        if c not in "0123456789.":
            return False
    return True


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    board.alive()
    if not link_up():
        raise OSError(EAI_FAIL)
    if not _numeric(host):
        board.spend(board.rtt_us, "radio")  # a DNS query to the resolver
    return _real.getaddrinfo(host, port, af, type, proto, flags)


def only_psk(suites):
    """Whether a ClientHello offers PSK suites only (the cheap handshake)."""
    n = 0
    for c in suites:
        if c in _SIGNALLING:
            continue
        n += 1
        for lo, hi in _PSK_SUITES:
            if lo <= c <= hi:
                break
        else:
            return False
    return n > 0


def hello_suites(data, i):
    """Cipher suites of the ClientHello whose handshake header starts at i."""
    p = i + 4 + 2 + 32  # handshake header, client version, random
    p += 1 + data[p]  # session id
    n = (data[p] << 8) | data[p + 1]
    p += 2
    return [(data[p + k] << 8) | data[p + k + 1] for k in range(0, n, 2)]


class socket(_Base):
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0, _s=None):  # noqa: F821
        board.alive()
        self._s = _real.socket(af, type, proto) if _s is None else _s
        self._timeout = None
        self._connected = _s is not None
        self._dead = False
        self._reply = False  # a write is waiting for its answer: the next read pays a round trip
        self._tls = 0  # 0: nothing sent, 1: handshake booked, 2: done, -1: not TLS
        self._hdr = b""  # an outgoing TLS record header split across writes
        self._rec = 0  # bytes left of the current outgoing TLS record

    # ------------------------------------------------------------ link and time
    def _check(self):
        board.alive()
        if self._s is None:
            raise OSError(errno.EBADF)
        if not self._dead and self._connected and not link_up():
            self._dead = True
        if self._dead:
            raise OSError(errno.ECONNABORTED)

    def _air(self, n):
        """Time on air for n bytes; none inside a handshake booked as tls."""
        if self._tls != 1 and n:
            board.spend(n * 8000 // board.radio_kbps, "radio")

    def _sent(self, data, n):
        board.tx_bytes += n
        if self._tls >= 0 and self._tls != 2:
            self._follow(data, n)
        self._air(n)
        self._reply = True

    def _got(self, n):
        board.rx_bytes += n
        self._air(n)

    def _wait_reply(self):
        if self._reply:
            self._reply = False
            if self._tls != 1:
                board.spend(board.rtt_us, "radio")

    def _follow(self, data, n):
        """Follow the outgoing TLS records: the ClientHello books the handshake,
        the first application-data record ends it."""
        i = 0
        if self._tls == 0 and not (n > 5 and data[0] == 0x16 and data[1] == 3):
            self._tls = -1  # plain TCP
            return
        while i < n and self._tls != 2:
            if self._rec:
                k = min(self._rec, n - i)
                self._rec -= k
                i += k
                continue
            k = min(5 - len(self._hdr), n - i)
            self._hdr += bytes(data[i:i + k])
            i += k
            if len(self._hdr) < 5:
                return
            kind = self._hdr[0]
            self._rec = (self._hdr[3] << 8) | self._hdr[4]
            self._hdr = b""
            if kind == 0x16 and self._tls == 0 and i < n and data[i] == 1:
                try:
                    psk = only_psk(hello_suites(data, i))
                except IndexError:  # not all in this write: count it as the dearer one
                    psk = False
                self._tls = 1
                board.spend(board.tls_psk_us if psk else board.tls_cert_us, "tls")
            elif kind == 0x17 and self._tls == 1:
                self._tls = 2

    def _error(self, e):
        """A real socket error in lwip's terms; a timeout lets virtual time run."""
        code = e.args[0] if e.args and isinstance(e.args[0], int) else None
        if code in (errno.EAGAIN, errno.ETIMEDOUT) or (code is None and "timed out" in str(e)):
            if self._timeout:
                board.spend(int(self._timeout * 1000000), "radio")
                return OSError(errno.ETIMEDOUT)
            return OSError(errno.EAGAIN)
        return e

    # ------------------------------------------------------------ the API
    def settimeout(self, t):
        board.alive()
        self._timeout = t
        self._s.settimeout(t)

    def setblocking(self, flag):
        self.settimeout(None if flag else 0)

    def setsockopt(self, level, opt, value):
        """Passed to the host socket (TCP_NODELAY really changes its segments)."""
        board.alive()
        self._s.setsockopt(level, opt, value)

    def bind(self, addr):
        board.alive()
        self._s.bind(addr)

    def listen(self, n=2):
        board.alive()
        self._s.listen(n)

    def accept(self):
        board.alive()
        s, addr = self._s.accept()
        return socket(_s=s), addr

    def connect(self, addr):
        board.alive()
        if not link_up():
            raise OSError(errno.EHOSTUNREACH)
        try:
            self._s.connect(addr)
        except OSError as e:
            raise self._error(e)
        self._connected = True
        board.spend(board.rtt_us, "radio")  # SYN, SYN-ACK

    def send(self, data):
        self._check()
        try:
            n = self._s.send(data)
        except OSError as e:
            raise self._error(e)
        self._sent(data, n)
        return n

    def sendall(self, data):
        mv = memoryview(data)
        i = 0
        while i < len(mv):
            i += self.send(mv[i:])

    def write(self, data):
        self.sendall(data)
        return len(data)

    def recv(self, n):
        self._check()
        self._wait_reply()
        try:
            data = self._s.recv(n)
        except OSError as e:
            raise self._error(e)
        self._got(len(data))
        return data

    def read(self, n=4096):
        try:
            return self.recv(n)
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                return None  # MicroPython streams: None when nothing is there yet
            raise

    def readinto(self, buf, n=None):
        data = self.read(len(buf) if n is None else n)
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)

    def fileno(self):  # CPython's select.poll() registers by file descriptor
        return self._s.fileno()

    def ioctl(self, req, arg):
        """MicroPython's stream ioctl: select.poll() and tls ask here."""
        if req == 3:  # MP_STREAM_POLL
            if self._dead or (self._connected and not link_up()):
                self._dead = True
                return arg | _POLL_ERR
            p = select.poll()
            p.register(self._s, arg)
            r = p.poll(0)
            return r[0][1] & (arg | _POLL_ERR) if r else 0
        if req == 4:  # MP_STREAM_CLOSE
            self.close()
            return 0
        return -errno.EINVAL

    def close(self):
        if self._s is not None:
            self._s.close()
            self._s = None
