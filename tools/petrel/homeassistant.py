"""Home Assistant MQTT discovery for what `petrel collect` stores, so a Home
Assistant pointed at the broker shows every Petrel node with no custom code.

For every device and channel the collector has seen (verified and stored):
  homeassistant/sensor/<device>/<channel>/config   retained JSON: the entity
  petrel/<device>/state/<channel>                  retained, the latest value
                                                   as plain text ("21.53")

One config per entity (not device-based discovery's one
homeassistant/device/<device>/config with cmps): it works with every Home
Assistant that has MQTT discovery (device-based discovery needs 2024.11 or
later), a channel that appears later is one more retained message without
rewriting the others, and an empty payload on one topic removes one channel.

What the config says and why:
- device: identifiers ["petrel_<device>"], model, sw_version = the health
  record's fw; the config is sent again when fw or uplink_s change.
- device_class and unit_of_measurement from the channel's SenML unit (UNITS);
  a unit not in the table is passed through with no device class.
- expire_after = 2 x uplink_s + EXPIRE_MARGIN_S (from the node's last health
  record; absent until one arrived): values arrive once per uplink, so one
  missed uplink (Wi-Fi down, a session that failed) does not blank the
  sensor, a second does; the margin covers the wake's network budget, the
  wall-clock grid's jitter and the collector's own delay.
- availability from the node's retained status topic petrel/<device>/status
  through availability_template: "online" and "sleeping" are both available
  (a sleepy node is asleep nearly all the time; showing it unavailable
  between wakes would be noise), "safe" is not: in safe mode the node takes
  no readings, so its last values are not current.
- state_class "measurement": Home Assistant keeps long-term statistics.
Home Assistant stamps a state with its arrival time, not the measurement's:
the state is the newest reading of the channel (older resends never replace
it), and the store keeps the real times.

The health record's fields a fleet owner watches (HEALTH: battery, Wi-Fi
signal, readings queued, awake time, crashes, readings dropped or refused, NTP
answers refused, the config version applied, downlink messages refused, the
app version running, its trial and the updates rolled back) are
diagnostic entities of the
same device: homeassistant/sensor/<device>/_health_<field>/config, the value
on petrel/<device>/state/_health/<field> (a channel name never starts with
"_", so neither can collide with a channel's). They stay available in safe
mode (the node still sends its health then), a value the node marks as not
measured (battery 0, RSSI 0, queue -1) is not published, and an older health
record (lower COSE sequence number, from a resend or another collector)
never replaces a newer one's values.
"""

import json
import math
import re

from . import __version__

PREFIX = "homeassistant"
EXPIRE_MARGIN_S = 120
MAX_CHANNELS = 64  # per device: an authenticated but broken node cannot grow this without bound
AVAILABLE = "online"
NOT_AVAILABLE = "offline"
AVAILABILITY_TEMPLATE = ("{{ '%s' if value in ('online', 'sleeping') else '%s' }}"
                         % (AVAILABLE, NOT_AVAILABLE))
HEALTH_AVAILABILITY_TEMPLATE = ("{{ '%s' if value in ('online', 'sleeping', 'safe') else '%s' }}"
                                % (AVAILABLE, NOT_AVAILABLE))

# health field -> (entity name, HA unit, device class, the node's "not measured")
HEALTH = {
    "batt": ("battery", "mV", "voltage", 0),
    "rssi": ("Wi-Fi signal", "dBm", "signal_strength", 0),
    "q": ("readings queued", None, None, -1),
    "awake": ("awake time", "ms", "duration", None),
    "crash": ("crashes since power-on", None, None, None),
    "drop": ("readings dropped (outbox full)", None, None, -1),
    "exhausted": ("readings refused (numbers used up)", None, None, None),
    "ntp_refused": ("NTP answers refused", None, None, None),
    # the downlink (issue 16): 0 is meaningful for both (none pushed yet, none refused)
    "cfgv": ("config version applied", None, None, None),
    "dref": ("downlinks refused since power-on", None, None, None),
    # updates (issue 17): the app version running (0: the factory app), 1 while on trial, rollbacks
    "appv": ("app version running", None, None, None),
    "appt": ("app on trial", None, None, None),
    "aprb": ("app updates rolled back", None, None, None),
}

# SenML unit (RFC 8428 and RFC 8798's secondary units) -> (Home Assistant's
# unit, device class); the pairs are ones HA accepts together
UNITS = {
    "Cel": ("°C", "temperature"), "K": ("K", "temperature"),
    "%RH": ("%", "humidity"), "%EL": ("%", "battery"),
    "V": ("V", "voltage"), "mV": ("mV", "voltage"),
    "A": ("A", "current"), "mA": ("mA", "current"),
    "Pa": ("Pa", "pressure"), "hPa": ("hPa", "pressure"),
    "W": ("W", "power"), "kW": ("kW", "power"),
    "Wh": ("Wh", "energy"), "kWh": ("kWh", "energy"),
    "lx": ("lx", "illuminance"), "dBm": ("dBm", "signal_strength"),
    "Hz": ("Hz", "frequency"), "s": ("s", "duration"), "ms": ("ms", "duration"),
    "m": ("m", "distance"), "cm": ("cm", "distance"), "mm": ("mm", "distance"),
    "km": ("km", "distance"), "m/s": ("m/s", "speed"), "km/h": ("km/h", "speed"),
    "kg": ("kg", "weight"), "g": ("g", "weight"), "W/m2": ("W/m²", "irradiance"),
    "l": ("L", "volume"), "m3": ("m³", "volume"), "pH": (None, "ph"),
    "ug/m3": ("µg/m³", None), "ppm": ("ppm", None), "%": ("%", None),
    "/": (None, None), "count": (None, None),
}


def slug(s):
    """A name as discovery's node_id/object_id allow it: [a-zA-Z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", s)[:64] or "_"


def discovery_topic(device, channel, prefix=PREFIX):
    return "%s/sensor/%s/%s/config" % (prefix, slug(device), slug(channel))


def state_topic(device, channel, topic_prefix="petrel"):
    return "%s/%s/state/%s" % (topic_prefix, device, channel)


def expire_after(health):
    """Seconds after which HA shows the value as unavailable, or None."""
    try:
        up = int(float((health or {}).get("uplink_s")))
    except (TypeError, ValueError, OverflowError):
        return None
    return 2 * up + EXPIRE_MARGIN_S if 0 < up < 10 ** 8 else None


def health_object(field):
    return "_health_" + field


def health_state_topic(device, field, topic_prefix="petrel"):
    return "%s/%s/state/_health/%s" % (topic_prefix, device, field)


def health_config(device, field, health=None, topic_prefix="petrel"):
    """The discovery payload of one health field (a diagnostic entity)."""
    name, ha_unit, dclass, _ = HEALTH[field]
    c = config(device, health_object(field), None, health, topic_prefix)
    c.update(name=name, state_topic=health_state_topic(device, field, topic_prefix),
             entity_category="diagnostic", availability_template=HEALTH_AVAILABILITY_TEMPLATE)
    if ha_unit:
        c["unit_of_measurement"] = ha_unit
    if dclass:
        c["device_class"] = dclass
    return c


def config(device, channel, unit, health=None, topic_prefix="petrel"):
    """The discovery payload (a dict) of one channel of one device."""
    ha_unit, dclass = UNITS.get(unit, (unit or None, None))
    uid = "petrel_%s_%s" % (slug(device), slug(channel))
    dev = {"identifiers": ["petrel_" + slug(device)], "name": "Petrel " + device,
           "model": "Petrel sensor node", "manufacturer": "Petrel"}
    fw = (health or {}).get("fw")
    if fw is not None:
        dev["sw_version"] = str(fw)[:64]
    c = {
        "name": channel,
        "unique_id": uid,
        "state_topic": state_topic(device, channel, topic_prefix),
        "state_class": "measurement",
        "availability_topic": "%s/%s/status" % (topic_prefix, device),
        "availability_template": AVAILABILITY_TEMPLATE,
        "payload_available": AVAILABLE,
        "payload_not_available": NOT_AVAILABLE,
        "device": dev,
        "origin": {"name": "petrel collect", "sw_version": __version__},
    }
    if ha_unit:
        c["unit_of_measurement"] = ha_unit
    if dclass:
        c["device_class"] = dclass
    exp = expire_after(health)
    if exp:
        c["expire_after"] = exp
    return c


class Publisher:
    """What the collector tells Home Assistant, called after each commit:
    a channel's config once per run and again when its device's fw,
    uplink_s or the channel's unit change; a channel's value when it is newer
    than the last one published. publish(topic, payload_bytes, qos, retain)."""

    def __init__(self, publish, prefix=PREFIX, topic_prefix="petrel"):
        self.publish = publish
        self.prefix = prefix
        self.topic_prefix = topic_prefix
        self.health = {}    # device -> last health dict
        self.health_seq = {}  # device -> COSE seq of the health record published
        self.health_configs = {}  # (device, field) -> published config
        self.channels = {}  # device -> {channel: [unit, published config, newest (time, rid)]}

    def seed(self, device, health):
        """The last health record the store holds, so a restarted collector's
        configs carry fw and expire_after from the start."""
        if health:
            self.health[device] = dict(health)

    def stored(self, msg):
        if msg.kind == "health":
            if msg.seq <= self.health_seq.get(msg.device, -1):
                return  # an older record than the one shown
            self.health_seq[msg.device] = msg.seq
            self.health[msg.device] = dict(msg.health or {})
            for ch in list(self.channels.get(msg.device, ())):
                self._config(msg.device, ch)
            self._health(msg.device)
            return
        chans = self.channels.setdefault(msg.device, {})
        newest = {}
        for r in msg.readings:
            if r.time is None:  # undated: an old power-on's reading, never "now"
                continue
            k = (r.time, r.rid)
            if r.channel not in newest or k > newest[r.channel][0]:
                newest[r.channel] = (k, r)
        for ch, (k, r) in newest.items():
            st = chans.get(ch)
            if st is None:
                if len(chans) >= MAX_CHANNELS:
                    continue
                st = chans[ch] = [r.unit, None, None]
            if st[0] != r.unit:
                st[0] = r.unit
            self._config(msg.device, ch)
            if st[2] is None or k > st[2]:
                st[2] = k
                self.publish(state_topic(msg.device, ch, self.topic_prefix),
                             r.exact.encode(), 0, True)

    def _health(self, device):
        h = self.health[device]
        for field, (_, _, _, unknown) in HEALTH.items():
            v = h.get(field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v == unknown or \
                    (isinstance(v, float) and not math.isfinite(v)):
                continue
            c = health_config(device, field, h, self.topic_prefix)
            if c != self.health_configs.get((device, field)):
                self.health_configs[(device, field)] = c
                self.publish(discovery_topic(device, health_object(field), self.prefix),
                             json.dumps(c, sort_keys=True).encode(), 1, True)
            self.publish(health_state_topic(device, field, self.topic_prefix),
                         ("%d" % v if v == int(v) else repr(v)).encode(), 0, True)

    def _config(self, device, ch):
        st = self.channels[device][ch]
        c = config(device, ch, st[0], self.health.get(device), self.topic_prefix)
        if c != st[1]:
            st[1] = c
            self.publish(discovery_topic(device, ch, self.prefix),
                         json.dumps(c, sort_keys=True).encode(), 1, True)
