"""The PostgreSQL backend of store.py (psycopg 3): the same schema and
behaviour, for when one machine's SQLite file is not enough. Several
collectors may share the database: a batch locks its devices' rows
(SELECT ... FOR UPDATE, in device order, so two batches cannot deadlock)
before the window check, and the primary keys hold whatever else races."""

import psycopg

from .store import SCHEMA, Store

_INSERT_READINGS = (
    "INSERT INTO readings (device, channel, rid, time, quality, value, exact, unit, flags, seq, received)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::float8[], %s::text[], %s::float8[],"
    " %s::text[], %s::text[], %s::int[], %s::bigint[], %s::float8[]) ON CONFLICT DO NOTHING")


class PgStore(Store):
    def __init__(self, url):
        Store.__init__(self)
        self.url = url
        self.db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        self._begin()
        try:
            self.db.execute("SELECT pg_advisory_xact_lock(7263516)")  # two first opens: one creates
            for stmt in SCHEMA.split(";")[:-1]:
                self.db.execute(stmt)
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def _q(self, sql):
        return sql.replace("?", "%s")

    def _begin(self):
        self.db.execute("BEGIN")

    def _begin_read(self):
        pass  # autocommit: each read is its own snapshot

    def _end_read(self):
        pass

    def _savepoint(self):
        self.db.execute("SAVEPOINT m")

    def _release(self):
        self.db.execute("RELEASE SAVEPOINT m")

    def _rollback_to(self):
        self.db.execute("ROLLBACK TO SAVEPOINT m")
        self.db.execute("RELEASE SAVEPOINT m")

    def _commit(self):
        self.db.execute("COMMIT")

    def _rollback(self):
        if self.db.closed:
            return
        if self.db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.db.execute("ROLLBACK")

    def _lock_devices(self, devices, msgs):
        first = {}
        for m in msgs:
            first.setdefault(m.device, m.received)
        with self.db.cursor() as cur:
            cur.execute("INSERT INTO devices (device, first_seen, last_seen, high_seq)"
                        " SELECT d, f, f, -1 FROM unnest(%s::text[], %s::float8[]) AS n(d, f) ORDER BY d"
                        " ON CONFLICT DO NOTHING", (devices, [first[d] for d in devices]))
            cur.execute("SELECT device, high_seq FROM devices WHERE device = ANY(%s) ORDER BY device FOR UPDATE",
                        (devices,))
            return dict(cur.fetchall())

    def _insert_readings(self, rows):
        cols = [list(c) for c in zip(*rows)]
        return self.db.execute(_INSERT_READINGS, cols).rowcount
