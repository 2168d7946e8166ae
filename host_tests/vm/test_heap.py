# VM only (heap_lock exists only there): the common filter chain allocates
# nothing per sample in steady state.
import micropython

import filterconf
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
    c = filterconf.build_chain("t", {"scale": 100, "filters": COMMON})
    values = samples()
    assert runs_without_allocating(c, values)
    assert c.drops[filters.DELTA] > 0  # the drop path ran under the lock too
    # a step far above the clamp (85 degC = 8500): the sent values climb through
    # median and EMA and stop at exactly 8500, the one value flagged CLAMPED;
    # the repeats of 8500 after it are dropped by delta
    sent = []
    for _ in range(30):
        v = c.push(9900, 0)
        if v is not None:
            sent.append((v, c.flags & filters.CLAMPED))
    assert sent[-1] == (8500, filters.CLAMPED)
    assert [x for x in sent if x[0] >= 8500 or x[1]] == [(8500, filters.CLAMPED)]
    assert c.push(9900, 0) is None and c.reason == filters.DELTA


def test_the_check_catches_a_chain_that_allocates():
    # multiply by a float allocates a float per sample on the ESP32 and here
    c = filterconf.build_chain("t", {"scale": 100, "filters": COMMON + [{"multiply": 1.5}]})
    assert not runs_without_allocating(c, samples())


# ---------------------------------------------------------------- uplink.encoder
def allocated(fn):
    import gc

    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    fn()
    used = gc.mem_alloc() - before
    gc.enable()
    return used


def test_streaming_encoder_allocates_a_fraction_of_the_generic_one():
    import cose
    import senml
    import uplink

    class Stamps:
        def senml_time(self, stamp, seq=None):
            return stamp

    class Counter:
        def next(self):
            return 1001

    ch = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)]
    recs = []
    for k in range(60):
        i = k // 3
        recs.append((k, 1767225600 + 300 * i, uplink.pack_reading(k % 3, (2153 + i, 4512 - i, 100325 + i)[k % 3])))
    enc = uplink.encoder("p-a1b2c3", ch, bytes(range(32)), Counter(), Stamps())
    msg = enc(recs)  # the first batch makes the buffer, kept for the next ones

    def generic():
        p = senml.Pack("p-a1b2c3/", ch)
        for s, t, payload in recs:
            c, v, f = uplink.unpack_reading(payload)
            p.add(c, v, t, f, s)
        assert cose.mac0(bytes(range(32)), b"p-a1b2c3", 1001, p.cbor()) == msg

    stream = allocated(lambda: enc(recs))
    assert stream * 3 < allocated(generic), stream
    # what stays: the buffer (about 21 bytes a reading at most) and nothing per batch
    buf = enc.buf
    enc(recs)
    assert enc.buf is buf and len(buf) < 21 * 60 + 200
