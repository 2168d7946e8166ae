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
"""

import filterprog as prog
import filters as f
from confcheck import Check, ConfigError

_UNITS = (("ms", 1), ("min", 60000), ("s", 1000), ("h", 3600000))


class _Options(Check):
    """One filter's options; numbers in the channel's unit."""

    def __init__(self, where, data, channel, scale):
        Check.__init__(self, where, data)
        self.channel = channel
        self.scale = scale

    def scalar(self, key):
        """Filters written as `name: value` or `name: {key: value}`."""
        if isinstance(self.data, dict):
            return self.get(key, required=True)
        self.seen.append(key)
        return self.data

    def units(self, v, key):
        """A value in the channel's unit -> int in 1/scale units."""
        return int(round(self.number(v, key) * self.scale))

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
            self.fail("key '%s' must be a duration like 500ms, 10s, 5min, 2h; got %r" % (key, v))
        v = self.number(v, key)
        if not 0 < v < (1 << 29):
            self.fail("key '%s' must be a duration between 1 ms and 6 days, got %r" % (key, v))
        return int(v)

    def points(self, v, key):
        if not isinstance(v, list) or not v:
            self.fail("key '%s' must be a list of datapoints" % key)
        out = []
        for p in v:
            if isinstance(p, str) and "->" in p:
                a, b = p.split("->")
                try:
                    p = [float(a), float(b)]
                except ValueError:
                    self.fail("datapoint %r is not 'number -> number'" % p)
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                self.fail("datapoint %r is not [from, to] or 'from -> to'" % (p,))
            out.append((self.units(p[0], key), self.units(p[1], key)))
        return out

    def every(self, d_every, d_first):
        every = self.count(self.get("send_every", d_every), "send_every")
        first = self.count(self.get("send_first_at", d_first), "send_first_at")
        if first > every:
            self.fail("send_first_at (%d) must not exceed send_every (%d)" % (first, every))
        return every, first

    def window(self, d_size, lo=1):
        size = self.count(self.get("window_size", d_size), "window_size", lo)
        if size > 64:
            self.fail("key 'window_size' must be at most 64, got %d" % size)
        return size


# ------------------------------------------------------------------ makers
# One per filter (or per family): maker(options, arg) -> the filter; arg is
# what the members of a family differ by (their MAKERS entry).


def _offset(c, _):
    return prog.Offset(c.units(c.scalar("value"), "value"))


def _multiply(c, _):
    return f.Multiply(c.number(c.scalar("value"), "value"))


def _calibrate_linear(c, _):
    if isinstance(c.data, list):
        c.data = {"datapoints": c.data}
    method = c.get("method", "least_squares")
    if method not in ("least_squares", "exact"):
        c.fail("key 'method' must be least_squares or exact, got %r" % (method,))
    pts = c.points(c.get("datapoints", required=True), "datapoints")
    if method == "exact":
        if len(pts) < 2 or len(set(p[0] for p in pts)) != len(pts):
            c.fail("exact calibration needs two or more datapoints with distinct inputs")
    return f.CalibrateLinear(pts, method == "exact")


def _calibrate_polynomial(c, _):
    degree = c.count(c.get("degree", required=True), "degree")
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
    decimals = c.count(c.scalar("accuracy_decimals"), "accuracy_decimals", 0)
    return prog.Round(max(1, c.scale // (10 ** decimals)))


def _skip_initial(c, _):
    return prog.SkipInitial(c.count(c.scalar("count"), "count"))


def _window(c, kind_size):
    """median, min, max, sliding_window_moving_average: (kind, default size)."""
    size = c.window(kind_size[1])
    every, first = c.every(kind_size[1], 1)
    return prog.Window(kind_size[0], size, every, first)


def _quantile(c, _):
    size = c.window(5)
    every, first = c.every(5, 1)
    q = c.number(c.get("quantile", 0.9), "quantile")
    if not 0 < q <= 1:
        c.fail("key 'quantile' must be in (0, 1], got %r" % q)
    return prog.Window(prog.QUANTILE, size, every, first, int(round(q * 1000)))


def _ema(c, _):
    alpha = c.number(c.get("alpha", 0.1), "alpha")
    if not 0 < alpha <= 1:
        c.fail("key 'alpha' must be in (0, 1], got %r" % alpha)
    every, first = c.every(15, 1)
    return prog.EMA(alpha, every, first)


def _hampel(c, _):
    size = c.window(7, 3)
    k = c.number(c.get("n_sigmas", 3.0), "n_sigmas")
    if not 0 < k <= 8:
        c.fail("key 'n_sigmas' must be in (0, 8], got %r" % k)
    return prog.Hampel(size, k, c.flag("replace"))


def _delta(c, _):
    v = c.scalar("value")
    if isinstance(v, str) and v.endswith("%"):
        try:
            pct = float(v[:-1])
        except ValueError:
            pct = -1
        if pct <= 0:
            c.fail("a percentage delta must look like '5%%', got %r" % v)
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
    if not isinstance(c.data, list) or not c.data:
        c.fail("expects a list of filters")
    c.seen.append("filters")
    branches = []
    for item in c.data:  # each branch sees every value on its own
        branches += _filters(c.channel, [item], c.scale, c.where + " > ")
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


def _filters(channel, items, scale, prefix=""):
    """Configuration items -> filters, consecutive integer ones compiled into
    one filterprog.Stage."""
    out = []
    run = []
    for i in range(len(items)):
        item = items[i]
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError("%schannel '%s', filter %d: expected one {name: options}, got %r"
                              % (prefix, channel, i + 1, item))
        name = list(item)[0]
        c = _Options("%schannel '%s', filter %d '%s'" % (prefix, channel, i + 1, name), item[name],
                     channel, scale)
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
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError("channel '%s': key 'scale' must be a positive integer, got %r" % (channel, scale))
    items = config.get("filters", [])
    if not isinstance(items, list):
        raise ConfigError("channel '%s': key 'filters' must be a list" % channel)
    return f.Chain(channel, _filters(channel, items, scale), scale)


def build(config):
    """{channel: {"scale": N, "filters": [...]}} -> {channel: Chain}."""
    if not isinstance(config, dict):
        raise ConfigError("filter configuration must map channel names to chains")
    return dict((name, build_chain(name, config[name])) for name in config)
