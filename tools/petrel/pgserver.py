"""A real PostgreSQL server on loopback for tests, benchmarks and trying the
collector's PostgreSQL store: Debian's PostgreSQL 15 (initdb, postgres),
a cluster made for the run in a temporary folder, trust authentication on
127.0.0.1 only, durability off (fsync) since the folder is thrown away.

    with PgServer() as pg:
        st = store.open(pg.url)            # the "postgres" database
        url = pg.database("other")         # a fresh database

initdb refuses to run as root: as root the server runs as the system user
"postgres" (Debian's package creates it) or, without one, "petrel-pg"
(created). The folder's parents must then be reachable by that user; the
default (a new folder under the system's temporary folder) is.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from .broker import free_port

BIN = "/usr/lib/postgresql/15/bin"


def binaries():
    """The folder of initdb and postgres, or None."""
    for d in (BIN, os.environ.get("PETREL_PG_BIN", "")):
        if d and os.path.exists(os.path.join(d, "postgres")) and os.path.exists(os.path.join(d, "initdb")):
            return d
    return None


def ensure_installed():
    """Install Debian's postgresql when it is missing (sudo when not root)."""
    if binaries():
        return binaries()
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
    return binaries()


def _server_user():
    """(uid, gid) to run as: ourselves, or a system user when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "petrel-pg"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "petrel-pg"],
                   check=True)
    pw = pwd.getpwnam("petrel-pg")
    return pw.pw_uid, pw.pw_gid


class PgServer:
    def __init__(self, folder=None, user="petrel"):
        self._tmp = None
        if folder is None:
            self._tmp = tempfile.mkdtemp(prefix="petrel-pg-")
            folder = self._tmp
        self.folder = str(folder)
        self.user = user
        self.port = None
        self.proc = None
        self.url = None

    def _run_as(self):
        ids = _server_user()
        if ids is None:
            return {}
        return dict(user=ids[0], group=ids[1], extra_groups=[])

    def start(self, timeout=15):
        bindir = ensure_installed()
        as_user = self._run_as()
        data = os.path.join(self.folder, "data")
        os.makedirs(self.folder, exist_ok=True)
        if as_user:
            os.chown(self.folder, as_user["user"], as_user["group"])
        r = subprocess.run([os.path.join(bindir, "initdb"), "-D", data, "-U", self.user, "-A", "trust",
                            "-E", "UTF8", "--no-sync", "--no-instructions", "--locale=C"],
                           capture_output=True, text=True, cwd=self.folder, **as_user)
        if r.returncode:
            raise RuntimeError("initdb failed: %s" % (r.stderr or r.stdout)[-500:])
        self.port = free_port()
        self.proc = subprocess.Popen(
            [os.path.join(bindir, "postgres"), "-D", data, "-p", str(self.port), "-h", "127.0.0.1",
             "-k", self.folder, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=100", "-c", "logging_collector=off"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.folder, "postgres.log"), "wb"),
            cwd=self.folder, **as_user)
        self.url = "postgresql://%s@127.0.0.1:%d/postgres" % (self.user, self.port)
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("postgres did not start: %s" % self.log()[-500:]) from None
                time.sleep(0.05)

    def database(self, name):
        """Create a fresh database (dropped first if there) -> its url."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise ValueError("database name %r: letters, digits and _ only" % name)
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
            c.execute("CREATE DATABASE %s" % name)
        return "postgresql://%s@127.0.0.1:%d/%s" % (self.user, self.port, name)

    def log(self):
        try:
            with open(os.path.join(self.folder, "postgres.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: sessions ended, no waiting for them
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
