"""Fixtures for host tests that need a real broker."""

import pytest


@pytest.fixture(scope="session")
def broker():
    from petrel.broker import Broker

    b = Broker().start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL 15 on loopback (Debian's package), one per session."""
    from petrel.pgserver import PgServer

    s = PgServer().start()
    yield s
    s.stop()


_pg_databases = [0]


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session's PostgreSQL: its url."""
    _pg_databases[0] += 1
    return pg_server.database("t%d" % _pg_databases[0])
