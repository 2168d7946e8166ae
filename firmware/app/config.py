"""The node's configuration: /config.json (what it does) and /secrets.json (its
keys), as `petrel provision` writes them, checked before anything uses them.

    cfg = config.load()          # a Config, or the last good one, or safe defaults
    cfg.sample_s, cfg.channels, cfg.broker["host"], cfg.secret("hmac_key")

Every error names the file, the key and the form expected:
    config.json: key 'sample_s' must be an integer in 10..86400, got '5m'
A file that does not parse or check is not used: the last configuration that
did (kept as /config.good.json) is, and the log says so; with none, safe
defaults (no uplink) and an error on the log. Secrets are checked for form
but never written to the log.
"""

import json

import machine

import eventlog as log
import filters

from app import hardware

DEFAULTS = {
    "format": 1,
    "device_id": None,  # derived from machine.unique_id() when absent
    "sample_s": 300,
    "uplink_every": 12,  # samples per uplink
    "batch": 36,  # readings per message
    "network_budget_ms": 10000,
    "alarms": [],
    "channels": [],
    "wifi": None,
    "broker": None,
    "topic": None,
    # battery policy: below low_mv no radio and the interval stretched by
    # low_stretch; below critical_mv no work at all, sleep critical_sleep_s
    "power": {"low_mv": 2700, "critical_mv": 2500, "low_stretch": 4, "critical_sleep_s": 21600},
    # after `after_crashes` consecutive crashed wakes: `wakes` wakes of safe
    # mode (no application; Wi-Fi, status and health only), `sleep_s` apart
    "safe_mode": {"after_crashes": 3, "wakes": 6, "sleep_s": 3600},
}


class ConfigError(ValueError):
    pass


def default_device_id():
    return "p-" + "".join("%02x" % b for b in machine.unique_id()[-3:])


class _Check:
    """Reads one JSON object, naming the file and key in every error."""

    def __init__(self, name, data):
        self.name = name
        if not isinstance(data, dict):
            self.fail("", "a JSON object {...}", data)
        self.data = data

    def fail(self, key, expected, got):
        where = " key '%s'" % key if key else ""
        raise ConfigError("%s:%s must be %s, got %r" % (self.name, where, expected, got))

    def get(self, key, default=None):
        return self.data.get(key, default)

    def integer(self, key, lo, hi, default):
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(key, "an integer in %d..%d" % (lo, hi), v)
        return v

    def text(self, key, default=None, required=False, maxlen=64):
        v = self.data.get(key, default)
        if v is None and not required:
            return None
        if not isinstance(v, str) or not v or len(v) > maxlen:
            self.fail(key, "a string of 1..%d characters" % maxlen, v)
        return v

    def obj(self, key, required=False):
        v = self.data.get(key)
        if v is None and not required:
            return None
        if not isinstance(v, dict):
            self.fail(key, "an object {...}", v)
        return _Check("%s: %s" % (self.name, key), v)


class Config:
    def __init__(self, data, secrets, source):
        self.source = source  # "config.json", "config.good.json" or "defaults"
        self._secrets = secrets
        for k in data:
            setattr(self, k, data[k])

    def secret(self, name, default=ConfigError):
        """A secret by name; ConfigError when it is missing, unless a default is given."""
        v = self._secrets.get(name)
        if v is None:
            if default is not ConfigError:
                return default
            raise ConfigError("secrets.json: key '%s' is missing" % name)
        return v


def check(data, name="config.json"):
    """A parsed configuration -> the validated dict (defaults filled in)."""
    c = _Check(name, data)
    known = list(DEFAULTS)
    for k in data:
        if k not in known:
            c.fail(k, "one of: " + ", ".join(sorted(known)), "an unknown key")
    if c.integer("format", 1, 1, 1) != 1:
        c.fail("format", "1", data.get("format"))
    out = dict(DEFAULTS)
    out["device_id"] = c.text("device_id", maxlen=23) or default_device_id()
    out["sample_s"] = c.integer("sample_s", 10, 86400, DEFAULTS["sample_s"])
    out["uplink_every"] = c.integer("uplink_every", 1, 1000, DEFAULTS["uplink_every"])
    out["batch"] = c.integer("batch", 1, 120, DEFAULTS["batch"])
    out["network_budget_ms"] = c.integer("network_budget_ms", 1000, 60000,
                                         DEFAULTS["network_budget_ms"])
    out["topic"] = c.text("topic", maxlen=96) or "petrel/" + out["device_id"]
    wifi = c.obj("wifi")
    if wifi is not None:
        out["wifi"] = {"ssid": wifi.text("ssid", required=True, maxlen=32)}
    broker = c.obj("broker")
    if broker is not None:
        b = {"host": broker.text("host", required=True, maxlen=253),
             "port": broker.integer("port", 1, 65535, 8883),
             "tls": broker.get("tls", "tls")}
        if b["tls"] not in ("tls", "mtls", "psk"):
            broker.fail("tls", "tls, mtls or psk", b["tls"])
        for k in ("ca", "cert", "key", "psk_identity"):
            if broker.get(k) is not None:
                b[k] = broker.text(k, maxlen=128)
        if "ca" not in b and "psk_identity" not in b:
            broker.fail("ca", "a CA file (or psk_identity for TLS-PSK): plain TCP is not configurable",
                        None)
        out["broker"] = b
    power = c.obj("power")
    if power is not None:
        d = DEFAULTS["power"]
        out["power"] = {"low_mv": power.integer("low_mv", 1000, 5000, d["low_mv"]),
                        "critical_mv": power.integer("critical_mv", 1000, 5000, d["critical_mv"]),
                        "low_stretch": power.integer("low_stretch", 1, 100, d["low_stretch"]),
                        "critical_sleep_s": power.integer("critical_sleep_s", 60, 86400 * 7,
                                                          d["critical_sleep_s"])}
        if out["power"]["critical_mv"] > out["power"]["low_mv"]:
            power.fail("critical_mv", "at most low_mv (%d)" % out["power"]["low_mv"],
                       out["power"]["critical_mv"])
    safe = c.obj("safe_mode")
    if safe is not None:
        d = DEFAULTS["safe_mode"]
        out["safe_mode"] = {"after_crashes": safe.integer("after_crashes", 1, 100, d["after_crashes"]),
                            "wakes": safe.integer("wakes", 1, 1000, d["wakes"]),
                            "sleep_s": safe.integer("sleep_s", 60, 86400, d["sleep_s"])}
    channels = data.get("channels", [])
    if not isinstance(channels, list) or len(channels) > 16:
        c.fail("channels", "a list of at most 16 channels", channels)
    seen = []
    out["channels"] = []
    for i in range(len(channels)):
        ch = _Check("%s: channels[%d]" % (name, i), channels[i])
        cname = ch.text("name", required=True, maxlen=8)
        if cname in seen:
            ch.fail("name", "unique among the channels", cname)
        seen.append(cname)
        sensor = ch.text("sensor", required=True, maxlen=16)
        try:
            native_unit = hardware.quantity(sensor)[1]
        except KeyError:
            ch.fail("sensor", "one of: " + ", ".join(sorted(hardware.QUANTITIES)) + ", ds18b20.N.t",
                    sensor)
        spec = {"scale": ch.integer("scale", 1, 1000000, 1), "filters": ch.get("filters", [])}
        try:
            filters.build_chain(cname, spec)
        except ValueError as e:
            raise ConfigError("%s: channels[%d]: %s" % (name, i, e))
        out["channels"].append({"name": cname, "sensor": sensor, "unit": ch.text("unit", maxlen=8) or native_unit,
                                "scale": spec["scale"], "filters": spec["filters"]})
    alarms = data.get("alarms", [])
    if not isinstance(alarms, list) or len(alarms) > 16:  # one bit each in the RTC record
        c.fail("alarms", "a list of at most 16 alarms", alarms)
    out["alarms"] = []
    for i in range(len(alarms)):
        a = _Check("%s: alarms[%d]" % (name, i), alarms[i])
        ch = a.text("channel", required=True, maxlen=8)
        if ch not in seen:
            a.fail("channel", "one of the channels (%s)" % ", ".join(seen), ch)
        lo, hi = a.get("below"), a.get("above")
        for k, v in (("below", lo), ("above", hi)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                a.fail(k, "a number", v)
        if lo is None and hi is None:
            a.fail("above", "a number (or 'below')", None)
        hyst = a.get("hysteresis", 0)
        if isinstance(hyst, bool) or not isinstance(hyst, (int, float)) or hyst < 0:
            a.fail("hysteresis", "a number >= 0", hyst)
        out["alarms"].append({"channel": ch, "below": lo, "above": hi, "hysteresis": hyst})
    return out


def check_secrets(data, name="secrets.json"):
    """Form only; values never go into a message (they could reach the log)."""
    if not isinstance(data, dict):
        raise ConfigError("%s: must be a JSON object {...}" % name)
    for k in data:
        v = data[k]
        if k not in ("hmac_key", "psk_key", "wifi_psk"):
            raise ConfigError("%s: key '%s' is unknown (expected hmac_key, psk_key, wifi_psk)" % (name, k))
        ok = isinstance(v, str) and len(v) % 2 == 0 and 16 <= len(v) <= 128
        if ok:
            try:
                bytes.fromhex(v)
            except ValueError:
                ok = False
        if not ok:
            raise ConfigError("%s: key '%s' must be hex of 8..64 bytes" % (name, k))
    return data


MAX_BYTES = 8192  # a configuration is a few hundred bytes: anything huge is hostile


def _read_json(path):
    """The parsed file; OSError when absent, ConfigError for anything else
    wrong with it (too big, not UTF-8, not JSON, nested past the parser)."""
    name = path.rsplit("/", 1)[-1]
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ConfigError("%s: larger than %d bytes" % (name, MAX_BYTES))
    try:
        return json.loads(raw.decode())
    except (ValueError, RuntimeError, MemoryError) as e:  # RuntimeError: nested too deep
        raise ConfigError("%s: not JSON (%s)" % (name, type(e).__name__))


def load(path="/config.json", secrets_path="/secrets.json", good_path="/config.good.json"):
    """The configuration to run with; never raises for a bad or missing file."""
    try:
        secrets = check_secrets(_read_json(secrets_path))
    except OSError:
        secrets = {}
    except ValueError as e:  # messages about secrets name the key, never the value
        log.error("config", "%s", e)
        secrets = {}
    try:
        raw = _read_json(path)
        data = check(raw)
    except OSError:
        log.warn("config", "%s missing: using the last good configuration", path)
    except ValueError as e:
        log.error("config", "%s; using the last good configuration", e)
    else:
        _keep_good(raw, good_path)
        return Config(data, secrets, "config.json")
    try:
        return Config(check(_read_json(good_path), "config.good.json"), secrets, "config.good.json")
    except (OSError, ValueError):
        log.error("config", "no good configuration: safe defaults, no uplink")
        return Config(check({}), secrets, "defaults")


def _keep_good(raw, good_path):
    text = json.dumps(raw)
    try:
        with open(good_path) as f:
            if f.read() == text:
                return  # unchanged: no flash write
    except OSError:
        pass
    tmp = good_path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        import os

        os.rename(tmp, good_path)
    except OSError as e:
        log.warn("config", "could not keep %s: %s", good_path, e)
