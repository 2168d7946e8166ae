"""The board as /board.json describes it (written by `petrel deploy` from the
profile's "hardware" section): buses, sensors, battery divider, switched power
rails, the maintenance and alarm pins. Everything is reached through the
MicroPython API only.

    {"i2c": {"0": {"scl": 22, "sda": 21, "freq": 100000}},
     "sensors": {"sht4x": {"bus": 0, "addr": 68}, "bme280": {"bus": 0, "addr": 118},
                 "ds18b20": {"pin": 4}},
     "battery": {"pin": 35, "divider": [2, 1]},
     "rails": [{"pin": 25, "on": 1, "settle_ms": 5}],
     "maintenance_pin": {"pin": 0, "active": 0},
     "alarm_pin": {"pin": 33, "level": 0}}

Quantities a channel can name, with the driver's native scale and unit:
    sht4x.t (1/1000 Cel), sht4x.rh (1/1000 %RH), bme280.t (1/100 Cel),
    bme280.p (1/256 Pa), bme280.rh (1/1024 %RH), ds18b20.t (1/1000 Cel, first
    sensor; ds18b20.N.t the N-th by ROM order), battery.v (1/1000 V)
"""

import json
import time

import machine

QUANTITIES = {
    "sht4x.t": (1000, "Cel"), "sht4x.rh": (1000, "%RH"),
    "bme280.t": (100, "Cel"), "bme280.p": (256, "Pa"), "bme280.rh": (1024, "%RH"),
    "ds18b20.t": (1000, "Cel"), "battery.v": (1000, "V"),
}


def quantity(name):
    """(native scale, unit) of a channel's sensor name; KeyError if unknown."""
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "ds18b20" and parts[1].isdigit():
        name = "ds18b20." + parts[2]
    return QUANTITIES[name]


def load(path="board.json"):
    """The hardware description, {} when the file is missing (a bare board:
    battery and sensors unknown). A damaged file is an error: the caller logs it."""
    try:
        with open(path) as f:
            return json.loads(f.read()).get("hardware", {})
    except OSError:
        return {}


class Hardware:
    def __init__(self, desc):
        self.desc = desc
        self._i2c = {}
        self._ow = None
        self._roms = None

    # ------------------------------------------------------------ pins
    def maintenance_held(self):
        """The technician's pin (the BOOT button on most boards) held at boot."""
        m = self.desc.get("maintenance_pin")
        if not m:
            return False
        p = machine.Pin(m["pin"], machine.Pin.IN, machine.Pin.PULL_UP if m.get("active", 0) == 0 else None)
        return p.value() == m.get("active", 0)

    def arm_alarm_wake(self):
        """An alarm pin wakes the node from deep sleep (ext0: one RTC GPIO).
        The ESP32 forgets wake sources at each wake: arm it before every sleep.
        ext0 wakes on a level, not an edge: a contact still closed would wake
        the chip again at once, wake after wake, until the battery is gone. So
        it is armed only while the pin is at rest; the timer wakes re-arm it
        once the contact opens. -> whether it was armed."""
        a = self.desc.get("alarm_pin")
        if not a:
            return False
        import esp32

        level = a.get("level", 0)
        pin = machine.Pin(a["pin"], machine.Pin.IN)
        if pin.value() == level:
            return False
        esp32.wake_on_ext0(pin, level)
        return True

    # ------------------------------------------------------------ power
    def rails(self, on):
        """Switch the sensor rails; on: wait for the slowest to settle. Off, the
        pin is held through deep sleep so the rail cannot float back on."""
        settle = 0
        for r in self.desc.get("rails", ()):
            level = r.get("on", 1) if on else 1 - r.get("on", 1)
            p = machine.Pin(r["pin"], machine.Pin.OUT, hold=False)  # a held pad ignores writes
            p.value(level)
            if not on:
                machine.Pin(r["pin"], machine.Pin.OUT, value=level, hold=True)
            settle = max(settle, r.get("settle_ms", 0))
        if on and settle:
            time.sleep_ms(settle)

    def battery_mv(self):
        """Battery millivolts, or None when the board has no divider to read."""
        b = self.desc.get("battery")
        if not b:
            return None
        import battery

        return battery.Battery(b["pin"], divider=tuple(b.get("divider", (2, 1))),
                               calibration=b.get("calibration")).read_mv()

    # ------------------------------------------------------------ sensors
    def _bus(self, n):
        bus = self._i2c.get(n)
        if bus is None:
            c = self.desc.get("i2c", {}).get(str(n), {})
            if "scl" in c:
                bus = machine.I2C(n, scl=machine.Pin(c["scl"]), sda=machine.Pin(c["sda"]),
                                  freq=c.get("freq", 100000))
            else:
                bus = machine.I2C(n)
            self._i2c[n] = bus
        return bus

    def read(self, sensor):
        """One measurement of a sensor: {quantity: native int}. Raises the
        driver's errors (OSError, sensor.SensorError) for the caller to count."""
        spec = self.desc.get("sensors", {}).get(sensor)
        if sensor == "battery":
            return {"battery.v": self.battery_mv()}
        if spec is None:
            raise OSError("sensor %s is not wired on this board (board.json)" % sensor)
        if sensor == "sht4x":
            import sht4x

            t, rh = sht4x.SHT4x(self._bus(spec.get("bus", 0)), spec.get("addr", sht4x.ADDRESS)).read()
            return {"sht4x.t": t, "sht4x.rh": rh}
        if sensor == "bme280":
            import bme280

            dev = bme280.BME280(self._bus(spec.get("bus", 0)), spec.get("addr", bme280.ADDRESS))
            t, p, h = dev.read()
            return {"bme280.t": t, "bme280.p": p, "bme280.rh": h}
        if sensor == "ds18b20":
            import ds18b20
            import onewire

            if self._ow is None:
                self._ow = ds18b20.DS18B20(onewire.OneWire(machine.Pin(spec["pin"])))
                self._roms = sorted(self._ow.scan())
            if not self._roms:
                raise OSError("ds18b20: no sensor answers on pin %d" % spec["pin"])
            self._ow.convert()
            out = {}
            for i in range(len(self._roms)):
                try:
                    out["ds18b20.%d.t" % i] = self._ow.read(self._roms[i])
                except Exception as e:  # one bad sensor on the bus does not silence the others
                    import eventlog

                    eventlog.warn("sensor", "ds18b20.%d failed: %s: %s", i, type(e).__name__, e)
            if "ds18b20.0.t" in out:
                out["ds18b20.t"] = out["ds18b20.0.t"]
            return out
        raise OSError("no driver for sensor %s" % sensor)
