"""Fixtures for host tests that need a real broker."""

import pytest


@pytest.fixture(scope="session")
def broker():
    from petrel.broker import Broker

    b = Broker().start()
    yield b
    b.stop()
