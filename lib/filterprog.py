"""The integer stage of a filter chain: consecutive integer filters (offset,
clamp, round, filter_out, skip_initial, median/min/max/quantile/mean windows,
EMA, absolute delta, Hampel) compiled into one small program that a single
viper function runs. A sample crosses the whole stage in one call, with no
allocation: the common chain (median, EMA, clamp, delta) costs one call.

On the ESP32 and the VM `@micropython.viper` compiles _run to machine code;
under CPython the decorator does nothing and the same code runs as Python.

Everything stored (program parameters, window contents, accumulators) is
biased by 2**29, so a 32-bit load is the same positive number on a 32-bit
ESP32 and on a 64-bit host. Values entering the stage must lie within
+-2**18 units (the stage rejects others with reason RANGE): products then stay
within 31 bits, so machine arithmetic on the ESP32 never wraps.
"""

import sys
from array import array

import micropython

if sys.implementation.name != "micropython":

    def ptr32(buf):  # viper's pointer cast; plain Python indexes the array itself
        return buf


BIAS = 0x20000000
LIMIT = 0x40000  # 2**18

# why a push returned None (shared with filters.py)
OK = 0
NAN = 1
VALUE = 2
RANGE = 3
OUTLIER = 4
SKIP = 5
THROTTLE = 6
DELTA = 7
HOLD = 8
OR = 9
# what a sent value went through
STALE = 1
CLAMPED = 2
REPLACED = 4

_OFFSET = 1
_CLAMP = 2
_DELTA = 3
_EMA = 4
_WINDOW = 5
_SKIP = 6
_OUT = 7
_ROUND = 8
_HAMPEL = 9
# window kinds
MEDIAN = 0
MIN = 1
MAX = 2
MEAN = 3
QUANTILE = 4

# st[0] = reason of the last push, st[1] = its flags; filter state from 2 on
_STATE0 = 2


@micropython.viper
def _window_add(st, base: int, size: int, xb: int) -> int:
    """Add the biased value xb to the window at st[base]: n, pos, ring[size],
    sorted[size]. Returns the biased value it pushed out, or 0."""
    s = ptr32(st)
    n = int(s[base])
    pos = int(s[base + 1])
    ring = base + 2
    srt = ring + size
    old = 0
    if n == size:
        old = int(s[ring + pos])
        i = 0
        while int(s[srt + i]) != old:
            i += 1
        while i < n - 1:
            s[srt + i] = s[srt + i + 1]
            i += 1
        n -= 1
    s[ring + pos] = xb
    pos += 1
    if pos == size:
        pos = 0
    i = n
    while i > 0 and int(s[srt + i - 1]) > xb:
        s[srt + i] = s[srt + i - 1]
        i -= 1
    s[srt + i] = xb
    s[base] = n + 1
    s[base + 1] = pos
    return old


@micropython.viper
def _median(st, srt: int, n: int) -> int:
    s = ptr32(st)
    h = n >> 1
    if n & 1:
        return int(s[srt + h]) - 0x20000000
    return (int(s[srt + h - 1]) + int(s[srt + h]) - 0x20000000 - 0x20000000) >> 1


@micropython.viper
def _run(prog, st, scratch, x: int) -> int:
    p = ptr32(prog)
    s = ptr32(st)
    if x >= 0x40000 or x <= -0x40000:
        s[0] = 3  # RANGE: outside what the stage computes exactly
        return 0
    flags = 0
    pc = 1
    end = int(p[0])
    while pc < end:
        op = int(p[pc])
        if op == 1:  # offset: add
            x = x + int(p[pc + 1]) - 0x20000000
            pc += 2
        elif op == 2:  # clamp: lo, hi, drop
            lo = int(p[pc + 1]) - 0x20000000
            hi = int(p[pc + 2]) - 0x20000000
            if x < lo or x > hi:
                if int(p[pc + 3]):
                    s[0] = 3  # RANGE
                    return 0
                if x < lo:
                    x = lo
                else:
                    x = hi
                flags |= 2  # CLAMPED
            pc += 4
        elif op == 3:  # delta: min change, state
            so = int(p[pc + 2])
            d = x - (int(s[so + 1]) - 0x20000000)
            if d < 0:
                d = -d
            if int(s[so]) and d < int(p[pc + 1]):
                s[0] = 7  # DELTA
                return 0
            s[so] = 1
            s[so + 1] = x + 0x20000000
            pc += 3
        elif op == 4:  # EMA: a, shift, send_every, state (have, acc << 3, count)
            so = int(p[pc + 4])
            if int(s[so]):
                acc = int(s[so + 1]) - 0x20000000
                acc = acc + ((((x << 3) - acc) * int(p[pc + 1])) >> int(p[pc + 2]))
            else:
                acc = x << 3
                s[so] = 1
            s[so + 1] = acc + 0x20000000
            c = int(s[so + 2]) + 1
            if c < int(p[pc + 3]):
                s[so + 2] = c
                s[0] = 8  # HOLD
                return 0
            s[so + 2] = 0
            x = (acc + 4) >> 3
            pc += 5
        elif op == 5:  # window: kind, size, send_every, quantile, state (count, total, n, pos, ...)
            kind = int(p[pc + 1])
            size = int(p[pc + 2])
            so = int(p[pc + 5])
            old = int(_window_add(st, so + 2, size, x + 0x20000000))
            total = int(s[so + 1]) - 0x20000000 + x
            if old:
                total -= old - 0x20000000
            s[so + 1] = total + 0x20000000
            c = int(s[so]) + 1
            if c < int(p[pc + 3]):
                s[so] = c
                s[0] = 8  # HOLD
                return 0
            s[so] = 0
            n = int(s[so + 2])
            srt = so + 4 + size
            if kind == 0:
                x = int(_median(st, srt, n))
            elif kind == 1:
                x = int(s[srt]) - 0x20000000
            elif kind == 2:
                x = int(s[srt + n - 1]) - 0x20000000
            elif kind == 3:  # mean, rounded half away from zero
                if total >= 0:
                    x = (total + (n >> 1)) // n
                else:
                    x = -((-total + (n >> 1)) // n)
            else:  # quantile in 1/1000: ceil(n * q) - 1, as ESPHome
                i = (n * int(p[pc + 4]) + 999) // 1000 - 1
                if i < 0:
                    i = 0
                x = int(s[srt + i]) - 0x20000000
            pc += 6
        elif op == 6:  # skip_initial: state (left)
            so = int(p[pc + 1])
            left = int(s[so])
            if left > 0:
                s[so] = left - 1
                s[0] = 5  # SKIP
                return 0
            pc += 2
        elif op == 7:  # filter_out: count, values...
            k = int(p[pc + 1])
            i = 0
            while i < k:
                if x == int(p[pc + 2 + i]) - 0x20000000:
                    s[0] = 2  # VALUE
                    return 0
                i += 1
            pc += 2 + k
        elif op == 8:  # round to a step, half away from zero
            step = int(p[pc + 1])
            if x >= 0:
                x = (x + (step >> 1)) // step * step
            else:
                x = -((-x + (step >> 1)) // step * step)
            pc += 2
        else:  # 9 hampel: size, k * 1.4826 * 128, replace, state (n, pos, ring, sorted)
            size = int(p[pc + 1])
            so = int(p[pc + 4])
            n = int(s[so])
            outlier = 0
            m = 0
            if n >= 3:
                m = int(_median(st, so + 2 + size, n))
                t = ptr32(scratch)
                i = 0
                while i < n:  # absolute deviations, insertion-sorted
                    v = int(s[so + 2 + i]) - 0x20000000 - m
                    if v < 0:
                        v = -v
                    j = i
                    while j > 0 and int(t[j - 1]) > v:
                        t[j] = t[j - 1]
                        j -= 1
                    t[j] = v
                    i += 1
                h = n >> 1
                if n & 1:
                    mad = int(t[h])
                else:
                    mad = (int(t[h - 1]) + int(t[h])) >> 1
                if mad < 1:
                    mad = 1
                dx = x - m
                if dx < 0:
                    dx = -dx
                if (dx << 7) > int(p[pc + 2]) * mad:
                    outlier = 1
            _window_add(st, so, size, x + 0x20000000)  # every raw value: steps get through
            if outlier:
                if int(p[pc + 3]):
                    x = m
                    flags |= 4  # REPLACED
                else:
                    s[0] = 4  # OUTLIER
                    return 0
            pc += 5
    s[0] = 0
    s[1] = flags
    return x


class Stage:
    """Compiled integer filters; a Filter of the chain (push, state, load)."""

    reason = OK
    flag = 0

    def __init__(self, members):
        prog = [0]
        init = []  # state values, unbiased
        biased = []  # which state slots hold biased values
        for m in members:
            so = _STATE0 + len(init)
            ops, state, bias = m.emit(so)
            prog.extend(ops)
            init.extend(state)
            biased.extend(bias)
        prog[0] = len(prog)
        self.members = members
        self.prog = array("i", prog)
        self.biased = biased
        self.st = array("i", [0] * (_STATE0 + len(init)))
        for i in range(len(init)):
            self.st[_STATE0 + i] = init[i] + (BIAS if biased[i] else 0)
        size = 1
        for m in members:
            size = max(size, getattr(m, "size", 1))
        self.scratch = array("i", [0] * size)

    def push(self, x, now):
        st = self.st
        x = _run(self.prog, st, self.scratch, x)
        if st[0]:
            self.reason = st[0]
            return None
        self.flag = st[1]
        return x

    def tick(self, now):
        return None

    def state(self):
        return [self.st[_STATE0 + i] - (BIAS if self.biased[i] else 0)
                for i in range(len(self.biased))]

    def load(self, it):
        for i in range(len(self.biased)):
            v = next(it)
            if self.biased[i]:
                if not -BIAS < v < BIAS:
                    raise ValueError("filter snapshot value out of range")
                v += BIAS
            elif not 0 <= v < BIAS:
                raise ValueError("filter snapshot value out of range")
            self.st[_STATE0 + i] = v


# ------------------------------------------------------------ members
# Each compilable filter knows its parameters and emits (ops, initial state,
# biased flags) for a state area starting at `so`.


def _check(v, what):
    if not -LIMIT < v < LIMIT:
        raise ValueError("%s %d is outside +-%d units: use a coarser scale" % (what, v, LIMIT))
    return v


def _count(n, what):
    """A count kept in the state array: positive and below BIAS, which is
    what Stage.load takes back from a snapshot (array("i") would overflow,
    or wrap on the VM, past 2**31)."""
    if not 0 < n < BIAS:
        raise ValueError("%s %d is outside 1..%d" % (what, n, BIAS - 1))
    return n


class Offset:
    def __init__(self, offset):
        self.offset = _check(offset, "offset")

    def emit(self, so):
        return [_OFFSET, self.offset + BIAS], [], []


class Clamp:
    def __init__(self, lo, hi, drop):
        self.lo = max(lo, -LIMIT + 1)
        self.hi = min(hi, LIMIT - 1)
        self.drop = drop

    def emit(self, so):
        return [_CLAMP, self.lo + BIAS, self.hi + BIAS, 1 if self.drop else 0], [], []


class Delta:
    def __init__(self, delta):
        self.delta = _check(delta, "delta")

    def emit(self, so):
        return [_DELTA, self.delta, so], [0, 0], [False, True]


class EMA:
    def __init__(self, alpha, send_every, send_first_at):
        # alpha = a / 2**shift with a in [128, 256]: precise, and the product
        # (difference << 3) * a stays within 31 bits
        shift = 8
        while alpha * (1 << shift) < 128 and shift < 24:
            shift += 1
        self.a = max(1, int(round(alpha * (1 << shift))))
        self.shift = shift
        self.every = _count(send_every, "send_every")
        self.first = _count(send_first_at, "send_first_at")
        if send_first_at > send_every:  # the state holds every - first, >= 0
            raise ValueError("send_first_at %d exceeds send_every %d" % (send_first_at, send_every))

    def emit(self, so):
        return ([_EMA, self.a, self.shift, self.every, so],
                [0, 0, self.every - self.first], [False, True, False])


class Window:
    def __init__(self, kind, size, send_every, send_first_at, quantile=0):
        self.kind = kind
        self.size = size
        self.every = _count(send_every, "send_every")
        self.first = _count(send_first_at, "send_first_at")
        if send_first_at > send_every:  # the state holds every - first, >= 0
            raise ValueError("send_first_at %d exceeds send_every %d" % (send_first_at, send_every))
        self.q = quantile

    def emit(self, so):
        n = self.size
        return ([_WINDOW, self.kind, n, self.every, self.q, so],
                [self.every - self.first, 0, 0, 0] + [0] * (2 * n),
                [False, True, False, False] + [True] * (2 * n))


class SkipInitial:
    def __init__(self, n):
        self.n = _count(n, "skip_initial")

    def emit(self, so):
        return [_SKIP, so], [self.n], [False]


class FilterOut:
    def __init__(self, values):
        self.values = [_check(v, "filter_out value") for v in values]

    def emit(self, so):
        return [_OUT, len(self.values)] + [v + BIAS for v in self.values], [], []


class Round:
    def __init__(self, step):
        self.step = step

    def emit(self, so):
        return [_ROUND, self.step], [], []


class Hampel:
    def __init__(self, size, n_sigmas, replace):
        self.size = size
        self.k = int(round(n_sigmas * 1.4826 * 128))
        self.replace = replace

    def emit(self, so):
        n = self.size
        return ([_HAMPEL, n, self.k, 1 if self.replace else 0, so],
                [0, 0] + [0] * (2 * n), [False, False] + [True] * (2 * n))
