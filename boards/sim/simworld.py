"""The world around a simulated Petrel node (boards/esp32-node.json wiring),
for `make sim` and the wake-cycle tests: a setup module for the boot runner,
called at every boot to wire the device models.

- SHT4x at 0x44 on I2C 0, powered from the sensor rail (GPIO25 high): the
  temperature follows a daily cycle (15..25 degC, warmest at 15:00 UTC),
  humidity the opposite way.
- Battery divider 2:1 on GPIO35: board.scenario["batt_mv"] (default 3000).
- BOOT button on GPIO0 (pulled up; a test drives it low to hold it), alarm
  contact on GPIO33 (active low).

Faults, from board.scenario (JSON, carried across boots and to the VM):
  "sht4x": "missing" | "nack" | "crc" | "bug" | "hang"
           bug: the driver meets an exception no sensor error covers (as a
           bug in it would raise); hang: the chip holds the bus forever and
           the driver's bus timeout is defeated (a stuck wake: only the
           watchdog ends it)
"""

import math

from simstate import board

SDA, SCL = 21, 22
RAIL = 25
BATTERY_PIN = 35
DAY_US = 86400 * 1000000


class _Broken:
    """A part on the bus the I2C fake can address (none of simdev's faults)."""

    fault = None
    stretch_us = 0
    corrupt = None
    rail = None

    def powered(self):
        return True


class _Bug(_Broken):
    """Whatever the driver sends, something inside it breaks."""

    def i2c_write(self, data):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    def read_bytes(self, n):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")


class _Hang(_Broken):
    """A part that never lets go of the bus, with a driver that never gives up."""

    def i2c_write(self, data):
        board.advance(3600 * 1000000)  # an hour: the watchdog fires on the way

    def read_bytes(self, n):
        board.advance(3600 * 1000000)
        return b"\xff" * n


def temperature_c(world_us):
    t = (board.true_unix_at_start * 1000000 + world_us) % DAY_US / DAY_US  # fraction of the UTC day
    return 20.0 + 5.0 * math.cos(2 * math.pi * (t - 15.0 / 24))


def setup(b):
    from simdev.sht4x import SHT4xModel

    sc = b.scenario
    fault = sc.get("sht4x")
    b.i2c[0] = {}
    if fault == "hang":
        b.i2c[0][0x44] = _Hang()
    elif fault == "bug":
        b.i2c[0][0x44] = _Bug()
    elif fault != "missing":
        sht = SHT4xModel()
        sht.rail = (RAIL, 1)
        sht.temperature_c = temperature_c(b.world_us)
        sht.humidity = 50.0 - (sht.temperature_c - 20.0) * 2
        if fault == "nack":
            sht.fault = "nack"
        elif fault == "crc":
            sht.bad_crc = True
        b.i2c[0][0x44] = sht
    # 2:1 divider: half the battery at the pad
    b.analog[BATTERY_PIN] = sc.get("batt_mv", 3000) * 1000 // 2
