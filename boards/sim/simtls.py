"""MicroPython's `tls` module for firmware-side code under CPython (the VM has
its own, built in, which cannot be replaced: there this file is unused).

The harness gives it to firmware-side importers as `tls`. It speaks the API
lib/mqtt uses (SSLContext with verify_mode, load_verify_locations(DER or PEM
bytes), load_cert_chain(cert, key bytes), get_ciphers/set_ciphers,
wrap_socket(sock, server_hostname=)) on top of ssl.SSLContext, pumping the
records through a MemoryBIO over the sock it is given (the simulated board's
socket.py), so link loss and the ClientHello accounting behave as on the VM.

TLS-PSK: CPython 3.11's ssl has no client PSK (3.13 adds
set_psk_client_callback, not wired here); setting psk_identity or psk_key
raises NotImplementedError saying so. PSK runs on the VM.
"""

import errno
import os
import ssl
import tempfile

PROTOCOL_TLS_CLIENT = 0
PROTOCOL_TLS_SERVER = 1
CERT_NONE = ssl.CERT_NONE
CERT_OPTIONAL = ssl.CERT_OPTIONAL
CERT_REQUIRED = ssl.CERT_REQUIRED


def _pem(data, kind):
    """DER or PEM bytes -> PEM text. For a DER key, its kind from the version
    field: SEC1 EC keys are version 1, PKCS#8 and PKCS#1 RSA version 0."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return data.decode()
    if kind == "key":
        hdr = 4 if data[1] == 0x82 else 3 if data[1] == 0x81 else 2  # outer SEQUENCE
        version = data[hdr + 2]
        after = data[hdr + 3]
        kind = ("EC PRIVATE KEY" if version == 1 else
                "PRIVATE KEY" if after == 0x30 else "RSA PRIVATE KEY")
        import base64

        b64 = base64.encodebytes(data).decode()
        return "-----BEGIN %s-----\n%s-----END %s-----\n" % (kind, b64, kind)
    return ssl.DER_cert_to_PEM_cert(data)


class SSLContext:
    def __init__(self, protocol):
        if protocol != PROTOCOL_TLS_CLIENT:
            raise ValueError("only PROTOCOL_TLS_CLIENT is simulated")
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False  # set per socket: only with CERT_REQUIRED and a name

    @property
    def verify_mode(self):
        return self._ctx.verify_mode

    @verify_mode.setter
    def verify_mode(self, mode):
        self._ctx.check_hostname = False
        self._ctx.verify_mode = mode

    def load_verify_locations(self, cadata):
        pem = _pem(bytes(cadata), "cert")
        self._ctx.load_verify_locations(cadata=pem)

    def load_cert_chain(self, cert, key):
        # ssl reads files only: write them for the call, readable by us alone
        with tempfile.TemporaryDirectory(prefix="petrel-tls-") as d:
            paths = []
            for name, data, kind in (("c.pem", cert, "cert"), ("k.pem", key, "key")):
                p = os.path.join(d, name)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(_pem(bytes(data), kind))
                paths.append(p)
            self._ctx.load_cert_chain(paths[0], paths[1])

    def get_ciphers(self):
        # mbedtls-style names as MicroPython gives them ("TLS-" + the suite)
        return ["TLS-" + c["name"] for c in self._ctx.get_ciphers()]

    def set_ciphers(self, names):
        if not names:
            raise ValueError("no cipher suites")
        self._ctx.set_ciphers(":".join(n[4:] if n.startswith("TLS-") else n for n in names))

    def _no_psk(self, value):
        raise NotImplementedError("TLS-PSK client: CPython %s's ssl module has none (3.13 adds "
                                  "set_psk_client_callback); run PSK on the MicroPython VM"
                                  % ".".join(str(x) for x in __import__("sys").version_info[:2]))

    psk_identity = property(lambda self: None, _no_psk)
    psk_key = property(lambda self: None, _no_psk)

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True,
                    server_hostname=None):
        if server_side:
            raise ValueError("only the client side is simulated")
        if server_hostname and self._ctx.verify_mode == CERT_REQUIRED:
            self._ctx.check_hostname = True
        return SSLSocket(self._ctx, sock, server_hostname)


class SSLSocket:
    """TLS records pumped between ssl's SSLObject and the simulated socket."""

    def __init__(self, ctx, sock, server_hostname):
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._sock = sock
        self._io(self._obj.do_handshake)

    def _io(self, fn, *args):
        while True:
            try:
                r = fn(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self._sock.recv(16384)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._flush()
                return b""  # the peer closed: end of stream, as MicroPython reads it
            self._flush()
            return r

    def _flush(self):
        data = self._out.read()
        if data:
            self._sock.sendall(data)

    def recv(self, n):
        return self._io(self._obj.read, n)

    read = recv

    def readinto(self, buf, n=None):
        data = self.recv(len(buf) if n is None else n)
        buf[:len(data)] = data
        return len(data)

    def write(self, data):
        n = self._io(self._obj.write, bytes(data))
        if n == b"":
            raise OSError(errno.ECONNRESET)
        return n

    send = write

    def sendall(self, data):
        data = bytes(data)
        i = 0
        while i < len(data):
            i += self.write(data[i:])

    def setblocking(self, flag):
        self._sock.setblocking(flag)

    def close(self):
        self._sock.close()
