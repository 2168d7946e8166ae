"""Per-channel filter chains, built from configuration (JSON), that turn raw
readings into the values worth sending.

    chains = filters.build({"temperature": {"scale": 100, "filters": [
        {"median": {"window_size": 5, "send_every": 1}},
        {"exponential_moving_average": {"alpha": 0.2, "send_every": 1}},
        {"clamp": {"min_value": -40, "max_value": 85}},
        {"delta": 0.1}]}})
    t = chains["temperature"]
    out = t.push(2153, now_ms)     # 21.53 degC in 1/scale units
    if out is not None: send(out, t.flags)
    else: t.reason                 # why not: counted in t.drops[reason]

Values are integers in units of 1/scale of the channel's unit (scale 100: 0.01),
because on the ESP32 a float is a heap object and an int is not: the common
chain (median, EMA, clamp, delta) allocates nothing per sample. Keep values
within +-2**16 units for that to hold on the ESP32 (its small ints are 31-bit;
larger values still work, through long ints). Numbers in the configuration are
in the channel's unit and converted with its scale.

Time-based filters take `now`, milliseconds from a clock that keeps running
across deep sleep and wraps at 2**30 like ticks_ms (periods up to 2**29 ms).
Filters that emit on time alone (heartbeat, timeout, debounce,
throttle_average) do so from tick(now).

Filters (ESPHome's, with the same names and defaults): offset, multiply,
calibrate_linear (least squares, or method: exact for piecewise), calibrate_polynomial,
filter_out, clamp, round, median, quantile, min, max, sliding_window_moving_average,
exponential_moving_average, skip_initial, throttle, throttle_average, heartbeat,
timeout, debounce, delta, or. And hampel: outlier rejection by the median
absolute deviation. A missing reading (None, the int world's NaN) is dropped and
counted at the chain's entry.

Every dropped value is counted by reason in chain.drops; every value sent
carries chain.flags (STALE: re-sent by timeout, CLAMPED, REPLACED by hampel).
A chain's state fits a compact snapshot() for RTC memory across deep sleep.
"""

import filterprog as prog
from filterprog import (OK, NAN, VALUE, RANGE, OUTLIER, SKIP, THROTTLE, DELTA, HOLD, OR,  # noqa: F401
                        STALE, CLAMPED, REPLACED)

REASONS = ("ok", "nan", "value", "range", "outlier", "skip", "throttle", "delta", "hold", "or")

_PERIOD = 1 << 30
_HALF = _PERIOD >> 1


def _elapsed(now, then):
    return ((now - then + _HALF) & (_PERIOD - 1)) - _HALF


def _div(a, b):
    """a / b rounded half away from zero, for ints (b > 0)."""
    if a >= 0:
        return (a + (b >> 1)) // b
    return -((-a + (b >> 1)) // b)


class ConfigError(ValueError):
    pass


# ------------------------------------------------------------------ base
class Filter:
    reason = OK
    flag = 0
    STATE = ()  # the attributes (ints) that a snapshot keeps

    def push(self, x, now):
        return x

    def tick(self, now):
        return None

    def state(self):
        return [getattr(self, name) for name in self.STATE]

    def load(self, it):
        for name in self.STATE:
            setattr(self, name, next(it))


class Multiply(Filter):
    def __init__(self, factor):
        self.factor = factor

    def push(self, x, now):
        return int(round(x * self.factor))


class CalibrateLinear(Filter):
    """points: [(from, to)] in units. Least squares line, or piecewise (exact)."""

    def __init__(self, points, exact=False):
        self.points = sorted(points)
        self.exact = exact
        if not exact:
            n = len(points)
            sx = sum(p[0] for p in points)
            sy = sum(p[1] for p in points)
            sxx = sum(p[0] * p[0] for p in points)
            sxy = sum(p[0] * p[1] for p in points)
            den = n * sxx - sx * sx
            if n == 1 or den == 0:
                self.slope, self.icept = 1.0, (sy - sx) / n
            else:
                self.slope = (n * sxy - sx * sy) / den
                self.icept = (sy - self.slope * sx) / n

    def push(self, x, now):
        if not self.exact:
            return int(round(self.slope * x + self.icept))
        pts = self.points
        i = 1
        while i < len(pts) - 1 and x > pts[i][0]:
            i += 1
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        return int(round(y0 + (y1 - y0) * (x - x0) / (x1 - x0)))


class CalibratePolynomial(Filter):
    """Least-squares polynomial of `degree` through points (in units)."""

    def __init__(self, degree, points):
        n = degree + 1
        # normal equations A c = b, solved by Gaussian elimination
        a = [[0.0] * n for _ in range(n)]
        b = [0.0] * n
        for x, y in points:
            for i in range(n):
                b[i] += y * x ** i
                for j in range(n):
                    a[i][j] += x ** (i + j)
        for col in range(n):
            piv = max(range(col, n), key=lambda r: abs(a[r][col]))
            if abs(a[piv][col]) < 1e-12:
                raise ConfigError("calibrate_polynomial: datapoints do not determine degree %d" % degree)
            a[col], a[piv] = a[piv], a[col]
            b[col], b[piv] = b[piv], b[col]
            for r in range(n):
                if r != col:
                    f = a[r][col] / a[col][col]
                    for c in range(col, n):
                        a[r][c] -= f * a[col][c]
                    b[r] -= f * b[col]
        self.coeffs = [b[i] / a[i][i] for i in range(n)]

    def push(self, x, now):
        y = 0.0
        for c in reversed(self.coeffs):
            y = y * x + c
        return int(round(y))


class DeltaPercent(Filter):
    """Pass a value only when it differs from the last one passed by at least
    `ppm` parts per million of that one. (An absolute delta is compiled.)"""

    reason = DELTA
    STATE = ("have", "last")

    def __init__(self, ppm):
        self.ppm = ppm
        self.last = 0
        self.have = 0

    def push(self, x, now):
        if self.have and abs(x - self.last) * 1000000 < abs(self.last) * self.ppm:
            return None
        self.last = x
        self.have = 1
        return x


# ------------------------------------------------------------------ time
class Throttle(Filter):
    reason = THROTTLE
    STATE = ("have", "last")

    def __init__(self, period):
        self.period = period
        self.last = 0
        self.have = 0

    def push(self, x, now):
        if self.have and _elapsed(now, self.last) < self.period:
            return None
        self.last = now
        self.have = 1
        return x


class ThrottleAverage(Filter):
    """The average of the values received in each period, sent when it ends."""

    reason = HOLD
    STATE = ("start", "total", "n")

    def __init__(self, period):
        self.period = period
        self.start = 0
        self.total = 0
        self.n = 0

    def push(self, x, now):
        if self.n == 0:
            self.start = now
        self.total += x
        self.n += 1
        return self.tick(now)

    def tick(self, now):
        if self.n and _elapsed(now, self.start) >= self.period:
            avg = _div(self.total, self.n)
            self.total = 0
            self.n = 0
            return avg
        return None


class Heartbeat(Filter):
    """Send the latest value every period whatever it is; values in between are
    held (or also passed at once when optimistic)."""

    reason = HOLD
    STATE = ("have", "value", "started", "last")

    def __init__(self, period, optimistic):
        self.period = period
        self.optimistic = optimistic
        self.value = 0
        self.have = 0
        self.last = 0
        self.started = 0

    def push(self, x, now):
        self.value = x
        self.have = 1
        if not self.started:
            self.started = 1
            self.last = now
        return x if self.optimistic else None

    def tick(self, now):
        if self.have and _elapsed(now, self.last) >= self.period:
            self.last = now
            return self.value
        return None


class Timeout(Filter):
    """After the first value, if none arrives for `period`, send `value` (when
    configured) or the last value flagged STALE."""

    STATE = ("have", "last_value", "last", "fired")

    def __init__(self, period, value):
        self.period = period
        self.fallback = value
        self.last_value = 0
        self.last = 0
        self.have = 0
        self.fired = 0

    def push(self, x, now):
        self.flag = 0
        self.last_value = x
        self.last = now
        self.have = 1
        self.fired = 0
        return x

    def tick(self, now):
        if self.have and not self.fired and _elapsed(now, self.last) >= self.period:
            self.fired = 1
            if self.fallback is not None:
                self.flag = 0
                return self.fallback
            self.flag = STALE
            return self.last_value
        return None


class Debounce(Filter):
    """Send the last value once no new value came for `period`."""

    reason = HOLD
    STATE = ("pending", "value", "last")

    def __init__(self, period):
        self.period = period
        self.value = 0
        self.last = 0
        self.pending = 0

    def push(self, x, now):
        self.value = x
        self.last = now
        self.pending = 1
        return None

    def tick(self, now):
        if self.pending and _elapsed(now, self.last) >= self.period:
            self.pending = 0
            return self.value
        return None


class Or(Filter):
    """Every branch sees every value; the first branch that passes it wins."""

    reason = OR

    def __init__(self, branches):
        self.branches = branches

    def push(self, x, now):
        out = None
        self.flag = 0
        for f in self.branches:
            y = f.push(x, now)
            if out is None and y is not None:
                out = y
                self.flag = f.flag
        return out

    def tick(self, now):
        out = None
        for f in self.branches:
            y = f.tick(now)
            if out is None and y is not None:
                out = y
                self.flag = f.flag
        return out

    def state(self):
        out = []
        for f in self.branches:
            out.extend(f.state())
        return out

    def load(self, it):
        for f in self.branches:
            f.load(it)


# ------------------------------------------------------------------ chain
class Chain:
    def __init__(self, name, filters, scale=1):
        self.name = name
        self.filters = filters
        self.scale = scale
        self.drops = [0] * len(REASONS)
        self.reason = OK
        self.flags = 0

    def push(self, x, now=0):
        """A new reading -> the value to send, or None (see .reason)."""
        if x is None:
            self.reason = NAN
            self.drops[NAN] += 1
            return None
        flags = 0
        for f in self.filters:
            x = f.push(x, now)
            if x is None:
                r = f.reason
                self.reason = r
                self.drops[r] += 1
                return None
            flags |= f.flag
        self.reason = OK
        self.flags = flags
        return x

    def tick(self, now):
        """Let time pass: a value that a time-based filter emits now, or None."""
        out = None
        for i in range(len(self.filters)):
            x = self.filters[i].tick(now)
            if x is None:
                continue
            flags = self.filters[i].flag
            for f in self.filters[i + 1 :]:
                x = f.push(x, now)
                if x is None:
                    self.drops[f.reason] += 1
                    break
                flags |= f.flag
            if x is not None:
                out = x
                self.flags = flags
        return out

    def snapshot(self):
        """The chain's state as compact bytes (zigzag varints)."""
        out = bytearray([len(self.filters)])
        for f in self.filters:
            for v in f.state():
                v = v << 1 if v >= 0 else ((-v) << 1) - 1  # zigzag: small magnitudes stay short
                while v >= 0x80:
                    out.append((v & 0x7F) | 0x80)
                    v >>= 7
                out.append(v)
        return bytes(out)

    def restore(self, data):
        """Load a snapshot() of a chain of the same configuration; ValueError
        (and the chain left fresh) when it does not fit."""
        if not data or data[0] != len(self.filters):
            raise ValueError("filter snapshot for another chain (%s)" % self.name)
        it = _varints(data, 1)
        try:
            for f in self.filters:
                f.load(it)
            left = next(it, None)
        except StopIteration:
            left = None
            raise ValueError("filter snapshot too short (%s)" % self.name)
        if left is not None:
            raise ValueError("filter snapshot too long (%s)" % self.name)


def _varints(data, i):
    n = len(data)
    while i < n:
        v = 0
        shift = 0
        while True:
            if i >= n:
                raise ValueError("filter snapshot truncated")
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        yield (v >> 1) ^ -(v & 1)


# ------------------------------------------------------------------ config
_UNITS = (("ms", 1), ("min", 60000), ("s", 1000), ("h", 3600000))


class _Spec:
    """Reads one filter's parameters, naming the channel, filter and key in errors."""

    def __init__(self, channel, index, name, params, scale):
        self.where = "channel '%s', filter %d '%s'" % (channel, index + 1, name)
        self.params = params
        self.scale = scale
        self.seen = []

    def fail(self, msg):
        raise ConfigError("%s: %s" % (self.where, msg))

    def get(self, key, default=None, required=False):
        self.seen.append(key)
        if not isinstance(self.params, dict):
            self.fail("expected a mapping of options, got %r" % (self.params,))
        if key in self.params:
            return self.params[key]
        if required:
            self.fail("missing key '%s'" % key)
        return default

    def done(self):
        if isinstance(self.params, dict):
            for k in self.params:
                if k not in self.seen:
                    self.fail("unknown key '%s' (expected: %s)" % (k, ", ".join(self.seen)))

    def number(self, v, key):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail("key '%s' must be a number, got %r" % (key, v))
        return v

    def units(self, v, key):
        """A value in the channel's unit -> int in 1/scale units."""
        return int(round(self.number(v, key) * self.scale))

    def count(self, v, key, lo=1):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            self.fail("key '%s' must be an integer >= %d, got %r" % (key, lo, v))
        return v

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

    def window(self, d_window, d_every, d_first):
        size = self.count(self.get("window_size", d_window), "window_size")
        if size > 64:
            self.fail("key 'window_size' must be at most 64, got %d" % size)
        every = self.count(self.get("send_every", d_every), "send_every")
        first = self.count(self.get("send_first_at", d_first), "send_first_at")
        if first > every:
            self.fail("send_first_at (%d) must not exceed send_every (%d)" % (first, every))
        return size, every, first


def _scalar_or(spec, key):
    """Filters written as `name: value` or `name: {key: value}`."""
    if isinstance(spec.params, dict):
        return spec.get(key, required=True)
    spec.seen.append(key)
    return spec.params


def _make(spec, name, channel, scale):
    if name == "offset":
        return prog.Offset(spec.units(_scalar_or(spec, "value"), "value"))
    if name == "multiply":
        return Multiply(spec.number(_scalar_or(spec, "value"), "value"))
    if name == "calibrate_linear":
        if isinstance(spec.params, list):
            spec.params = {"datapoints": spec.params}
        method = spec.get("method", "least_squares")
        if method not in ("least_squares", "exact"):
            spec.fail("key 'method' must be least_squares or exact, got %r" % (method,))
        pts = spec.points(spec.get("datapoints", required=True), "datapoints")
        if method == "exact":
            if len(pts) < 2 or len(set(p[0] for p in pts)) != len(pts):
                spec.fail("exact calibration needs two or more datapoints with distinct inputs")
        return CalibrateLinear(pts, method == "exact")
    if name == "calibrate_polynomial":
        degree = spec.count(spec.get("degree", required=True), "degree")
        pts = spec.points(spec.get("datapoints", required=True), "datapoints")
        if len(pts) <= degree:
            spec.fail("degree %d needs at least %d datapoints" % (degree, degree + 1))
        return CalibratePolynomial(degree, pts)
    if name == "filter_out":
        v = spec.params
        if isinstance(v, dict):
            v = spec.get("values", required=True)
        if not isinstance(v, list):
            v = [v]
        return prog.FilterOut([spec.units(x, "values") for x in v])
    if name == "clamp":
        lo = spec.get("min_value")
        hi = spec.get("max_value")
        drop = spec.get("ignore_out_of_range", False)
        if not isinstance(drop, bool):
            spec.fail("key 'ignore_out_of_range' must be true or false")
        lo = -prog.LIMIT if lo is None else spec.units(lo, "min_value")
        hi = prog.LIMIT if hi is None else spec.units(hi, "max_value")
        if lo > hi:
            spec.fail("min_value is above max_value")
        return prog.Clamp(lo, hi, drop)
    if name == "round":
        decimals = spec.count(_scalar_or(spec, "accuracy_decimals"), "accuracy_decimals", 0)
        return prog.Round(max(1, scale // (10 ** decimals)))
    if name == "skip_initial":
        return prog.SkipInitial(spec.count(_scalar_or(spec, "count"), "count"))
    if name in ("median", "min", "max"):
        size, every, first = spec.window(5, 5, 1)
        kind = {"median": prog.MEDIAN, "min": prog.MIN, "max": prog.MAX}[name]
        return prog.Window(kind, size, every, first)
    if name == "quantile":
        size, every, first = spec.window(5, 5, 1)
        q = spec.number(spec.get("quantile", 0.9), "quantile")
        if not 0 < q <= 1:
            spec.fail("key 'quantile' must be in (0, 1], got %r" % q)
        return prog.Window(prog.QUANTILE, size, every, first, int(round(q * 1000)))
    if name == "sliding_window_moving_average":
        size, every, first = spec.window(15, 15, 1)
        return prog.Window(prog.MEAN, size, every, first)
    if name == "exponential_moving_average":
        alpha = spec.number(spec.get("alpha", 0.1), "alpha")
        if not 0 < alpha <= 1:
            spec.fail("key 'alpha' must be in (0, 1], got %r" % alpha)
        every = spec.count(spec.get("send_every", 15), "send_every")
        first = spec.count(spec.get("send_first_at", 1), "send_first_at")
        if first > every:
            spec.fail("send_first_at (%d) must not exceed send_every (%d)" % (first, every))
        return prog.EMA(alpha, every, first)
    if name == "hampel":
        size = spec.count(spec.get("window_size", 7), "window_size", 3)
        if size > 64:
            spec.fail("key 'window_size' must be at most 64, got %d" % size)
        k = spec.number(spec.get("n_sigmas", 3.0), "n_sigmas")
        if not 0 < k <= 8:
            spec.fail("key 'n_sigmas' must be in (0, 8], got %r" % k)
        replace = spec.get("replace", False)
        if not isinstance(replace, bool):
            spec.fail("key 'replace' must be true or false")
        return prog.Hampel(size, k, replace)
    if name == "delta":
        v = _scalar_or(spec, "value")
        if isinstance(v, str) and v.endswith("%"):
            try:
                pct = float(v[:-1])
            except ValueError:
                pct = -1
            if pct <= 0:
                spec.fail("a percentage delta must look like '5%%', got %r" % v)
            return DeltaPercent(int(round(pct * 10000)))
        d = spec.units(v, "value")
        if not 0 <= d < prog.LIMIT:
            spec.fail("delta must be between 0 and %d units" % prog.LIMIT)
        return prog.Delta(d)
    if name == "throttle":
        return Throttle(spec.duration(_scalar_or(spec, "period"), "period"))
    if name == "throttle_average":
        return ThrottleAverage(spec.duration(_scalar_or(spec, "period"), "period"))
    if name == "heartbeat":
        if isinstance(spec.params, dict):
            period = spec.duration(spec.get("period", required=True), "period")
            optimistic = spec.get("optimistic", False)
            if not isinstance(optimistic, bool):
                spec.fail("key 'optimistic' must be true or false")
        else:
            period, optimistic = spec.duration(spec.params, "period"), False
            spec.seen.append("period")
        return Heartbeat(period, optimistic)
    if name == "timeout":
        if isinstance(spec.params, dict):
            period = spec.duration(spec.get("period", required=True), "period")
            value = spec.get("value")
            value = None if value is None else spec.units(value, "value")
        else:
            period, value = spec.duration(spec.params, "period"), None
            spec.seen.append("period")
        return Timeout(period, value)
    if name == "debounce":
        return Debounce(spec.duration(_scalar_or(spec, "period"), "period"))
    if name == "or":
        if not isinstance(spec.params, list) or not spec.params:
            spec.fail("expects a list of filters")
        spec.seen.append("filters")
        branches = []
        for i in range(len(spec.params)):  # each branch sees every value on its own
            branches += _filters(channel, [spec.params[i]], scale, spec.where + " > ")
        return Or(branches)
    spec.fail("unknown filter (known: %s)" % ", ".join(FILTER_NAMES))


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
        spec = _Spec(channel, i, name, item[name], scale)
        if prefix:
            spec.where = prefix + spec.where
        try:
            f = _make(spec, name, channel, scale)
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            spec.fail(str(e))
        spec.done()
        if isinstance(f, Filter):
            if run:
                out.append(prog.Stage(run))
                run = []
            out.append(f)
        else:
            run.append(f)
    if run:
        out.append(prog.Stage(run))
    return out


def build_chain(channel, config):
    """One channel: {"scale": N (default 1), "filters": [...]}."""
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
    return Chain(channel, _filters(channel, items, scale), scale)


def build(config):
    """{channel: {"scale": N, "filters": [...]}} -> {channel: Chain}."""
    if not isinstance(config, dict):
        raise ConfigError("filter configuration must map channel names to chains")
    return dict((name, build_chain(name, config[name])) for name in config)
