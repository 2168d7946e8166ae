# firmware/app/config: the node's configuration, checked, with a fallback.
import json

import confcheck
import filters
import machine

from app import config
from ptest import raises, scratch_dir

GOOD = {
    "format": 1, "device_id": "p-a1b2c3", "topic": "petrel/p-a1b2c3",
    "sample_s": 300, "uplink_every": 12,
    "wifi": {"ssid": "home"},
    "broker": {"host": "broker.lan", "port": 8883, "ca": "/certs/ca.der"},
    "channels": [
        {"name": "t", "sensor": "sht4x.t", "unit": "Cel", "scale": 100,
         "filters": [{"median": {"window_size": 5, "send_every": 1}}, {"delta": 0.1}]},
        {"name": "bat", "sensor": "battery.v", "scale": 1000},
    ],
    "alarms": [{"channel": "t", "above": 40}],
}


def write(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def err(data):
    return str(raises(config.ConfigError, config.check, data))


def test_a_good_configuration_with_defaults_filled_in():
    c = config.check(GOOD)
    assert c.sample_s == 300 and c.batch == 36 and c.network_budget_ms == 10000
    assert c.uplink_every == 12 and c.device_id == "p-a1b2c3" and c.topic == "petrel/p-a1b2c3"
    assert c.wifi.ssid == "home"
    b = c.broker
    assert (b.host, b.port, b.tls, b.ca, b.cert, b.key, b.psk_identity) == \
        ("broker.lan", 8883, "tls", "/certs/ca.der", None, None, None)
    t, bat = c.channels
    assert (t.name, t.sensor, t.unit, t.scale) == ("t", "sht4x.t", "Cel", 100)
    assert t.filters == GOOD["channels"][0]["filters"]
    assert bat.scale == 1000 and bat.unit == "V" and bat.filters == []  # the sensor's unit when none is given
    p = c.power
    assert (p.low_mv, p.critical_mv, p.low_stretch, p.critical_sleep_s) == (2700, 2500, 4, 21600)
    sm = c.safe_mode
    assert (sm.after_crashes, sm.wakes, sm.sleep_s) == (3, 6, 3600)
    a = c.alarms[0]
    assert (a.channel, a.above, a.below, a.hysteresis) == ("t", 40, None, 0)
    d = config.check({})
    uid = machine.unique_id()
    assert d.device_id == "p-%02x%02x%02x" % (uid[3], uid[4], uid[5])
    assert d.broker is None and d.wifi is None and d.topic == "petrel/" + d.device_id
    assert d.channels == [] and d.alarms == [] and d.power.low_mv == 2700
    c = config.check(dict(GOOD, power={"low_mv": 3000}, safe_mode={"wakes": 2},
                          broker={"host": "b", "tls": "psk", "psk_identity": "p-1", "port": 8884}))
    assert c.power.low_mv == 3000 and c.power.critical_mv == 2500
    assert c.safe_mode.wakes == 2 and c.safe_mode.after_crashes == 3
    assert (c.broker.tls, c.broker.psk_identity, c.broker.ca, c.broker.port) == ("psk", "p-1", None, 8884)


def test_safe_mode_defaults_without_any_configuration():
    sm = config.SafeMode()  # what ladder.run() falls back on when nothing loaded
    assert (sm.after_crashes, sm.wakes, sm.sleep_s) == (3, 6, 3600)
    assert config.check({"safe_mode": {"sleep_s": 60}}).safe_mode.sleep_s == 60
    # one configuration does not change the defaults of the next
    assert config.check({}).safe_mode.sleep_s == 3600 and config.SafeMode().sleep_s == 3600
    assert config.check({"power": {"low_mv": 3300}}).power.low_mv == 3300
    assert config.check({}).power.low_mv == 2700


def test_the_check_hands_back_each_channels_chain():
    c = config.check(GOOD)
    t = c.channels[0].chain
    assert t.name == "t" and t.scale == 100
    assert t.push(2100, 0) == 2100
    assert t.push(2105, 0) is None and t.reason == filters.DELTA  # delta 0.1 (10 units) from the list
    assert c.channels[1].chain.push(3000, 0) == 3000  # no filters: every value
    assert config.check(GOOD).channels[0].chain is not t  # a fresh chain for each check (each wake)


def test_a_filter_error_is_the_nodes_one_config_error():
    bad = dict(GOOD, channels=[{"name": "t", "sensor": "sht4x.t", "filters": [{"median": {"window_size": 99}}]}])
    e = raises(config.ConfigError, config.check, bad)
    assert config.ConfigError is filters.ConfigError is confcheck.ConfigError
    assert str(e) == ("config.json: channels[0]: channel 't', filter 1 'median': "
                      "key 'window_size' must be an integer in 1..64, got 99")
    # and a filter's own error caught as the filters' class, as before
    raises(filters.ConfigError, config.check, bad)


def test_board_channels_are_checked_like_the_configurations():
    chs = config.channels([{"name": "t", "sensor": "sht4x.t", "scale": 10, "filters": [{"delta": 1}]},
                           {"name": "bat", "sensor": "battery.v"}], "board.json")
    assert [(c.name, c.unit, c.scale) for c in chs] == [("t", "Cel", 10), ("bat", "V", 1)]
    assert chs[0].chain.push(5, 0) == 5 and chs[0].chain.push(6, 0) is None
    e = str(raises(config.ConfigError, config.channels, [{"name": "t", "sensor": "co2"}], "board.json"))
    assert e.startswith("board.json: channels[0]: key 'sensor'")
    e = str(raises(config.ConfigError, config.channels, {"t": 1}, "board.json"))
    assert e.startswith("board.json: key 'channels' must be a list")


def test_the_channels_fingerprint_follows_what_the_filter_states_depend_on():
    base = config.check(GOOD)
    crc = base.channels_crc
    assert isinstance(crc, int) and 0 <= crc < 1 << 32
    assert config.check(GOOD).channels_crc == crc  # the same configuration: the same states
    assert config.check(dict(GOOD, sample_s=60, alarms=[])).channels_crc == crc
    units = [dict(GOOD["channels"][0], unit="K"), GOOD["channels"][1]]
    assert config.check(dict(GOOD, channels=units)).channels_crc == crc  # the unit is a label
    t = GOOD["channels"][0]
    for change in ({"name": "u"}, {"sensor": "bme280.t"}, {"scale": 10}, {"filters": [{"delta": 0.2}]}):
        chs = [dict(t, **change), GOOD["channels"][1]]
        assert config.check(dict(GOOD, channels=chs, alarms=[])).channels_crc != crc, change
    assert config.check(dict(GOOD, channels=GOOD["channels"][:1])).channels_crc != crc
    # the board's channels, set after the check, are what it covers
    c = config.check({})
    empty = c.channels_crc
    c.channels = config.channels(GOOD["channels"])
    assert c.channels_crc == crc != empty


def test_errors_name_the_file_the_key_and_the_form():
    e = err(dict(GOOD, sample_s="5m"))
    assert e.startswith("config.json:") and "'sample_s'" in e and "integer in 10..86400" in e
    e = err(dict(GOOD, sampling=5))
    assert "'sampling'" in e and "one of" in e
    e = err(dict(GOOD, broker={"host": "b", "port": 1883}))
    assert "broker" in e and "plain TCP is not configurable" in e
    bad = dict(GOOD, channels=[{"name": "t", "sensor": "sht4x.t", "filters": [{"clamp": {"minimum": 0}}]}])
    e = err(bad)
    assert "channels[0]" in e and "'clamp'" in e and "'minimum'" in e
    e = err(dict(GOOD, channels=[{"name": "t", "sensor": "sht4x.t"}, {"name": "t", "sensor": "sht4x.rh"}]))
    assert "channels[1]" in e and "unique" in e
    e = err(dict(GOOD, alarms=[{"channel": "rh", "above": 80}]))
    assert "alarms[0]" in e and "'channel'" in e
    assert "JSON object" in err([1, 2])
    e = err(dict(GOOD, channels=[{"name": "t", "sensor": "thermometer"}]))
    assert "channels[0]" in e and "'sensor'" in e and "sht4x.t" in e and "'thermometer'" in e
    e = err(dict(GOOD, power={"low_mv": 2600, "critical_mv": 2800}))
    assert "power" in e and "'critical_mv'" in e and "at most low_mv" in e
    e = err(dict(GOOD, safe_mode={"after_crashes": 0}))
    assert "safe_mode" in e and "'after_crashes'" in e and "1..100" in e
    e = err(dict(GOOD, alarms=[{"channel": "t", "above": 40, "hysteresis": -1}]))
    assert "alarms[0]" in e and "'hysteresis'" in e


def test_hostile_values_are_refused_not_obeyed():
    # a sleep of a year, a budget of a day, 10**30, a list where a number goes
    for bad in ({"sample_s": 31536000}, {"network_budget_ms": 86400000}, {"uplink_every": 10 ** 30},
                {"batch": [36]}, {"power": {"critical_sleep_s": True}}, {"device_id": "x" * 500},
                {"channels": [{"name": "t", "sensor": "sht4x.t"}] * 17},
                {"alarms": [{"channel": "t", "above": 40}] * 17}):
        e = err(dict(GOOD, **bad))
        assert e.startswith("config.json:"), e


def test_a_bad_file_falls_back_to_the_last_good_one():
    d, flash = scratch_dir()
    p, s, g = d + "/config.json", d + "/secrets.json", d + "/config.good.json"
    write(p, GOOD)
    write(s, {"hmac_key": "ab" * 32})
    c = config.load(p, s, g)
    assert c.source == "config.json" and c.sample_s == 300 and c.secret("hmac_key") == "ab" * 32
    write(p, dict(GOOD, sample_s=60))
    assert config.load(p, s, g).sample_s == 60  # the new good one is kept
    write(p, '{"sample_s": 60, ')  # torn by a bad upload
    c = config.load(p, s, g)
    assert c.source == "config.good.json" and c.sample_s == 60
    write(p, dict(GOOD, sample_s=1))  # parses, but out of range
    assert config.load(p, s, g).source == "config.good.json"
    import os

    os.remove(g)
    c = config.load(p, s, g)
    assert c.source == "defaults" and c.broker is None  # safe: no uplink


def test_missing_and_hostile_files_fall_back_without_crashing():
    d, flash = scratch_dir()
    p, s, g = d + "/config.json", d + "/secrets.json", d + "/config.good.json"
    c = config.load(p, s, g)  # nothing there at all: a bare board
    assert c.source == "defaults" and c.broker is None
    write(p, GOOD)
    config.load(p, s, g)  # kept as the last good one
    hostile = ["\x00\xff\xfe garbage", "[" * 5000 + "]" * 5000, '{"a": "' + "x" * 20000 + '"}',
               "", "null", '{"channels": {"t": 1}}']
    for text in hostile:
        with open(p, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        c = config.load(p, s, g)
        assert c.source == "config.good.json" and c.sample_s == 300, text[:20]
    with open(p, "wb") as f:
        f.write(b"\xff\xfe\x00{")  # not even UTF-8
    assert config.load(p, s, g).source == "config.good.json"


def test_secrets_are_checked_for_form_and_never_echoed():
    d, flash = scratch_dir()
    secret = "zz" + "ab" * 31
    write(d + "/secrets.json", {"hmac_key": secret})
    e = str(raises(config.ConfigError, config.check_secrets, {"hmac_key": secret}))
    assert "'hmac_key'" in e and secret not in e
    raises(config.ConfigError, config.check_secrets, {"password": "ab" * 16})
    write(d + "/config.json", GOOD)
    c = config.load(d + "/config.json", d + "/secrets.json", d + "/good.json")
    raises(config.ConfigError, c.secret, "hmac_key")  # refused file: no secrets at all


def test_names_units_and_scales_that_cannot_make_senml_are_refused():
    # every one of these was accepted, and the encoder then refused every batch
    e = err(dict(GOOD, device_id="node 1"))
    assert e.startswith("config.json:") and "'device_id'" in e and "'node 1'" in e and "letters, digits" in e
    for bad in ("-node", "node/1", "node+1", "n#", "p.1", "nöde"):  # "/", "+", "#": topic levels
        assert "'device_id'" in err(dict(GOOD, device_id=bad)), bad
    for good in ("p-a1b2c3", "Node_1", "7"):
        assert config.check(dict(GOOD, device_id=good)).device_id == good
    ch = GOOD["channels"][0]
    base = dict(GOOD, alarms=[])  # the alarm names channel t
    for bad in ("t 1", "_t", "t/x", "t=1", ""):
        e = err(dict(base, channels=[dict(ch, name=bad)]))
        assert "channels[0]" in e and "'name'" in e, (bad, e)
    assert config.check(dict(base, channels=[dict(ch, name="t-1.a:b")])).channels[0].name == "t-1.a:b"
    for bad in ("degC", "mV", "cel", "hPa", "%RH "):
        e = err(dict(base, channels=[dict(ch, unit=bad)]))
        assert "channels[0]" in e and "'unit'" in e and "SenML unit" in e and repr(bad) in e, (bad, e)
    for good in ("Cel", "K", "%RH", "%", "/", "beat/min", "m/s2", "deg", "kg/m3", "VAs"):
        assert config.check(dict(base, channels=[dict(ch, unit=good)])).channels[0].unit == good
    for bad in (3, 6, 7, 12, 30, 1024 * 3, 999, 16384, 2 ** 19):  # 2**14 up: the encoder's limit
        e = err(dict(base, channels=[dict(ch, scale=bad)]))
        assert "channels[0]" in e and "'scale'" in e and "2^a x 5^b" in e, (bad, e)
    for good in (1, 2, 4, 5, 8, 10, 16, 20, 25, 100, 256, 1000, 1024, 3125, 1000000):
        assert config.check(dict(base, channels=[dict(ch, scale=good)])).channels[0].scale == good
    # the board's own channels go through the same checks
    e = str(raises(config.ConfigError, config.channels, [{"name": "t", "sensor": "sht4x.t", "unit": "degC"}]))
    assert e.startswith("board.json:") and "'unit'" in e


def test_the_senml_layout_is_compact_unless_named():
    assert config.check(GOOD).senml_layout == "compact"
    assert config.check(dict(GOOD, senml_layout="named")).senml_layout == "named"
    e = err(dict(GOOD, senml_layout="full"))
    assert "'senml_layout'" in e and "compact or named" in e


def test_the_units_table_is_let_go_once_the_configuration_is_checked():
    import sys

    d, _ = scratch_dir()
    write(d + "/config.json", GOOD)
    config.load(d + "/config.json", d + "/secrets.json", d + "/config.good.json")
    assert "senmlunits" not in sys.modules and "filterconf" not in sys.modules


# ------------------------------------------------------------ issue 14: totality
# Each of these escaped config.check as OverflowError, MemoryError or
# RuntimeError, took 17 s, never ended, or was accepted (NaN thresholds). As
# JSON text, the way the node reads them: 1e999 is Infinity on both
# interpreters. (key expected in the message, config.json text)
T_CHANNEL = '{"channels": [{"name": "t", "sensor": "sht4x.t", "scale": 100, "filters": [%s]}]}'
HOSTILE = (
    ("'value'", T_CHANNEL % '{"offset": 1e999}'),
    ("'value'", T_CHANNEL % '{"offset": -1e999}'),
    ("'value'", T_CHANNEL % ('{"offset": 1%s}' % ("0" * 30))),
    ("'min_value'", T_CHANNEL % '{"clamp": {"min_value": -1e999}}'),
    ("'max_value'", T_CHANNEL % '{"clamp": {"max_value": 1e999}}'),
    ("'values'", T_CHANNEL % '{"filter_out": [1, 1e999]}'),
    ("'value'", T_CHANNEL % '{"timeout": {"period": "1s", "value": 1e999}}'),
    ("'value'", T_CHANNEL % '{"multiply": 1e999}'),
    ("'datapoints'", T_CHANNEL % '{"calibrate_linear": [[0, 0], [1, 1e999]]}'),
    ("'datapoints'", T_CHANNEL % '{"calibrate_linear": ["0 -> 0", "1 -> inf"]}'),
    ("percentage delta", T_CHANNEL % '{"delta": "inf%"}'),
    ("percentage delta", T_CHANNEL % '{"delta": "nan%"}'),
    ("'period'", T_CHANNEL % '{"throttle": 1e999}'),
    ("'count'", T_CHANNEL % ('{"skip_initial": %d}' % 2 ** 31)),
    ("'send_every'", T_CHANNEL % ('{"median": {"send_every": %d}}' % 2 ** 31)),
    ("'send_every'", T_CHANNEL % ('{"exponential_moving_average": {"send_every": %d}}' % 2 ** 31)),
    ("'send_first_at'", T_CHANNEL % ('{"max": {"send_every": 5, "send_first_at": %d}}' % 2 ** 31)),
    ("'degree'", T_CHANNEL % ('{"calibrate_polynomial": {"degree": 120, "datapoints": [%s]}}'
                              % ", ".join("[%d, %d]" % (i, i) for i in range(121)))),
    ("nested more than 4", T_CHANNEL % ('{"or": [' * 200 + '{"delta": 1}' + ']}' * 200)),
    ("'accuracy_decimals'", T_CHANNEL % '{"round": 1000000}'),
    ("'accuracy_decimals'", T_CHANNEL % ('{"round": 1%s}' % ("0" * 30))),
    ("'above'", '{"channels": [{"name": "t", "sensor": "sht4x.t"}], "alarms": [{"channel": "t", "above": 1e999}]}'),
    ("'below'", '{"channels": [{"name": "t", "sensor": "sht4x.t"}], "alarms": [{"channel": "t", "below": -1e999}]}'),
    ("'hysteresis'", '{"channels": [{"name": "t", "sensor": "sht4x.t"}], '
                     '"alarms": [{"channel": "t", "above": 1, "hysteresis": 1e999}]}'),
)


def test_each_hostile_value_from_the_fuzzing_campaign_is_refused_by_name():
    for key, text in HOSTILE:
        e = err(json.loads(text))
        assert e.startswith("config.json: ") and key in e, (text[:80], e)
        assert len(e) < 600, e  # the value is shown short, never echoed whole


def test_nan_and_infinity_are_refused_wherever_a_number_goes():
    # CPython's json reads NaN and Infinity; the VM's does not, but a float is a float
    alarm = {"channel": "t", "above": 40}
    for bad in (float("nan"), float("inf"), -float("inf")):
        for k in ("above", "below", "hysteresis"):
            e = err(dict(GOOD, alarms=[dict(alarm, **{k: bad})]))
            assert "alarms[0]" in e and "'%s'" % k in e, (k, bad, e)
        for flt in ({"offset": bad}, {"multiply": bad}, {"clamp": {"min_value": bad}},
                    {"exponential_moving_average": {"alpha": bad}}, {"quantile": {"quantile": bad}},
                    {"hampel": {"n_sigmas": bad}}, {"heartbeat": bad}, {"delta": bad}):
            ch = {"name": "t", "sensor": "sht4x.t", "filters": [flt]}
            e = err(dict(GOOD, channels=[ch], alarms=[]))
            assert "channels[0]" in e and list(flt)[0] in e, (flt, e)
    assert config.check(dict(GOOD, alarms=[dict(alarm, above=1e9, hysteresis=0.5)])).alarms[0].above == 1e9
    assert "'above'" in err(dict(GOOD, alarms=[dict(alarm, above=1e9 + 1)]))


class _Log:
    """Stands in for eventlog in app.config: what load() said, by level."""

    def __init__(self):
        self.lines = []

    def _add(self, level, tag, fmt, *args):
        self.lines.append((level, tag, fmt % args if args else fmt))

    def error(self, tag, fmt="", *args):
        self._add("E", tag, fmt, *args)

    def warn(self, tag, fmt="", *args):
        self._add("W", tag, fmt, *args)

    def info(self, tag, fmt="", *args):
        self._add("I", tag, fmt, *args)


def _load_logged(p, s, g):
    real = config.log
    config.log = rec = _Log()
    try:
        return config.load(p, s, g), rec.lines
    finally:
        config.log = real


def test_every_hostile_file_falls_back_to_the_last_good_one_and_says_why():
    d, flash = scratch_dir()
    p, s, g = d + "/config.json", d + "/secrets.json", d + "/config.good.json"
    write(p, dict(GOOD, sample_s=600))
    assert config.load(p, s, g).source == "config.json"  # kept as the last good one
    for key, text in HOSTILE:
        write(p, text)
        c, lines = _load_logged(p, s, g)
        assert c.source == "config.good.json" and c.sample_s == 600, text[:80]
        assert c.channels[0].chain.push(2100, 0) == 2100  # its chains built, ready to run
        said = [x for x in lines if x[0] == "E"]
        assert said and said[0][2].startswith("config.json: ") and key in said[0][2], (text[:80], lines)
        assert "using the last good configuration" in said[0][2]


def test_load_survives_whatever_a_checker_could_raise():
    # the checkers raise only ConfigError; load() still catches anything else,
    # so a bug or a memory shortage in one cannot leave the wake without a configuration
    d, flash = scratch_dir()
    p, s, g = d + "/config.json", d + "/secrets.json", d + "/config.good.json"
    write(p, dict(GOOD, sample_s=600))
    config.load(p, s, g)
    real = config.check
    failing = {"names": ("config.json",)}

    def check(data, name="config.json"):
        if name in failing["names"]:
            raise failing["exc"]("from the checker")
        return real(data, name)

    config.check = check
    try:
        for exc in (MemoryError, RuntimeError, OverflowError, TypeError, KeyError, IndexError):
            failing["exc"] = exc
            c, lines = _load_logged(p, s, g)
            assert c.source == "config.good.json" and c.sample_s == 600, exc
            assert lines[0][0] == "E" and lines[0][2].startswith("config.json: unusable (%s" % exc.__name__), lines
            failing["names"] = ("config.json", "config.good.json")
            c, lines = _load_logged(p, s, g)
            assert c.source == "defaults" and c.broker is None and c.channels == [], exc
            assert "config.good.json: unusable (%s" % exc.__name__ in lines[1][2], lines
            failing["names"] = ("config.json", "config.good.json", "defaults")  # not even the defaults
            c = config.load(p, s, g)
            assert c.source == "defaults" and c.broker is None and not c.channels and c.sample_s == 300
            assert c.topic == "petrel/" + c.device_id
            failing["names"] = ("config.json",)
        # a reset or Ctrl-C is no bad file: it goes through
        failing["exc"] = KeyboardInterrupt
        raises(KeyboardInterrupt, config.load, p, s, g)
    finally:
        config.check = real


def test_a_scale_at_which_the_sensors_range_cannot_be_stored_is_refused():
    # 110000 Pa at scale 100000 is 1.1e10: beyond a stored reading's 32 bits,
    # struct.error at every sample under CPython, silently wrapped on the VM
    ch = {"name": "p", "sensor": "bme280.p"}
    for scale in (1, 256, 10000, 15625):
        assert config.check({"channels": [dict(ch, scale=scale)]}).channels[0].scale == scale
    for scale in (20000, 100000, 1000000):
        e = err({"channels": [dict(ch, scale=scale)]})
        assert "channels[0]" in e and "'scale'" in e and "at most 19522 for bme280.p" in e, e
    for sensor in ("sht4x.t", "sht4x.rh", "ds18b20.1.t", "battery.v"):  # the finest scale fits
        assert config.check({"channels": [{"name": "x", "sensor": sensor, "scale": 1000000}]}).channels
    import uplink

    uplink.pack_reading(0, config.SENSOR_MAX["Pa"] * 15625)  # the largest accepted: stored
