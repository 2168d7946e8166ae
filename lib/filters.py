"""Per-channel filter chains that turn raw readings into the values worth
sending: the filters and the chain. filterconf builds them from configuration
(JSON, ESPHome's names):

    t = filterconf.build_chain("temperature", {"scale": 100, "filters": [
        {"median": {"window_size": 5, "send_every": 1}},
        {"exponential_moving_average": {"alpha": 0.2, "send_every": 1}},
        {"clamp": {"min_value": -40, "max_value": 85}},
        {"delta": 0.1}]})
    out = t.push(2153, now_ms)     # 21.53 degC in 1/scale units
    if out is not None: send(out, t.flags)
    else: t.reason                 # why not: counted in t.drops[reason]

Values are integers in units of 1/scale of the channel's unit (scale 100: 0.01),
because on the ESP32 a float is a heap object and an int is not: the common
chain (median, EMA, clamp, delta) allocates nothing per sample. Keep values
within +-2**16 units for that to hold on the ESP32 (its small ints are 31-bit;
larger values still work, through long ints).

Time-based filters take `now`, milliseconds from a clock that keeps running
across deep sleep and wraps at 2**30 like ticks_ms (periods up to 2**29 ms).
Filters that emit on time alone (heartbeat, timeout, debounce,
throttle_average) do so from tick(now).

Here are the filters written in Python (calibrations, percentage delta, the
time-based ones, or); the integer ones (offset, clamp, round, filter_out,
skip_initial, median, quantile, min, max, sliding_window_moving_average,
exponential_moving_average, absolute delta, hampel) are compiled into one
filterprog.Stage. A missing reading (None, the int world's NaN) is dropped and
counted at the chain's entry.

The filters that compute in floats (multiply, the calibrations) drop, with
reason RANGE, a result that is not finite or beyond +-VALUE_LIMIT (what a
stored reading holds): one comparison on a float they make anyway, so no
configuration can make a push raise. Everything else is bounded once, when
filterconf checks the configuration.

Every dropped value is counted by reason in chain.drops; every value sent
carries chain.flags (STALE: re-sent by timeout, CLAMPED, REPLACED by hampel).
A chain's state fits a compact snapshot() for RTC memory across deep sleep.
"""

from confcheck import ConfigError  # also filters.ConfigError, as before: the one class
from filterprog import (OK, NAN, VALUE, RANGE, OUTLIER, SKIP, THROTTLE, DELTA, HOLD, OR,  # noqa: F401
                        STALE, CLAMPED, REPLACED)

REASONS = ("ok", "nan", "value", "range", "outlier", "skip", "throttle", "delta", "hold", "or")

_PERIOD = 1 << 30
VALUE_LIMIT = (1 << 31) - 1  # a reading is a signed 32-bit int (uplink.pack_reading)
_HALF = _PERIOD >> 1


def _elapsed(now, then):
    return ((now - then + _HALF) & (_PERIOD - 1)) - _HALF


def _value(y):
    """A computed float -> the int to pass on, or None when it is not finite
    or beyond what a reading holds (the comparison is False for NaN)."""
    if -VALUE_LIMIT <= y <= VALUE_LIMIT:
        return int(round(y))
    return None


def _div(a, b):
    """a / b rounded half away from zero, for ints (b > 0)."""
    if a >= 0:
        return (a + (b >> 1)) // b
    return -((-a + (b >> 1)) // b)


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
    reason = RANGE  # when push returns None: the product is beyond a reading

    def __init__(self, factor):
        self.factor = factor

    def push(self, x, now):
        return _value(x * self.factor)


class CalibrateLinear(Filter):
    """points: [(from, to)] in units. Least squares line, or piecewise (exact)."""

    reason = RANGE

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
            return _value(self.slope * x + self.icept)
        pts = self.points
        i = 1
        while i < len(pts) - 1 and x > pts[i][0]:
            i += 1
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        return _value(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


class CalibratePolynomial(Filter):
    """Least-squares polynomial of `degree` through points (in units).
    filterconf bounds degree and points (x**(2 * degree) must fit a double);
    coefficients that still come out NaN or infinite are refused here."""

    reason = RANGE

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
        for c in self.coeffs:
            if not c - c == 0:  # NaN or infinite: nan - nan, inf - inf are NaN
                raise ConfigError("calibrate_polynomial: the datapoints give no finite degree %d fit"
                                  % degree)

    def push(self, x, now):
        y = 0.0
        for c in reversed(self.coeffs):
            y = y * x + c
        return _value(y)


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
