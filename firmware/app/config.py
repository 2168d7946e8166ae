"""The node's configuration: /config.json (what it does) and /secrets.json (its
keys), as `petrel provision` writes them, checked before anything uses them.

    cfg = config.load()          # a Config, or the last good one, or safe defaults
    cfg.sample_s, cfg.broker.host, cfg.channels[0].chain, cfg.secret("hmac_key")

Every error names the file, the key and the form expected:
    config.json: key 'sample_s' must be an integer in 10..86400, got '5m'
What the uplink's SenML could not carry is refused here, not by the encoder
later: a device_id or channel name that cannot make a SenML name (RFC 8428
section 4.5.1; the device_id is also the MQTT client id and a topic level), a
unit outside the SenML units registry (lib/senmlunits), a scale that is not
2^a x 5^b (a value / scale must be an exact decimal). senml_layout: "compact"
(default) or "named" (the channel's name in every record, uplink.encoder).
A file that does not parse or check is not used: the last configuration that
did (kept as /config.good.json) is, and the log says so; with none, safe
defaults (no uplink) and an error on the log. Secrets are checked for form
but never written to the log.
"""

import json
import sys
from binascii import crc32

import machine

import eventlog as log
from confcheck import Check, ConfigError, mapping  # config.ConfigError: the node's one class

import uplink
from app import hardware

# The largest magnitude a sensor reports, in its native unit (datasheets:
# SHT4x -45..130 degC and up to 125 %RH before clipping, BME280 300..1100
# hPa, DS18B20 -55..125 degC, a battery behind a divider well under 100 V):
# times the channel's scale it must fit a stored reading (READING_LIMIT,
# a signed 32-bit int), or every sample of the channel would fail to store.
SENSOR_MAX = {"Cel": 130, "%RH": 125, "Pa": 110000, "V": 100}
READING_LIMIT = (1 << 31) - 1  # uplink.pack_reading's "<i"

KEYS = ("format", "device_id", "sample_s", "uplink_every", "batch", "network_budget_ms", "alarms",
        "channels", "wifi", "broker", "topic", "power", "safe_mode", "senml_layout", "update_chunks")
LAYOUTS = ("compact", "named")  # uplink.encoder's: n in every record for readers that need it


class Wifi:
    ssid = None


class Broker:
    host = None
    port = 8883
    tls = "tls"  # "tls" (verified), "mtls" (and a client certificate) or "psk"
    ca = None  # file names on the node's flash
    cert = None
    key = None
    psk_identity = None


class Power:
    """Battery policy: below low_mv no radio and the interval stretched by
    low_stretch; below critical_mv no work at all, sleep critical_sleep_s."""

    low_mv = 2700
    critical_mv = 2500
    low_stretch = 4
    critical_sleep_s = 21600


class SafeMode:
    """After after_crashes consecutive crashed wakes: `wakes` wakes of safe
    mode (no application; Wi-Fi, status and health only), sleep_s apart."""

    after_crashes = 3
    wakes = 6
    sleep_s = 3600


class Channel:
    """A channel: what it reads and how its values are filtered. chain is its
    filters.Chain, built (once) when the configuration is checked."""

    def __init__(self, name, sensor, unit, scale, filters, chain):
        self.name = name
        self.sensor = sensor  # a hardware.QUANTITIES name, such as "sht4x.t"
        self.unit = unit
        self.scale = scale  # values are ints in 1/scale of the unit
        self.filters = filters  # the configuration's list
        self.chain = chain


class Alarm:
    def __init__(self, channel, below, above, hysteresis):
        self.channel = channel  # a channel's name
        self.below = below  # in the channel's unit, or None
        self.above = above
        self.hysteresis = hysteresis


class Config:
    """What check() found in config.json, defaults filled in."""

    source = "defaults"  # "config.json", "config.good.json" or "defaults"
    device_id = None  # from machine.unique_id() when absent
    sample_s = 300
    uplink_every = 12  # samples per uplink
    batch = 36  # readings per message
    network_budget_ms = 10000
    update_chunks = 4  # an update's chunks fetched per uplink session (app.update, app.session.fetch)
    topic = None  # "petrel/<device_id>" when absent
    senml_layout = "compact"  # or "named": the channel's name in every record (LAYOUTS)
    wifi = None  # a Wifi, None: no uplink
    broker = None  # a Broker, None: no uplink
    power = Power()
    safe_mode = SafeMode()
    channels = ()  # Channel objects
    alarms = ()  # Alarm objects, at most 16 (one bit each in the RTC record)
    _secrets = {}

    @property
    def channels_crc(self):
        """A fingerprint of the channels' filter configuration: the filter
        states kept in RTC memory belong to chains of the same one."""
        return fingerprint(self.channels)

    def secret(self, name, default=ConfigError):
        """A secret by name; ConfigError when it is missing, unless a default is given."""
        v = self._secrets.get(name)
        if v is None:
            if default is not ConfigError:
                return default
            raise ConfigError("secrets.json: key '%s' is missing" % name)
        return v


def fingerprint(channels):
    """CRC-32 of what the chains' states depend on (name, sensor, scale,
    filters); the same on every boot of one interpreter."""
    return crc32(repr([(c.name, c.sensor, c.scale, c.filters) for c in channels]).encode()) & 0xFFFFFFFF


def default_device_id():
    return "p-" + "".join("%02x" % b for b in machine.unique_id()[-3:])


def check(data, name="config.json"):
    """A parsed configuration -> a Config (defaults filled in, the channels'
    chains built); ConfigError naming the file and the key."""
    c = mapping(name, data)
    for k in data:
        if k not in KEYS:
            c.must(k, "one of: " + ", ".join(sorted(KEYS)), "an unknown key")
    c.integer("format", 1, 1, 1)
    cfg = Config()
    # the MQTT client id, a topic level and the first part of every SenML name
    cfg.device_id = c.name("device_id", 23, "-_", "the MQTT client id and SenML names start with it") \
        or default_device_id()
    cfg.sample_s = c.integer("sample_s", 10, 86400, Config.sample_s)
    cfg.uplink_every = c.integer("uplink_every", 1, 1000, Config.uplink_every)
    cfg.batch = c.integer("batch", 1, 120, Config.batch)
    cfg.network_budget_ms = c.integer("network_budget_ms", 1000, 60000, Config.network_budget_ms)
    cfg.update_chunks = c.integer("update_chunks", 1, 16, Config.update_chunks)
    cfg.topic = c.text("topic", maxlen=96) or "petrel/" + cfg.device_id
    cfg.senml_layout = c.get("senml_layout", Config.senml_layout)
    if cfg.senml_layout not in LAYOUTS:
        c.must("senml_layout", " or ".join(LAYOUTS), cfg.senml_layout)
    wifi = c.obj("wifi")
    if wifi is not None:
        cfg.wifi = Wifi()
        cfg.wifi.ssid = wifi.text("ssid", required=True, maxlen=32)
    broker = c.obj("broker")
    if broker is not None:
        cfg.broker = _broker(broker)
    power = c.obj("power")
    cfg.power = p = Power()
    if power is not None:
        p.low_mv = power.integer("low_mv", 1000, 5000, Power.low_mv)
        p.critical_mv = power.integer("critical_mv", 1000, 5000, Power.critical_mv)
        p.low_stretch = power.integer("low_stretch", 1, 100, Power.low_stretch)
        p.critical_sleep_s = power.integer("critical_sleep_s", 60, 86400 * 7, Power.critical_sleep_s)
        if p.critical_mv > p.low_mv:
            power.must("critical_mv", "at most low_mv (%d)" % p.low_mv, p.critical_mv)
    safe = c.obj("safe_mode")
    cfg.safe_mode = sm = SafeMode()
    if safe is not None:
        sm.after_crashes = safe.integer("after_crashes", 1, 100, SafeMode.after_crashes)
        sm.wakes = safe.integer("wakes", 1, 1000, SafeMode.wakes)
        sm.sleep_s = safe.integer("sleep_s", 60, 86400, SafeMode.sleep_s)
    cfg.channels = _channels(c, name)
    cfg.alarms = _alarms(c, name, [ch.name for ch in cfg.channels])
    return cfg


def _broker(b):
    out = Broker()
    out.host = b.text("host", required=True, maxlen=253)
    out.port = b.integer("port", 1, 65535, Broker.port)
    out.tls = b.get("tls", Broker.tls)
    if out.tls not in ("tls", "mtls", "psk"):
        b.must("tls", "tls, mtls or psk", out.tls)
    out.ca = b.text("ca", maxlen=128)
    out.cert = b.text("cert", maxlen=128)
    out.key = b.text("key", maxlen=128)
    out.psk_identity = b.text("psk_identity", maxlen=128)
    if out.ca is None and out.psk_identity is None:
        b.must("ca", "a CA file (or psk_identity for TLS-PSK): plain TCP is not configurable", None)
    return out


def channels(items, name="board.json"):
    """A list of channels as in config.json (the board's own, from
    board.json) -> Channel objects; ConfigError naming the file."""
    return _channels(Check(name, {"channels": items}), name)


def _channels(c, name):
    import filterconf  # let go by load(): a wake runs the chains, not their parser
    import senmlunits  # the same

    items = c.get("channels", [])
    if not isinstance(items, list) or len(items) > 16:
        c.must("channels", "a list of at most 16 channels", items)
    out = []
    seen = []
    for i in range(len(items)):
        ch = mapping("%s: channels[%d]" % (name, i), items[i])
        # "<device_id>/<name>" is the SenML name; no "/": one level, apart from "<device_id>/health/"
        cname = ch.name("name", 8, "-_:.", "a SenML name part", required=True)
        if cname in seen:
            ch.must("name", "unique among the channels", cname)
        seen.append(cname)
        sensor = ch.text("sensor", required=True, maxlen=16)
        try:
            native_unit = hardware.quantity(sensor)[1]
        except KeyError:
            ch.must("sensor", "one of: " + ", ".join(sorted(hardware.QUANTITIES)) + ", ds18b20.N.t",
                    sensor)
        scale = ch.integer("scale", 1, 1000000, 1)
        try:  # the encoder's own rule: value / scale a finite decimal it can send exactly
            uplink.scale_digits(scale)
        except ValueError:
            ch.must("scale", "2^a x 5^b (1, 2, 4, 5, 8, 10, 16, 20, 25, 100, 1000, ...: every value an "
                    "exact decimal), and not 2^14 or finer (too many decimal places to send)", scale)
        if SENSOR_MAX.get(native_unit, 0) * scale > READING_LIMIT:
            ch.must("scale", "at most %d for %s (up to %d %s does not fit a reading's 32 bits "
                    "at a finer one)" % (READING_LIMIT // SENSOR_MAX[native_unit], sensor,
                                         SENSOR_MAX[native_unit], native_unit), scale)
        flist = ch.get("filters", [])
        try:
            chain = filterconf.build_chain(cname, {"scale": scale, "filters": flist})
        except ValueError as e:
            raise ConfigError("%s: channels[%d]: %s" % (name, i, e))
        unit = ch.text("unit", maxlen=8) or native_unit
        if not senmlunits.known(unit):
            ch.must("unit", "a SenML unit (RFC 8428 12.1, RFC 8798) such as Cel, %RH, Pa, V, A, W, lx; "
                    "millivolts are V at scale 1000", unit)
        out.append(Channel(cname, sensor, unit, scale, flist, chain))
    return out


def _alarms(c, name, names):
    items = c.get("alarms", [])
    if not isinstance(items, list) or len(items) > 16:  # one bit each in the RTC record
        c.must("alarms", "a list of at most 16 alarms", items)
    out = []
    for i in range(len(items)):
        a = mapping("%s: alarms[%d]" % (name, i), items[i])
        ch = a.text("channel", required=True, maxlen=8)
        if ch not in names:
            a.must("channel", "one of the channels (%s)" % ", ".join(names), ch)
        lo, hi = a.get("below"), a.get("above")
        for k, v in (("below", lo), ("above", hi)):
            if v is not None:
                a.number(v, k)  # finite, within confcheck.MAX_NUMBER: no NaN never crossing
        if lo is None and hi is None:
            a.must("above", "a number (or 'below')", None)
        hyst = a.number(a.get("hysteresis", 0), "hysteresis", 0)
        out.append(Alarm(ch, lo, hi, hyst))
    return out


def check_secrets(data, name="secrets.json"):
    """Form only; values never go into a message (they could reach the log)."""
    if not isinstance(data, dict):
        raise ConfigError("%s: must be a JSON object {...}" % name)
    for k in data:
        v = data[k]
        if k not in ("hmac_key", "psk_key", "wifi_psk", "down_key"):
            raise ConfigError("%s: key '%s' is unknown (expected hmac_key, psk_key, wifi_psk, down_key)"
                              % (name, k))
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
    """The configuration to run with; never raises for a bad or missing file.
    The checkers raise only ConfigError, but whatever else a file could still
    cause (MemoryError, RuntimeError from a recursion, a bug) is caught here
    too, as an Exception: a bad file must never leave the wake with no
    configuration. KeyboardInterrupt, SystemExit and the simulated board's
    Halt are BaseExceptions and go through."""
    cfg = _load(path, secrets_path, good_path)
    sys.modules.pop("filterconf", None)  # the chains are built: its heap is the wake's
    sys.modules.pop("senmlunits", None)
    return cfg


def _why(e, name):
    """A refusal for the log: ConfigError's own message (file, key, reason),
    or the file and the exception's type for anything else."""
    if isinstance(e, ConfigError):
        return str(e)
    return "%s: unusable (%s: %s)" % (name, type(e).__name__, str(e)[:80])


def _load(path, secrets_path, good_path):
    try:
        secrets = check_secrets(_read_json(secrets_path))
    except OSError:
        secrets = {}
    except Exception as e:  # noqa: BLE001  messages about secrets name the key, never the value
        log.error("config", "%s", e if isinstance(e, ConfigError) else "secrets.json: unusable (%s)"
                  % type(e).__name__)
        secrets = {}
    try:
        raw = _read_json(path)
        data = check(raw)
    except OSError:
        log.warn("config", "%s missing: using the last good configuration", path)
    except Exception as e:  # noqa: BLE001  see load()
        log.error("config", "%s; using the last good configuration", _why(e, "config.json"))
    else:
        _keep_good(raw, good_path)
        return _ready(data, secrets, "config.json")
    try:
        return _ready(check(_read_json(good_path), "config.good.json"), secrets, "config.good.json")
    except Exception as e:  # noqa: BLE001  OSError (none kept) included
        if not isinstance(e, OSError):
            log.error("config", "%s", _why(e, "config.good.json"))
        log.error("config", "no good configuration: safe defaults, no uplink")
        return _ready(_defaults(), secrets, "defaults")


def _defaults():
    """Config's own defaults: no uplink, no channels (the ladder may take the
    board's). Built without the checker if even that fails (out of memory)."""
    try:
        return check({}, "defaults")
    except Exception:  # noqa: BLE001
        cfg = Config()
        cfg.device_id = default_device_id()
        cfg.topic = "petrel/" + cfg.device_id
        return cfg


def _ready(cfg, secrets, source):
    cfg.source = source
    cfg._secrets = secrets
    return cfg


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
