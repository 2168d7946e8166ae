"""Home Assistant discovery (tools/petrel/homeassistant.py): the configs
checked against the MQTT sensor's discovery schema (written from
home-assistant.io/integrations/sensor.mqtt and /integrations/mqtt), then read
from a real Mosquitto by a subscriber that does what Home Assistant does:
reads the retained configs, subscribes to their state and availability
topics and renders the availability template with Jinja2."""

import json
import os
import re
import threading
import time

import jinja2
import paho.mqtt.client as paho

from petrel import homeassistant as ha, store as _store, testmsg
from petrel.collect import Collector

T0 = 1767225600

# HA's MQTT sensor options (the ones a discovery payload may carry here)
OPTIONS = {"name", "unique_id", "object_id", "state_topic", "state_class", "availability_topic",
           "availability_template", "payload_available", "payload_not_available", "device", "origin",
           "unit_of_measurement", "device_class", "expire_after", "value_template", "force_update",
           "suggested_display_precision", "entity_category", "icon", "qos", "enabled_by_default"}
DEVICE_OPTIONS = {"identifiers", "connections", "name", "model", "manufacturer", "sw_version", "hw_version",
                  "serial_number", "suggested_area", "via_device", "configuration_url"}
# sensor device classes and the units HA accepts with them (the ones UNITS uses)
CLASS_UNITS = {"temperature": {"°C", "°F", "K"}, "humidity": {"%"}, "battery": {"%"},
               "voltage": {"V", "mV", "µV", "kV"}, "current": {"A", "mA"},
               "pressure": {"Pa", "kPa", "hPa", "bar", "mbar", "psi", "inHg", "mmHg"},
               "power": {"W", "kW"}, "energy": {"Wh", "kWh", "MWh"}, "illuminance": {"lx"},
               "signal_strength": {"dB", "dBm"}, "frequency": {"Hz", "kHz", "MHz"},
               "duration": {"s", "ms", "min", "h", "d"}, "distance": {"m", "cm", "mm", "km"},
               "speed": {"m/s", "km/h"}, "weight": {"kg", "g"}, "irradiance": {"W/m²"},
               "volume": {"L", "m³"}, "ph": {None}}
ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def check_discovery(topic, payload):
    """The checks HA's discovery makes (or that make an entity work) -> the config."""
    parts = topic.split("/")
    assert len(parts) == 5 and parts[0] == "homeassistant" and parts[1] == "sensor" and parts[4] == "config"
    assert ID.match(parts[2]) and ID.match(parts[3]), topic
    c = json.loads(payload)
    assert set(c) <= OPTIONS, set(c) - OPTIONS
    assert isinstance(c["state_topic"], str) and c["state_topic"]  # required
    assert "+" not in c["state_topic"] and "#" not in c["state_topic"]
    assert isinstance(c["unique_id"], str) and c["unique_id"]  # the device registry needs it
    dev = c["device"]
    assert set(dev) <= DEVICE_OPTIONS and (dev.get("identifiers") or dev.get("connections"))
    if "device_class" in c:
        assert c["device_class"] in CLASS_UNITS, c["device_class"]
        assert c.get("unit_of_measurement") in CLASS_UNITS[c["device_class"]], c
    assert c.get("state_class") in (None, "measurement", "total", "total_increasing")
    if "expire_after" in c:
        assert isinstance(c["expire_after"], int) and c["expire_after"] > 0
    if "availability_topic" in c:
        assert {"payload_available", "payload_not_available"} <= set(c)
    return c


def test_every_mapped_unit_gives_a_config_home_assistant_accepts():
    for unit in list(ha.UNITS) + ["furlong", None]:
        c = check_discovery(ha.discovery_topic("p-a1b2c3", "t.1"),
                            json.dumps(ha.config("p-a1b2c3", "t.1", unit, {"fw": "0.7.0", "uplink_s": 3600})))
        assert c["device"]["sw_version"] == "0.7.0" and c["expire_after"] == 2 * 3600 + ha.EXPIRE_MARGIN_S
    assert ha.config("p-1", "t", "Cel")["device_class"] == "temperature"
    assert ha.config("p-1", "t", "Cel")["unit_of_measurement"] == "°C"
    assert ha.config("p-1", "rh", "%RH")["device_class"] == "humidity"
    c = ha.config("p-1", "x", "furlong")  # not in the table: the unit as sent, no class
    assert c["unit_of_measurement"] == "furlong" and "device_class" not in c


def test_expire_after_needs_a_sane_uplink_interval():
    assert ha.expire_after({"uplink_s": 300}) == 600 + ha.EXPIRE_MARGIN_S
    for h in (None, {}, {"uplink_s": "x"}, {"uplink_s": -5}, {"uplink_s": 0}, {"uplink_s": 1e300},
              {"uplink_s": float("nan")}):
        assert ha.expire_after(h) is None, h
    assert "expire_after" not in ha.config("p-1", "t", "Cel", {"fw": "1"})


class HomeAssistant:
    """Reads what HA reads: retained configs, then their state and availability topics."""

    def __init__(self, port, device):
        self.device = device
        self.configs, self.states, self.status = {}, {}, {}
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="hass-" + device)
        self.c.on_message = self._message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe("homeassistant/sensor/%s/+/config" % device, 1)

    def _message(self, client, userdata, m):
        with self.lock:
            if m.topic.endswith("/config"):
                if m.payload:
                    c = check_discovery(m.topic, m.payload)
                    if m.topic not in self.configs:
                        client.subscribe(c["state_topic"], 1)
                        client.subscribe(c["availability_topic"], 1)
                    self.configs[m.topic] = c
            elif m.topic.endswith("/status"):
                self.status[m.topic] = m.payload.decode()
            else:
                self.states[m.topic] = m.payload.decode()

    def entity(self, channel):
        """(state, available, config) as HA would show it."""
        with self.lock:
            c = self.configs[ha.discovery_topic(self.device, channel)]
            raw = self.status.get(c["availability_topic"])
            state = self.states.get(c["state_topic"])
        avail = None
        if raw is not None:
            got = jinja2.Environment().from_string(c["availability_template"]).render(value=raw)
            avail = got == c["payload_available"]
        if state is not None and "device_class" in c:
            float(state)  # a sensor with a device class must read as a number
        return state, avail, c

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def wait_for(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
        except KeyError:
            v = None
        if v:
            return v
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_home_assistant_reads_device_values_and_availability_from_the_broker(broker, tmp_path):
    dev = "p-ha%s" % os.urandom(3).hex()  # the session's broker keeps retained messages
    key = os.urandom(32)
    port = broker.ports["plain"]
    node = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="node-" + dev)
    node.connect("127.0.0.1", port)
    node.loop_start()
    status = "petrel/%s/status" % dev
    node.publish(status, b"sleeping", qos=1, retain=True).wait_for_publish(5)
    st = _store.open(tmp_path / "r.sqlite")
    col = Collector(st, {dev: key}, "127.0.0.1", port, insecure_plain=True, client_id="ha-" + dev,
                    homeassistant_prefix="homeassistant").start()
    h = HomeAssistant(port, dev)
    try:
        assert col.subscribed.wait(10)
        up = "petrel/%s/up" % dev
        # readings before any health record: configs without fw or expire_after yet
        node.publish(up, testmsg.up(key, dev, 1, [
            ("t", "Cel", 2153, 100, T0 + 600, 11), ("t", "Cel", 2140, 100, T0 + 300, 10),
            ("rh", "%RH", 5870, 100, T0 + 600, 12), ("bat", "V", 3010, 1000, T0 + 600, 13)]), qos=1)
        s, avail, c = wait_for(lambda: h.entity("t")[0] and h.entity("t"))
        assert s == "21.53" and avail is True and "expire_after" not in c  # "sleeping" is available
        assert c["unit_of_measurement"] == "°C" and c["device_class"] == "temperature"
        node.publish("petrel/%s/health" % dev, testmsg.health(key, dev, 2, {
            "fw": "0.7.0", "uplink_s": 3600, "sample_s": 300, "batt": 3010, "rssi": 0, "q": 5,
            "crash": 1, "awake": 327, "exhausted": 0, "ntp_refused": 2, "cfgv": 1767225600123, "dref": 3,
            "dwhy": "forged:2 replay:1"}, bt=T0 + 600), qos=1)
        wait_for(lambda: h.entity("t")[2].get("expire_after") == 2 * 3600 + ha.EXPIRE_MARGIN_S)
        # the health record's fields: diagnostic entities of the same device
        s, avail, c = wait_for(lambda: h.entity("_health_batt")[0] and h.entity("_health_batt"))
        assert s == "3010" and avail is True and c["entity_category"] == "diagnostic"
        assert c["device_class"] == "voltage" and c["unit_of_measurement"] == "mV"
        assert c["device"]["identifiers"] == ["petrel_" + dev] and c["name"] == "battery"
        assert wait_for(lambda: h.entity("_health_q")[0]) == "5"
        assert wait_for(lambda: h.entity("_health_awake")[0]) == "327"
        assert wait_for(lambda: h.entity("_health_ntp_refused")[0]) == "2"
        assert wait_for(lambda: h.entity("_health_exhausted")[0]) == "0"
        # the downlink's: the config version applied (a large int, shown exactly) and refusals
        s, avail, c = wait_for(lambda: h.entity("_health_cfgv")[0] and h.entity("_health_cfgv"))
        assert s == "1767225600123" and c["entity_category"] == "diagnostic" and avail is True
        s, avail, c = wait_for(lambda: h.entity("_health_dref")[0] and h.entity("_health_dref"))
        assert s == "3" and c["entity_category"] == "diagnostic"
        assert ha.discovery_topic(dev, "_health_rssi") not in h.configs  # 0: not measured
        for ch in ("t", "rh", "bat"):
            c = h.entity(ch)[2]
            assert c["device"]["sw_version"] == "0.7.0" and c["device"]["identifiers"] == ["petrel_" + dev]
        assert h.entity("rh")[0] == "58.7" and h.entity("rh")[2]["unit_of_measurement"] == "%"
        assert h.entity("bat")[0] == "3.01" and h.entity("bat")[2]["device_class"] == "voltage"
        # an older batch arriving late (a resend) does not replace the newest value
        node.publish(up, testmsg.up(key, dev, 3, [("t", "Cel", 2200, 100, T0 + 900, 14)]), qos=1)
        wait_for(lambda: h.entity("t")[0] == "22")
        node.publish(up, testmsg.up(key, dev, 4, [("t", "Cel", 1999, 100, T0 + 60, 5)]), qos=1)
        wait_for(lambda: col.counts["messages"] == 4)
        time.sleep(0.2)
        assert h.entity("t")[0] == "22"
        # safe mode: the node takes no readings, its values are not current
        node.publish(status, b"safe", qos=1, retain=True).wait_for_publish(5)
        wait_for(lambda: h.entity("t")[1] is False)
        assert h.entity("_health_batt")[1] is True  # health still comes in safe mode
        node.publish(status, b"online", qos=1, retain=True).wait_for_publish(5)
        wait_for(lambda: h.entity("t")[1] is True)
        # a new firmware: the config is sent again
        node.publish("petrel/%s/health" % dev, testmsg.health(key, dev, 5, {"fw": "0.7.1", "uplink_s": 300}),
                     qos=1)
        wait_for(lambda: h.entity("t")[2]["device"]["sw_version"] == "0.7.1")
        assert h.entity("t")[2]["expire_after"] == 600 + ha.EXPIRE_MARGIN_S
        node.publish("petrel/%s/health" % dev, testmsg.health(key, dev, 8, {"batt": 2950}), qos=1)
        wait_for(lambda: h.entity("_health_batt")[0] == "2950")
        # a health record older than the one shown (a resend, another collector) changes nothing
        node.publish("petrel/%s/health" % dev, testmsg.health(key, dev, 7, {"batt": 3300}), qos=1)
        wait_for(lambda: col.counts["messages"] == 7)
        time.sleep(0.2)
        assert h.entity("_health_batt")[0] == "2950"
    finally:
        h.close()
        col.stop()
        st.close()
        fields = [ha.health_object(f) for f in ha.HEALTH]
        for t in [status] + [ha.discovery_topic(dev, ch) for ch in ("t", "rh", "bat", *fields)] + [
                ha.state_topic(dev, ch) for ch in ("t", "rh", "bat")] + [
                ha.health_state_topic(dev, f) for f in ha.HEALTH]:
            node.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
        node.loop_stop()
        node.disconnect()


def test_a_restarted_collector_starts_from_the_stored_health(broker, tmp_path):
    """A collector started after the health record was stored: its configs
    carry fw and expire_after from the first reading on (seeded from the store)."""
    dev = "p-hb%s" % os.urandom(3).hex()
    key = os.urandom(32)
    port = broker.ports["plain"]
    st = _store.open(tmp_path / "r.sqlite")
    from petrel import verify

    v = verify.Verifier({dev: key})
    st.commit(v.open("petrel/%s/health" % dev, testmsg.health(key, dev, 1, {"fw": "0.8.0", "uplink_s": 600})))
    col = Collector(st, {dev: key}, "127.0.0.1", port, insecure_plain=True, client_id="ha-" + dev,
                    homeassistant_prefix="homeassistant").start()
    h = HomeAssistant(port, dev)
    node = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="node-" + dev)
    node.connect("127.0.0.1", port)
    node.loop_start()
    try:
        assert col.subscribed.wait(10)
        node.publish("petrel/%s/up" % dev, testmsg.up(key, dev, 2, [("t", "Cel", 2000, 100, T0, 1)]), qos=1)
        s, avail, c = wait_for(lambda: h.entity("t")[0] and h.entity("t"))
        assert s == "20" and avail is None  # no status published: HA would show it unavailable
        assert c["device"]["sw_version"] == "0.8.0" and c["expire_after"] == 1200 + ha.EXPIRE_MARGIN_S
    finally:
        h.close()
        col.stop()
        st.close()
        for t in (ha.discovery_topic(dev, "t"), ha.state_topic(dev, "t")):
            node.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
        node.loop_stop()
        node.disconnect()
