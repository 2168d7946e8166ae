"""Where verified messages go: SQLite (one file, WAL; the default) or
PostgreSQL (store_pg.py), one schema and one behaviour.

    st = store.open("readings.sqlite")          # or "sqlite:///rel.db", "postgresql://..."
    stored, dups = st.commit(msg)               # msg: verify.Message; or raises Rejected
    st.refusal("p-a1b2c3", "mac")               # count a refusal (device None: unknown)
    for r in st.readings(device="p-a1b2c3", channel="t", since=t0): ...
    st.close()

commit() is one transaction: the device's sequence window, the message row,
its readings (or health record) and the device's highest sequence number. A
COSE seq already stored for the device is refused as "duplicate" (a QoS 1
re-delivery), one at or below the highest seen minus WINDOW as "replay";
anything else is accepted, so two collectors of one group may commit one
device's messages out of order. Readings are unique on (device, channel,
rid): a resend after a lost PUBACK (new seq, same reading ids) stores nothing
twice; commit returns (stored, duplicates). Two Store objects, two processes
or two machines (PostgreSQL) may share a database: SQLite takes the write
lock at BEGIN IMMEDIATE, PostgreSQL locks the device rows (FOR UPDATE, in
device order so batches cannot deadlock) and the primary keys catch the rest.

Schema (the same on both; times are Unix seconds, REAL/DOUBLE PRECISION):
  devices   device PK, first_seen, last_seen (receive times), high_seq (highest
            COSE seq stored), readings (count stored), health (JSON of the
            latest health record), health_at (its receive time)
  messages  (device, seq) PK, kind "up"|"health", received, readings (stored),
            duplicates (readings already stored)
  readings  (device, channel, rid) PK, time (NULL: undated), quality
            "dated"|"relative"|"undated", value (float), exact (shortest
            decimal text, "21.53"), unit, flags (1 stale, 2 clamped,
            4 replaced), seq (the message that brought it), received
            indexed on (device, channel, time) and on time
  health    (device, seq) PK, received, time (the node's, or NULL), fields (JSON)
  refusals  (device, reason) PK (device '' when not a known device), count, last_at
"""

import json
import os
import sqlite3
import threading
import time as _time

from .verify import Reading, Rejected

WINDOW = 1024
SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, first_seen DOUBLE PRECISION NOT NULL,
  last_seen DOUBLE PRECISION NOT NULL, high_seq BIGINT NOT NULL, readings BIGINT NOT NULL DEFAULT 0,
  health TEXT, health_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS messages (device TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
  received DOUBLE PRECISION NOT NULL, readings INTEGER NOT NULL, duplicates INTEGER NOT NULL,
  PRIMARY KEY (device, seq));
CREATE TABLE IF NOT EXISTS readings (device TEXT NOT NULL, channel TEXT NOT NULL, rid BIGINT NOT NULL,
  time DOUBLE PRECISION, quality TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, exact TEXT NOT NULL,
  unit TEXT, flags INTEGER NOT NULL, seq BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (device, channel, rid));
CREATE INDEX IF NOT EXISTS readings_channel_time ON readings (device, channel, time);
CREATE INDEX IF NOT EXISTS readings_time ON readings (time);
CREATE TABLE IF NOT EXISTS health (device TEXT NOT NULL, seq BIGINT NOT NULL,
  received DOUBLE PRECISION NOT NULL, time DOUBLE PRECISION, fields TEXT NOT NULL,
  PRIMARY KEY (device, seq));
CREATE TABLE IF NOT EXISTS refusals (device TEXT NOT NULL, reason TEXT NOT NULL, count BIGINT NOT NULL,
  last_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (device, reason));
"""
_READING_COLS = "device, channel, unit, value, exact, time, quality, flags, rid"
_INSERT_READING = ("INSERT INTO readings (device, channel, rid, time, quality, value, exact, unit, flags,"
                   " seq, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")


def open(url):  # noqa: A001 (the module's entry point, store.open)
    """A Store for a path, "sqlite:///path" (SQLAlchemy's form: four slashes
    for an absolute path) or "postgresql://..."."""
    url = str(url)
    if url.startswith(("postgresql://", "postgres://")):
        from .store_pg import PgStore

        return PgStore(url)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///"):]
    elif "://" in url:
        raise ValueError("store url must be a path, sqlite:///path or postgresql://...")
    return SqliteStore(url)


class Store:
    """The behaviour both backends share; a backend supplies _q (its
    placeholders), _begin/_savepoint/_release/_rollback_to/_commit/_rollback,
    _lock_devices and _insert_readings."""

    def __init__(self):
        self.lock = threading.Lock()  # one connection, maybe used from a collector's threads

    def _q(self, sql):
        return sql

    def _exec(self, sql, args=()):
        return self.db.execute(self._q(sql), args)

    def commit(self, msg):
        """One message in one transaction -> (stored, duplicates), or raises Rejected."""
        r = self.commit_many([msg])[0]
        if isinstance(r, Rejected):
            raise r
        return r

    def commit_many(self, msgs):
        """Several messages in one transaction (a collector's batch) -> a list,
        per message (stored, duplicates) or the Rejected it met; a refused
        message leaves the others' rows alone."""
        with self.lock:
            self._begin()
            try:
                highs = self._lock_devices(sorted(set(m.device for m in msgs)), msgs)
                out = []
                for m in msgs:
                    self._savepoint()
                    try:
                        out.append(self._one(m, highs))
                        self._release()
                    except Rejected as e:
                        self._rollback_to()
                        out.append(e)
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return out

    def _one(self, msg, highs):
        high = highs[msg.device]
        if msg.seq <= high - WINDOW:
            raise Rejected("replay", "seq %d at or below %d - %d" % (msg.seq, high, WINDOW), msg.device)
        if self._exec("SELECT 1 FROM messages WHERE device = ? AND seq = ?", (msg.device, msg.seq)).fetchone():
            raise Rejected("duplicate", "seq %d already stored" % msg.seq, msg.device)
        stored = 0
        if msg.kind == "health":
            fields = json.dumps(msg.health, sort_keys=True)
            self._exec("INSERT INTO health (device, seq, received, time, fields) VALUES (?, ?, ?, ?, ?)",
                       (msg.device, msg.seq, msg.received, msg.time, fields))
            self._exec("UPDATE devices SET health = ?, health_at = ? WHERE device = ? AND"
                       " (health_at IS NULL OR health_at <= ?)", (fields, msg.received, msg.device, msg.received))
        elif msg.readings:
            stored = self._insert_readings([
                (r.device, r.channel, r.rid, r.time, r.quality, r.value, r.exact, r.unit, r.flags, msg.seq,
                 msg.received) for r in msg.readings])
        dups = len(msg.readings) - stored
        self._exec("INSERT INTO messages (device, seq, kind, received, readings, duplicates)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (msg.device, msg.seq, msg.kind, msg.received, stored, dups))
        highs[msg.device] = max(high, msg.seq)
        self._exec("UPDATE devices SET high_seq = ?, readings = readings + ?,"
                   " last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END WHERE device = ?",
                   (highs[msg.device], stored, msg.received, msg.received, msg.device))
        return stored, dups

    def refusal(self, device, reason):
        """Count a refused message (device: a known device id, or None)."""
        with self.lock:
            self._begin()
            try:
                self._exec("INSERT INTO refusals (device, reason, count, last_at) VALUES (?, ?, 1, ?)"
                           " ON CONFLICT (device, reason) DO UPDATE SET count = refusals.count + 1,"
                           " last_at = excluded.last_at", (device or "", reason, _time.time()))
                self._commit()
            except BaseException:
                self._rollback()
                raise

    def _read(self, sql, args=()):
        with self.lock:
            self._begin_read()
            try:
                return self._exec(sql, args).fetchall()
            finally:
                self._end_read()

    def readings(self, device=None, channel=None, since=None, until=None, limit=None):
        """Readings in time order (undated ones last, in id order) -> iterator of
        Reading. since/until (Unix seconds, inclusive) leave the undated out."""
        where, args = [], []
        for col, op, v in (("device", "=", device), ("channel", "=", channel),
                           ("time", ">=", since), ("time", "<=", until)):
            if v is not None:
                where.append("%s %s ?" % (col, op))
                args.append(v)
        sql = "SELECT %s FROM readings%s ORDER BY time IS NULL, time, device, channel, rid" % (
            _READING_COLS, " WHERE " + " AND ".join(where) if where else "")
        if limit is not None:
            sql += " LIMIT %d" % int(limit)
        return iter([Reading(*row) for row in self._read(sql, args)])

    def devices(self):
        """[{device, first_seen, last_seen, readings, health}] by device id;
        health: the latest health record (dict) or None."""
        rows = self._read("SELECT device, first_seen, last_seen, readings, health FROM devices ORDER BY device")
        return [dict(device=d, first_seen=f, last_seen=la, readings=n, health=json.loads(h) if h else None)
                for d, f, la, n, h in rows]

    def counts(self):
        out = {}
        for table in ("readings", "messages", "health"):
            out[table] = self._read("SELECT COUNT(*) FROM %s" % table)[0][0]
        out["refused"] = dict(self._read("SELECT reason, CAST(SUM(count) AS BIGINT) FROM refusals GROUP BY reason ORDER BY reason"))
        return out

    def refusals(self):
        """[(device or None, reason, count, last_at)]."""
        return [(d or None, r, n, t) for d, r, n, t in
                self._read("SELECT device, reason, count, last_at FROM refusals ORDER BY device, reason")]

    def close(self):
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SqliteStore(Store):
    def __init__(self, path):
        Store.__init__(self)
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise ValueError("no folder %s for the store" % d)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout = 30000")  # another process holding the write lock: wait
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        self._begin()
        for stmt in SCHEMA.split(";")[:-1]:
            self.db.execute(stmt)
        self._commit()

    def _begin(self):
        self.db.execute("BEGIN IMMEDIATE")  # the write lock now: the window check and the insert as one

    def _begin_read(self):
        pass

    def _end_read(self):
        pass

    def _savepoint(self):
        self.db.execute("SAVEPOINT m")

    def _release(self):
        self.db.execute("RELEASE m")

    def _rollback_to(self):
        self.db.execute("ROLLBACK TO m")
        self.db.execute("RELEASE m")

    def _commit(self):
        self.db.execute("COMMIT")

    def _rollback(self):
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _lock_devices(self, devices, msgs):
        first = {}
        for m in msgs:
            first.setdefault(m.device, m.received)
        for d in devices:
            self.db.execute("INSERT INTO devices (device, first_seen, last_seen, high_seq) VALUES (?, ?, ?, -1)"
                            " ON CONFLICT DO NOTHING", (d, first[d], first[d]))
        return dict((d, self.db.execute("SELECT high_seq FROM devices WHERE device = ?", (d,)).fetchone()[0])
                    for d in devices)

    def _insert_readings(self, rows):
        return self.db.executemany(_INSERT_READING, rows).rowcount
