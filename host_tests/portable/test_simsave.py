# boards/sim/simsave: the board's state as JSON and back (what carries the
# clock, RTC memory and the ledger from one VM process to the next wake's).
import json

import simstate
import time

from ptest import station


def test_snapshot_and_restore_keep_the_ledger_and_the_radio_figures():
    b = simstate.board
    b.tls_cert_us = 123000
    b.net_timing = {"dhcp": 100}
    station()
    time.sleep_ms(5)
    snap = json.loads(json.dumps(b.snapshot()))
    other = simstate.Board()
    other.restore(snap)
    assert other.phases() == b.phases() and other.world_us == b.world_us
    assert other.tls_cert_us == 123000 and other.boot_mark == b.boot_mark
    assert b.phases()["radio"] == (100 + 60 + 600 + 80 + 100 + 5) * 1000  # profile's DHCP time
