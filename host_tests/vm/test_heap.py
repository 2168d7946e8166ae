# VM only (heap_lock exists only there): the common filter chain allocates
# nothing per sample in steady state.
import micropython

import filters

COMMON = [{"median": {"window_size": 5, "send_every": 1}},
          {"exponential_moving_average": {"alpha": 0.2, "send_every": 1}},
          {"clamp": {"min_value": -40, "max_value": 85}},
          {"delta": 0.1}]


def samples():
    # a noisy signal with spikes, steps and out-of-range values: every path runs
    out = []
    for i in range(500):
        v = 2000 + (i * 37) % 50 - 25
        if i % 50 == 7:
            v = 9900  # spike above the clamp
        if i >= 250:
            v -= 7000  # below the clamp
        out.append(v)
    return out


def runs_without_allocating(chain, values):
    for v in values[:20]:  # warm up: windows full, first values seen
        chain.push(v, 0)
    micropython.heap_lock()
    try:
        for v in values:
            chain.push(v, 0)
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok


def test_common_chain_allocates_nothing_per_sample():
    c = filters.build_chain("t", {"scale": 100, "filters": COMMON})
    values = samples()
    assert runs_without_allocating(c, values)
    assert c.drops[filters.DELTA] > 0  # the drop path ran under the lock too
    assert c.push(9900, 0) is None or c.flags & filters.CLAMPED


def test_the_check_catches_a_chain_that_allocates():
    # multiply by a float allocates a float per sample on the ESP32 and here
    c = filters.build_chain("t", {"scale": 100, "filters": COMMON + [{"multiply": 1.5}]})
    assert not runs_without_allocating(c, samples())
