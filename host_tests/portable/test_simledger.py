# boards/sim/simledger: every microsecond of the board's clock booked to one
# phase (boot, cpu, radio, tls, sleep), across deep sleep and boots.
import machine
import simstate
import time

from ptest import sleep_and_wake, station


def total(b):
    p = b.phases()
    return p["boot"] + p["cpu"] + p["radio"] + p["tls"] + p["sleep"]


def test_ledger_books_boot_cpu_radio_and_sleep_and_sums_to_the_clock():
    b = simstate.reset_world(power=False)
    b.boot_us = 300000
    b.power_on()
    assert b.phases()["boot"] == 300000
    time.sleep_ms(60)  # sampling, radio off
    w = station()
    w.active(False)
    sleep_and_wake(machine.deepsleep, 10000)
    p = b.phases()
    assert p["cpu"] >= 60000 and p["radio"] >= 1740000  # association and DHCP
    assert p["sleep"] == 10000000 and p["boot"] == 600000
    assert total(b) == b.world_us
    mark = b.boot_mark["ledger"]  # the second boot began after the sleep
    assert mark["sleep"] == 10000000 and mark["boot"] == 300000

