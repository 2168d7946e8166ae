"""The common filter chain (median 5 -> EMA 0.2 -> clamp -> delta 0.1) on the
MicroPython VM: lib/filters (built by filterconf) against a fair baseline, the
same chain written as plain idiomatic Python on integers, one object per filter.

    make bench-filters      (MICROPYPATH=.frozen:lib micropython bench/filters.py)

Before any timing both chains run over the same sensor-like input (drift, noise,
spikes, steps below zero and above the clamp) and must emit the same values at
the same samples; the bench exits 1 if they do not. lib/filters computes the
EMA in fixed point (alpha = 205/1024, the accumulator in 1/8 units, rounded
(acc + 4) >> 3: lib/filterprog.py's EMA), so the baseline's EMA does that
arithmetic too; its median, clamp and delta are what one would write anyway.

Printed: samples/s, best of ROUNDS rounds taken in turn (GC disabled while
timing); allocation after a warm-up, under micropython.heap_lock() (a
MemoryError there means the chain allocates per sample) and as the exact
gc.mem_alloc() delta in bytes over N samples; and the share of a sample wake's
VM time that the filter chains take: app.cycle.Wake.run() on the simulated
board (esp32-node's channels, each with a chain, no uplink due) timed on the
VM's own clock, against the same chains' pushes and their RTC keeping.
"""

import gc
import sys
import time  # the VM's own clock (the simulated board, loaded later, brings its own)

import micropython

sys.path.pop(0)  # the script's own folder: this file is named like lib/filters.py, which filterconf imports
import filterconf  # noqa: E402

N = 4000
ROUNDS = 7
WARMUP = 200  # pushes before allocation is measured: a new chain allocates on its first ones
WAKES = 40  # sample wakes timed (after WAKE_WARMUP untimed ones)
WAKE_WARMUP = 5
SCALE = 100
COMMON = [{"median": {"window_size": 5, "send_every": 1}},
          {"exponential_moving_average": {"alpha": 0.2, "send_every": 1}},
          {"clamp": {"min_value": -40, "max_value": 85}},
          {"delta": 0.1}]


# ------------------------------------------------------------ the baseline
class Median:
    def __init__(self, size):
        self.window = []
        self.size = size

    def push(self, x):
        w = self.window
        w.append(x)
        if len(w) > self.size:
            w.pop(0)
        s = sorted(w)
        h = len(s) // 2
        return s[h] if len(s) % 2 else (s[h - 1] + s[h]) // 2


class EMA:
    """Fixed point as lib/filterprog: alpha = a / 2**shift with a in 128..256,
    the accumulator in 1/8 units."""

    def __init__(self, alpha):
        shift = 8
        while alpha * (1 << shift) < 128:
            shift += 1
        self.a = int(round(alpha * (1 << shift)))
        self.shift = shift
        self.acc = None

    def push(self, x):
        if self.acc is None:
            self.acc = x << 3
        else:
            self.acc += ((x << 3) - self.acc) * self.a >> self.shift
        return (self.acc + 4) >> 3


class Clamp:
    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def push(self, x):
        return min(max(x, self.lo), self.hi)


class Delta:
    def __init__(self, delta):
        self.delta = delta
        self.last = None

    def push(self, x):
        if self.last is not None and abs(x - self.last) < self.delta:
            return None
        self.last = x
        return x


class PlainChain:
    def __init__(self):
        self.filters = [Median(5), EMA(0.2), Clamp(-40 * SCALE, 85 * SCALE), Delta(SCALE // 10)]

    def push(self, x):
        for f in self.filters:
            x = f.push(x)
            if x is None:
                return None
        return x


def lib_chain():
    return filterconf.build_chain("t", {"scale": SCALE, "filters": COMMON})


# ------------------------------------------------------------ input
def signal(n):
    """A temperature sensor in 1/100 degC: slow drift, noise of a few tenths,
    single-sample spikes (a bad read), and steps: to -5 degC and to 87 degC
    (beyond the clamp) and back. Deterministic (an LCG)."""
    out = []
    seed = 12345
    base = 2150
    for i in range(n):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        noise = (seed >> 8) % 81 - 40
        phase = (i // 500) % 8
        level = (2150, 2600, -500, 2300, 8700, 2150, 1800, 3100)[phase]
        base += (level - base) // 8  # a step reached over a few samples, as a sensor's response
        drift = (i % 400) - 200 if i % 800 < 400 else 200 - (i % 400)
        v = base + drift // 4 + noise
        if seed % 97 == 0:
            v = 9900 + noise  # a bad read
        out.append(v)
    return out


def outputs(push, values):
    return [push(v) for v in values]


# ------------------------------------------------------------ measures
def rate(push, values):
    gc.collect()
    gc.disable()
    t0 = time.ticks_us()
    for v in values:
        push(v)
    us = time.ticks_diff(time.ticks_us(), t0)
    gc.enable()
    return len(values) * 1000000 // max(us, 1)


def allocation(make, values):
    """-> (bytes allocated over the first WARMUP pushes of a new chain,
    bytes over len(values) pushes after them, whether those ran under heap_lock)."""
    first = values[:WARMUP]  # sliced before measuring: the slice is a new list
    push = make().push
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for v in first:
        push(v)
    cold = gc.mem_alloc() - before
    before = gc.mem_alloc()
    for v in values:
        push(v)
    warm = gc.mem_alloc() - before
    gc.enable()
    push = make().push
    for v in first:
        push(v)
    locked = True
    micropython.heap_lock()
    try:
        for v in values:
            push(v)
    except MemoryError:
        locked = False
    finally:
        micropython.heap_unlock()
    return cold, warm, locked


# ------------------------------------------------------------ a sample wake
def wake_share(values):
    """-> (wakes timed, mean us per wake, us of chain pushes per wake, us of
    the wake's chain restore + keep (RTC region included) per wake, us of
    the chains' own snapshot() + restore() per wake, channels with a chain)."""
    import json

    sys.path[:0] = ["boards/sim", "firmware"]  # the simulated board: its machine and time for the node's code
    import simstate
    import vfs

    from norflash import NorFlash

    simstate.reset_world()
    import eventlog
    import machine
    from simdev.sht4x import SHT4xModel

    from app import config, cycle, hardware, state

    with open("boards/esp32-node.json") as f:
        hw_desc = json.load(f)["hardware"]
    channels = [{"name": "t", "sensor": "sht4x.t", "scale": 100, "unit": "Cel", "filters": COMMON},
                {"name": "rh", "sensor": "sht4x.rh", "scale": 10, "unit": "%RH",
                 "filters": [COMMON[0], COMMON[1], {"clamp": {"min_value": 0, "max_value": 100}},
                             COMMON[3]]},
                {"name": "bat", "sensor": "battery.v", "scale": 1000, "unit": "V",
                 "filters": [COMMON[0], COMMON[1], {"clamp": {"min_value": 0, "max_value": 5}},
                             {"delta": 0.01}]}]
    cfg = config.check({"channels": channels, "sample_s": 300, "uplink_every": 1000})
    sht = SHT4xModel()
    simstate.board.i2c[0] = {0x44: sht}
    simstate.board.analog[35] = 1505000  # 3.01 V behind the 2:1 divider
    hw = hardware.Hardware(hw_desc)
    dev = NorFlash(64)  # littlefs on the NOR flash model, as the node's data partition
    vfs.VfsLfs2.mkfs(dev.block_device())
    vfs.mount(vfs.VfsLfs2(dev.block_device()), "/benchflash")
    import os

    cwd = os.getcwd()
    os.chdir("/benchflash")
    eventlog.print = lambda line: None  # the wake's log lines: a UART write on the chip, not measured here
    total = 0
    w = None
    try:
        for k in range(WAKE_WARMUP + WAKES):
            sht.temperature_c = values[k] / 100
            sht.humidity = 45.0 + (values[k] % 200) / 20
            gc.collect()
            t0 = time.ticks_us()
            st = state.State()
            w = cycle.Wake(st, cfg, hw, "deepsleep", "timer", 0)
            ms = w.run()
            st.save()
            us = time.ticks_diff(time.ticks_us(), t0)
            if k >= WAKE_WARMUP:
                total += us
            try:
                machine.deepsleep(ms)
            except simstate.Halt as h:
                simstate.board.after_halt(h)
        # the filter work of one wake, on the last wake's chains: restore, a
        # push (and tick) per channel, keep; many times over, for the clock's resolution
        reps = 500
        chains = w.chains
        gc.collect()
        t0 = time.ticks_us()
        for r in range(reps):
            for ch in chains:
                if ch.push(values[r] // 10 + 200, 0) is None:
                    ch.tick(0)
        pushes = time.ticks_diff(time.ticks_us(), t0) / reps
        t0 = time.ticks_us()
        for _ in range(reps):
            w._restore_chains()
            w._keep_chains()
        keeping = time.ticks_diff(time.ticks_us(), t0) / reps
        t0 = time.ticks_us()
        for _ in range(reps):
            for ch in chains:
                ch.restore(ch.snapshot())
        snapshots = time.ticks_diff(time.ticks_us(), t0) / reps
    finally:
        del eventlog.print
        os.chdir(cwd)
        vfs.umount("/benchflash")
    return WAKES, total / WAKES, pushes, keeping, snapshots, len(chains)


def main():
    values = signal(N)
    lib_out = outputs(lib_chain().push, values)
    plain_out = outputs(PlainChain().push, values)
    sent = sum(1 for v in lib_out if v is not None)
    print("filters bench: the common chain on %s (MicroPython %s), N=%d samples, %d interleaved rounds"
          % (sys.platform, ".".join(str(x) for x in sys.implementation.version[:3]), N, ROUNDS))
    if lib_out != plain_out:
        for i in range(N):
            if lib_out[i] != plain_out[i]:
                break
        print("FAIL: the chains differ: sample %d (input %d): lib/filters %s, baseline %s; sent %d and %d"
              % (i, values[i], lib_out[i], plain_out[i], sent, sum(1 for v in plain_out if v is not None)))
        sys.exit(1)
    print("same output checked: both chains send the same %d of %d values, at the same samples"
          % (sent, N))

    best = {"lib": 0, "plain": 0}
    for _ in range(ROUNDS):
        best["lib"] = max(best["lib"], rate(lib_chain().push, values))
        best["plain"] = max(best["plain"], rate(PlainChain().push, values))
    alloc = {"lib": allocation(lib_chain, values), "plain": allocation(PlainChain, values)}

    print("%-34s %10s %16s %18s %14s" % ("implementation", "samples/s", "new chain: bytes",
                                         "warm: bytes/%d" % N, "heap_lock"))
    for name, label in (("lib", "lib/filters (compiled int stage)"),
                        ("plain", "plain Python ints, object/filter")):
        cold, warm, locked = alloc[name]
        print("%-34s %10d %16s %18s %14s" % (label, best[name], "%d/%d" % (cold, WARMUP), warm,
                                            "no allocation" if locked else "MemoryError"))
    ratio = best["lib"] / best["plain"]
    print("speed ratio (best of %d rounds): %.2fx" % (ROUNDS, ratio))

    wakes, wake_us, push_us, keep_us, snap_us, nch = wake_share(values)
    print("sample wake (app.cycle.Wake.run on the simulated board, %d channels each with a chain, no uplink, "
          "boot and imports excluded): %.0f us of VM time, mean of %d wakes" % (nch, wake_us, wakes))
    print("filter chains per wake: pushes %.1f us (%.1f%% of the wake); their state kept across sleep "
          "(Wake._restore_chains + _keep_chains) %.1f us (%.1f%%), of which the chains' snapshot() + "
          "restore() %.1f us (%.1f%%); in all %.1f%%"
          % (push_us, 100 * push_us / wake_us, keep_us, 100 * keep_us / wake_us, snap_us,
             100 * snap_us / wake_us, 100 * (push_us + keep_us) / wake_us))


main()
