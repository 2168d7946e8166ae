"""A real Mosquitto broker on loopback for tests, benchmarks and `make sim`,
with certificates made for the run.

Listeners (each on a free 127.0.0.1 port, see Broker.ports):
  tls       server certificate for "localhost" and 127.0.0.1, signed by the run's CA
  expired   the same, but the certificate expired yesterday
  mtls      requires a client certificate signed by the run's CA
  psk       TLS-PSK only (identities and keys in Broker.psk)
  plain     no TLS (the host side subscribes here to check what arrived)

Mosquitto comes from Debian's package; `ensure_installed()` installs it when missing.
"""

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

LISTENERS = ("tls", "expired", "mtls", "psk", "plain")


def mosquitto_binary():
    for p in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if p and os.path.exists(p):
            return p
    return None


def ensure_installed():
    """Install Debian's mosquitto when it is missing (sudo when not root)."""
    if mosquitto_binary():
        return mosquitto_binary()
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "mosquitto"], check=True, env=env)
    return mosquitto_binary()


def free_ports(n):
    """n distinct free loopback ports: all held open while they are picked
    (one at a time, the kernel may hand out the same port twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]


# ------------------------------------------------------------ certificates
def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_cn, key, issuer_cn, issuer_key, *, ca=False, days=30, expired=False,
          hosts=(), client=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    if expired:
        start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    else:
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        names = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(folder):
    """CA, server, expired server, client, and an unrelated CA: PEM files in folder.
    Returns {name: path}; DER copies (what the ESP32 port's cadata wants) as NAME.der."""
    from cryptography.hazmat.primitives import serialization

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}

    def save(name, cert, key=None):
        p = folder / (name + ".pem")
        p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / (name + ".der")).write_bytes(cert.public_bytes(serialization.Encoding.DER))
        files[name] = p
        if key is not None:
            k = folder / (name + ".key")
            k.write_bytes(_pem_key(key))
            k.chmod(0o600)
            files[name + "_key"] = k
            from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, NoEncryption

            (folder / (name + ".key.der")).write_bytes(
                key.private_bytes(Encoding.DER, PrivateFormat.TraditionalOpenSSL, NoEncryption()))

    ca_key = _key()
    ca = _cert("Petrel test CA", ca_key, "Petrel test CA", ca_key, ca=True)
    save("ca", ca, ca_key)
    other_key = _key()
    save("other_ca", _cert("Some other CA", other_key, "Some other CA", other_key, ca=True))
    hosts = ("localhost", "127.0.0.1")
    k = _key()
    save("server", _cert("localhost", k, "Petrel test CA", ca_key, hosts=hosts), k)
    k = _key()
    save("expired", _cert("localhost", k, "Petrel test CA", ca_key, hosts=hosts, expired=True), k)
    k = _key()
    save("client", _cert("node-1", k, "Petrel test CA", ca_key, client=True), k)
    return files


# ------------------------------------------------------------ broker
class Broker:
    def __init__(self, folder=None, psk=None, persistence=False, tcp_nodelay=True):
        """persistence: sessions and queued messages saved in folder when the
        broker stops, so restart() keeps them (as a service restart would).
        tcp_nodelay=False: Mosquitto's own default (Nagle on), as a user's
        broker may be: bench/uplink.py measures both."""
        self.tcp_nodelay = tcp_nodelay
        self._tmp = None
        self.persistence = persistence
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="petrel-broker-")
            folder = self._tmp.name
        self.folder = Path(folder)
        self.psk = psk or {"node-1": "00112233445566778899aabbccddeeff"}
        self.ports = {}
        self.proc = None
        self.pki = None

    def start(self, timeout=10):
        ensure_installed()
        self.pki = make_pki(self.folder / "pki")
        # another process (make test runs two at a time) may take a port
        # between free_ports() and mosquitto's bind: fresh ports, a few times
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                if "in use" not in str(e) or attempt == 2:
                    raise

    def _start(self, timeout):
        self.ports = dict(zip(LISTENERS, free_ports(len(LISTENERS))))
        pskfile = self.folder / "psk.txt"
        pskfile.write_text("".join("%s:%s\n" % kv for kv in self.psk.items()))
        p = self.pki
        conf = [
            "user root",  # test-only: keep reading the run's key files as the runner
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence %s" % ("true" if self.persistence else "false"),
            "persistence_location %s/" % self.folder,
            # a node's pipelined batch ends waiting on the broker's last PUBACK:
            # with Nagle on, that waits a delayed ACK (~40 ms here, longer on
            # lwIP), radio time a node pays at every uplink
            "set_tcp_nodelay %s" % ("true" if self.tcp_nodelay else "false"),
            "log_dest file %s" % (self.folder / "mosquitto.log"),
            "log_type error", "log_type warning", "log_type notice",
            "psk_file %s" % pskfile,
            "",
            "listener %d 127.0.0.1" % self.ports["tls"],
            "cafile %s" % p["ca"], "certfile %s" % p["server"], "keyfile %s" % p["server_key"],
            "",
            "listener %d 127.0.0.1" % self.ports["expired"],
            "cafile %s" % p["ca"], "certfile %s" % p["expired"], "keyfile %s" % p["expired_key"],
            "",
            "listener %d 127.0.0.1" % self.ports["mtls"],
            "cafile %s" % p["ca"], "certfile %s" % p["server"], "keyfile %s" % p["server_key"],
            "require_certificate true",
            "",
            "listener %d 127.0.0.1" % self.ports["psk"],
            "psk_hint petrel",
            "",
            "listener %d 127.0.0.1" % self.ports["plain"],
        ]
        cfg = self.folder / "mosquitto.conf"
        cfg.write_text("\n".join(conf) + "\n")
        self._launch(timeout)
        return self

    def _launch(self, timeout=10):
        """Start mosquitto on the written config and wait until every listener answers."""
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.folder / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        for port in self.ports.values():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if self.proc.poll() is not None:
                        log = self.folder / "mosquitto.log"
                        raise RuntimeError("mosquitto exited: %s%s" % (
                            self.proc.stderr.read().decode(),
                            log.read_text()[-500:] if log.exists() else ""))
                    if time.monotonic() > deadline:
                        raise RuntimeError("mosquitto did not listen on %d" % port)
                    time.sleep(0.05)
        # a port can answer before mosquitto has bound it, when another
        # process listens there: mosquitto then exits at once ("Address
        # already in use"); it must still be running a moment later
        for _ in range(6):
            time.sleep(0.05)
            if self.proc.poll() is not None:
                log = self.folder / "mosquitto.log"
                raise RuntimeError("mosquitto exited: %s%s" % (
                    self.proc.stderr.read().decode(), log.read_text()[-500:] if log.exists() else ""))

    def pause(self):
        """SIGSTOP: a broker that hangs with its sockets open."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)

    def restart(self):
        """Killed and started again on the same ports and certificates; with
        persistence, stopped with SIGTERM so it saves its sessions first."""
        if self.persistence and self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.kill()
        self._launch()

    def stop(self):
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    def log(self):
        try:
            return (self.folder / "mosquitto.log").read_text()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
