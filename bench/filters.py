"""The common filter chain (median 5 -> EMA 0.2 -> clamp -> delta 0.1) on the
MicroPython VM: samples per second and bytes allocated per sample, for
lib/filters and for a plain list-based implementation of the same chain (one
object per filter, list windows with sorted(), float values), measured in the
same run (best of several rounds, interleaved; GC disabled while timing, so
the list version's allocations cost it nothing here that they would cost on a
board: see bytes/sample).

    make bench-filters      (MICROPYPATH=.frozen:lib micropython bench/filters.py)
"""

import gc
import sys
import time  # the VM's own clock: this script runs without the simulated board

sys.path.pop(0)  # the script's own folder: this file is named like lib/filters.py, which filterconf imports
import filterconf  # noqa: E402

N = 2000
ROUNDS = 5
COMMON = [{"median": {"window_size": 5, "send_every": 1}},
          {"exponential_moving_average": {"alpha": 0.2, "send_every": 1}},
          {"clamp": {"min_value": -40, "max_value": 85}},
          {"delta": 0.1}]


class ListMedian:
    def __init__(self, size):
        self.win = []
        self.size = size

    def push(self, x):
        self.win.append(x)
        if len(self.win) > self.size:
            self.win.pop(0)
        s = sorted(self.win)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class ListEMA:
    def __init__(self, alpha):
        self.alpha = alpha
        self.acc = None

    def push(self, x):
        self.acc = x if self.acc is None else self.acc + self.alpha * (x - self.acc)
        return self.acc


class ListClamp:
    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def push(self, x):
        return min(max(x, self.lo), self.hi)


class ListDelta:
    def __init__(self, delta):
        self.delta = delta
        self.last = None

    def push(self, x):
        if self.last is not None and abs(x - self.last) < self.delta:
            return None
        self.last = x
        return x


class ListChain:
    """The same chain built the usual way: one object per filter, list windows
    with sorted(), float values."""

    def __init__(self):
        self.filters = [ListMedian(5), ListEMA(0.2), ListClamp(-40.0, 85.0), ListDelta(0.1)]

    def push(self, x):
        for f in self.filters:
            x = f.push(x)
            if x is None:
                return None
        return x


def signal():
    out = []
    for i in range(N):
        v = 2000 + (i * 37) % 50 - 25 + (i // 200) * 30
        if i % 50 == 7:
            v = 9900
        out.append(v)
    return out


def measure(push, values):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    for v in values:
        push(v)
    us = time.ticks_diff(time.ticks_us(), t0)
    allocated = gc.mem_alloc() - before
    gc.enable()
    return N * 1000000 // max(us, 1), allocated / N


def main():
    ints = signal()
    floats = [v / 100 for v in ints]
    best = {"filters": (0, 0), "list": (0, 0)}
    for _ in range(ROUNDS):
        c = filterconf.build_chain("t", {"scale": 100, "filters": COMMON})
        rate, per = measure(c.push, ints)  # now defaults to 0: no time-based filter here
        if rate > best["filters"][0]:
            best["filters"] = (rate, per)
        lc = ListChain()
        rate, per = measure(lc.push, floats)
        if rate > best["list"][0]:
            best["list"] = (rate, per)
    print("filters bench: common chain, %d samples x %d rounds (best), %s"
          % (N, ROUNDS, sys.version.split(";")[0]))
    print("%-22s %12s %16s" % ("implementation", "samples/s", "bytes/sample"))
    for name, label in (("filters", "lib/filters (ints)"), ("list", "list + floats")):
        rate, per = best[name]
        print("%-22s %12d %16.1f" % (label, rate, per))
    print("speed ratio: %.2fx" % (best["filters"][0] / best["list"][0]))


main()
