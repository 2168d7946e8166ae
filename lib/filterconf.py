"""Filter chains built from configuration (JSON), with ESPHome's filter names,
options and defaults. The filters themselves are in filters.py (Python ones)
and filterprog.py (the integer stage); this module only reads options.

    chains = filterconf.build({"temperature": {"scale": 100, "filters": [
        {"median": {"window_size": 5, "send_every": 1}}, {"delta": 0.1}]}})
    chain = filterconf.build_chain("t", {"scale": 100, "filters": [...]})

Numbers in the configuration are in the channel's unit and become ints in
1/scale units; durations are "500ms", "10s", "5min", "2h" or milliseconds.
Errors are confcheck.ConfigError naming the channel, the filter and the key:
    channel 'temp', filter 2 'clamp': unknown key 'minimum' (expected: min_value, ...)

Bounded here, once, so that building a chain and running it per sample can
neither raise, hang nor allocate without bound, whatever the file says:
- every number finite and within confcheck.MAX_NUMBER (1e9) of the unit;
  values in 1/scale units within VALUE_LIMIT (what a stored reading holds)
- counts (skip_initial, send_every, send_first_at) at most MAX_COUNT: they
  live in filterprog's array("i") state, whose snapshot keeps below 2**29
- round: accuracy_decimals 0..MAX_DECIMALS (10**decimals is computed)
- calibrate_polynomial: degree 1..MAX_DEGREE, whose normal equations hold
  x**(2 * degree): (2**31)**16 ~ 1e149, inside a double (the unix VM,
  CPython); the ESP32 port's floats are single precision (3.4e38), where a
  fit that overflows comes out NaN and filters.CalibratePolynomial refuses it
- datapoints and filter_out values: at most MAX_POINTS each
- filters in a list: at most MAX_FILTERS; `or` nested at most MAX_DEPTH deep
  (the build and every push recurse once per level)
- a percentage delta in (0, MAX_PERCENT]
"""

import filterprog as prog
import filters as f
from confcheck import Check, ConfigError, show

_UNITS = (("ms", 1), ("min", 60000), ("s", 1000), ("h", 3600000))

VALUE_LIMIT = (1 << 31) - 1  # a reading is stored as a signed 32-bit int (uplink.pack_reading)
MAX_COUNT = 1000000  # samples: 115 days at the shortest interval (10 s)
MAX_DECIMALS = 9  # a scale is at most 10**6: past 6 decimals every step is 1
MAX_DEGREE = 8
MAX_POINTS = 64
MAX_FILTERS = 32
MAX_DEPTH = 4  # or inside or inside or inside or
MAX_PERCENT = 10000  # a change of 100 times the last value
MAX_SCALE = 1000000  # as config.json's: 1e9 x 1e6 stays exact in a double


class _Options(Check):
    """One filter's options; numbers in the channel's unit."""

    def __init__(self, where, data, channel, scale, depth):
        Check.__init__(self, where, data)
        self.channel = channel
        self.scale = scale
        self.depth = depth  # how many `or` this filter is inside

    def scalar(self, key):
        """Filters written as `name: value` or `name: {key: value}`."""
        if isinstance(self.data, dict):
            return self.get(key, required=True)
        self.seen.append(key)
        return self.data

    def units(self, v, key):
        """A value in the channel's unit -> int in 1/scale units, within
        +-VALUE_LIMIT. number() bounds it first: |v * scale| <= 1e15, finite."""
        u = int(round(self.number(v, key) * self.scale))
        if not -VALUE_LIMIT <= u <= VALUE_LIMIT:
            self.fail("key '%s' is %s units of 1/%d: more than a reading holds (+-%d): "
                      "use a coarser scale" % (key, u, self.scale, VALUE_LIMIT))
        return u

    def duration(self, v, key):
        """"500ms", "10s", "5min", "2h" or a number of milliseconds."""
        if isinstance(v, str):
            for suffix, mult in _UNITS:
                if v.endswith(suffix):
                    try:
                        ms = float(v[: -len(suffix)]) * mult
                    except ValueError:
                        break
                    if 0 < ms < (1 << 29):
                        return int(ms)
                    break
            self.fail("key '%s' must be a duration like 500ms, 10s, 5min, 2h; got %s" % (key, show(v)))
        v = self.number(v, key)
        if not 0 < v < (1 << 29):
            self.fail("key '%s' must be a duration between 1 ms and 6 days, got %s" % (key, show(v)))
        return int(v)

    def points(self, v, key):
        if not isinstance(v, list) or not v or len(v) > MAX_POINTS:
            self.fail("key '%s' must be a list of 1..%d datapoints" % (key, MAX_POINTS))
        out = []
        for p in v:
            if isinstance(p, str) and "->" in p:
                try:
                    a, b = p.split("->")
                    p = [float(a), float(b)]
                except ValueError:
                    self.fail("datapoint %s is not 'number -> number'" % show(p))
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                self.fail("datapoint %s is not [from, to] or 'from -> to'" % show(p))
            out.append((self.units(p[0], key), self.units(p[1], key)))
        return out

    def every(self, d_every, d_first):
        every = self.count(self.get("send_every", d_every), "send_every", 1, MAX_COUNT)
        first = self.count(self.get("send_first_at", d_first), "send_first_at", 1, MAX_COUNT)
        if first > every:
            self.fail("send_first_at (%d) must not exceed send_every (%d)" % (first, every))
        return every, first

    def window(self, d_size, lo=1):
        return self.count(self.get("window_size", d_size), "window_size", lo, 64)


# ------------------------------------------------------------------ makers
# One per filter (or per family): maker(options, arg) -> the filter; arg is
# what the members of a family differ by (their MAKERS entry).


def _offset(c, _):
    return prog.Offset(c.units(c.scalar("value"), "value"))


def _multiply(c, _):
    return f.Multiply(c.number(c.scalar("value"), "value", -1e6, 1e6))


def _calibrate_linear(c, _):
    if isinstance(c.data, list):
        c.data = {"datapoints": c.data}
    method = c.get("method", "least_squares")
    if method not in ("least_squares", "exact"):
        c.fail("key 'method' must be least_squares or exact, got %s" % show(method))
    pts = c.points(c.get("datapoints", required=True), "datapoints")
    if method == "exact":
        if len(pts) < 2 or len(set(p[0] for p in pts)) != len(pts):
            c.fail("exact calibration needs two or more datapoints with distinct inputs")
    return f.CalibrateLinear(pts, method == "exact")


def _calibrate_polynomial(c, _):
    degree = c.count(c.get("degree", required=True), "degree", 1, MAX_DEGREE)
    pts = c.points(c.get("datapoints", required=True), "datapoints")
    if len(pts) <= degree:
        c.fail("degree %d needs at least %d datapoints" % (degree, degree + 1))
    return f.CalibratePolynomial(degree, pts)


def _filter_out(c, _):
    v = c.data
    if isinstance(v, dict):
        v = c.get("values", required=True)
    if not isinstance(v, list):
        v = [v]
    if not v or len(v) > MAX_POINTS:
        c.fail("key 'values' must be 1..%d values" % MAX_POINTS)
    return prog.FilterOut([c.units(x, "values") for x in v])


def _clamp(c, _):
    lo = c.get("min_value")
    hi = c.get("max_value")
    drop = c.flag("ignore_out_of_range")
    lo = -prog.LIMIT if lo is None else c.units(lo, "min_value")
    hi = prog.LIMIT if hi is None else c.units(hi, "max_value")
    if lo > hi:
        c.fail("min_value is above max_value")
    return prog.Clamp(lo, hi, drop)


def _round(c, _):
    decimals = c.count(c.scalar("accuracy_decimals"), "accuracy_decimals", 0, MAX_DECIMALS)
    return prog.Round(max(1, c.scale // (10 ** decimals)))


def _skip_initial(c, _):
    return prog.SkipInitial(c.count(c.scalar("count"), "count", 1, MAX_COUNT))


def _window(c, kind_size):
    """median, min, max, sliding_window_moving_average: (kind, default size)."""
    size = c.window(kind_size[1])
    every, first = c.every(kind_size[1], 1)
    return prog.Window(kind_size[0], size, every, first)


def _quantile(c, _):
    size = c.window(5)
    every, first = c.every(5, 1)
    q = c.number(c.get("quantile", 0.9), "quantile", 0, 1)
    if q == 0:
        c.fail("key 'quantile' must be in (0, 1], got 0")
    return prog.Window(prog.QUANTILE, size, every, first, int(round(q * 1000)))


def _ema(c, _):
    alpha = c.number(c.get("alpha", 0.1), "alpha", 0, 1)
    if alpha == 0:
        c.fail("key 'alpha' must be in (0, 1], got 0")
    every, first = c.every(15, 1)
    return prog.EMA(alpha, every, first)


def _hampel(c, _):
    size = c.window(7, 3)
    k = c.number(c.get("n_sigmas", 3.0), "n_sigmas", 0, 8)
    if k == 0:
        c.fail("key 'n_sigmas' must be in (0, 8], got 0")
    return prog.Hampel(size, k, c.flag("replace"))


def _delta(c, _):
    v = c.scalar("value")
    if isinstance(v, str) and v.endswith("%"):
        try:
            pct = float(v[:-1])
        except ValueError:
            pct = -1
        if not 0 < pct <= MAX_PERCENT:  # also refuses "inf%" and "nan%"
            c.fail("a percentage delta must look like '5%%' (above 0, at most %d%%), got %s"
                   % (MAX_PERCENT, show(v)))
        return f.DeltaPercent(int(round(pct * 10000)))
    d = c.units(v, "value")
    if not 0 <= d < prog.LIMIT:
        c.fail("delta must be between 0 and %d units" % prog.LIMIT)
    return prog.Delta(d)


def _period(c, cls):
    """throttle, throttle_average, debounce: a period alone."""
    return cls(c.duration(c.scalar("period"), "period"))


def _heartbeat(c, _):
    if isinstance(c.data, dict):
        return f.Heartbeat(c.duration(c.get("period", required=True), "period"), c.flag("optimistic"))
    return f.Heartbeat(c.duration(c.scalar("period"), "period"), False)


def _timeout(c, _):
    if isinstance(c.data, dict):
        period = c.duration(c.get("period", required=True), "period")
        value = c.get("value")
        return f.Timeout(period, None if value is None else c.units(value, "value"))
    return f.Timeout(c.duration(c.scalar("period"), "period"), None)


def _or(c, _):
    if not isinstance(c.data, list) or not c.data or len(c.data) > MAX_FILTERS:
        c.fail("expects a list of 1..%d filters" % MAX_FILTERS)
    if c.depth >= MAX_DEPTH:
        c.fail("'or' nested more than %d deep" % MAX_DEPTH)
    c.seen.append("filters")
    branches = []
    for item in c.data:  # each branch sees every value on its own
        branches += _filters(c.channel, [item], c.scale, c.where + " > ", c.depth + 1)
    return f.Or(branches)


# name -> (maker, arg). FILTER_NAMES keeps the order the errors list them in.
MAKERS = {
    "offset": (_offset, None),
    "multiply": (_multiply, None),
    "calibrate_linear": (_calibrate_linear, None),
    "calibrate_polynomial": (_calibrate_polynomial, None),
    "filter_out": (_filter_out, None),
    "clamp": (_clamp, None),
    "round": (_round, None),
    "median": (_window, (prog.MEDIAN, 5)),
    "quantile": (_quantile, None),
    "min": (_window, (prog.MIN, 5)),
    "max": (_window, (prog.MAX, 5)),
    "sliding_window_moving_average": (_window, (prog.MEAN, 15)),
    "exponential_moving_average": (_ema, None),
    "skip_initial": (_skip_initial, None),
    "throttle": (_period, f.Throttle),
    "throttle_average": (_period, f.ThrottleAverage),
    "heartbeat": (_heartbeat, None),
    "timeout": (_timeout, None),
    "debounce": (_period, f.Debounce),
    "delta": (_delta, None),
    "or": (_or, None),
    "hampel": (_hampel, None),
}
FILTER_NAMES = ("offset", "multiply", "calibrate_linear", "calibrate_polynomial", "filter_out",
                "clamp", "round", "median", "quantile", "min", "max",
                "sliding_window_moving_average", "exponential_moving_average", "skip_initial",
                "throttle", "throttle_average", "heartbeat", "timeout", "debounce", "delta",
                "or", "hampel")


def _filters(channel, items, scale, prefix="", depth=0):
    """Configuration items -> filters, consecutive integer ones compiled into
    one filterprog.Stage. depth: how many `or` the items are inside."""
    if len(items) > MAX_FILTERS:
        raise ConfigError("%schannel '%s': at most %d filters, got %d" % (prefix, channel, MAX_FILTERS,
                                                                          len(items)))
    out = []
    run = []
    for i in range(len(items)):
        item = items[i]
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError("%schannel '%s', filter %d: expected one {name: options}, got %s"
                              % (prefix, channel, i + 1, show(item)))
        name = list(item)[0]
        if not isinstance(name, str) or len(name) > 32:
            raise ConfigError("%schannel '%s', filter %d: a filter's name, got %s"
                              % (prefix, channel, i + 1, show(name)))
        c = _Options("%schannel '%s', filter %d '%s'" % (prefix, channel, i + 1, name), item[name],
                     channel, scale, depth)
        make = MAKERS.get(name)
        if make is None:
            c.fail("unknown filter (known: %s)" % ", ".join(FILTER_NAMES))
        try:
            flt = make[0](c, make[1])
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            c.fail(str(e))  # filterprog's range checks: named like the rest
        c.done()
        if isinstance(flt, f.Filter):
            if run:
                out.append(prog.Stage(run))
                run = []
            out.append(flt)
        else:
            run.append(flt)
    if run:
        out.append(prog.Stage(run))
    return out


def build_chain(channel, config):
    """One channel: {"scale": N (default 1), "filters": [...]} -> filters.Chain."""
    if not isinstance(config, dict):
        raise ConfigError("channel '%s': expected a mapping with 'filters'" % channel)
    for k in config:
        if k not in ("scale", "filters"):
            raise ConfigError("channel '%s': unknown key '%s' (expected: scale, filters)" % (channel, k))
    scale = config.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise ConfigError("channel '%s': key 'scale' must be an integer in 1..%d, got %s"
                          % (channel, MAX_SCALE, show(scale)))
    items = config.get("filters", [])
    if not isinstance(items, list):
        raise ConfigError("channel '%s': key 'filters' must be a list" % channel)
    return f.Chain(channel, _filters(channel, items, scale), scale)


def build(config):
    """{channel: {"scale": N, "filters": [...]}} -> {channel: Chain}."""
    if not isinstance(config, dict):
        raise ConfigError("filter configuration must map channel names to chains")
    return dict((name, build_chain(name, config[name])) for name in config)
