# lib/uplink.drain and encoder without a network: a client that confirms what
# it is told to, so the outbox bookkeeping is what is tested.
import machine

import clock
import outbox
import rtcmem
import seqcounter
import uplink
from ptest import raises, scratch_dir

CHANNELS = [("t", "Cel", 100), ("h", "%RH", 100)]


class Client:
    window = 4

    def __init__(self, confirm=True, fail_after=None):
        self.acked = []
        self.sent = []
        self.confirm = confirm
        self.fail_after = fail_after
        self.pid = 0

    def publish(self, topic, msg, qos=0):
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise OSError(104)  # the link dropped
        self.pid += 1
        self.sent.append(msg)
        if self.confirm:
            self.acked.append(self.pid)
        return self.pid

    def wait_all(self):
        if not self.confirm:
            raise OSError(110)


def setup(n):
    path, flash = scratch_dir()
    rtc = machine.RTC()
    clk = clock.Clock(1764000000, rtcmem.Region(rtc, 1280, 64))
    ob = outbox.Outbox(path + "/ob")
    seq = seqcounter.SeqCounter(path + "/seq", rtcmem.Region(rtc, 1344, 64))
    for i in range(n):
        ob.append(uplink.pack_reading(i % 2, 2000 + i), clk.stamp())
    return ob, uplink.encoder("p-a1b2c3", CHANNELS, b"k" * 32, seq, clk), clk


def test_everything_confirmed_is_acknowledged():
    ob, enc, clk = setup(20)
    c = Client()
    assert uplink.drain(c, ob, "t", enc, batch=6) == 20
    assert len(ob) == 0 and len(c.sent) == 4


def test_unconfirmed_batches_stay_in_the_outbox():
    ob, enc, clk = setup(20)
    raises(OSError, uplink.drain, Client(confirm=False), ob, "t", enc, 6)
    assert len(ob) == 20
    c = Client(fail_after=2)  # two batches confirmed, then the link drops
    raises(OSError, uplink.drain, c, ob, "t", enc, 6)
    assert len(ob) == 8


def test_a_record_that_cannot_be_encoded_does_not_block_the_queue():
    ob, enc, clk = setup(6)
    ob.append(uplink.pack_reading(7, 1), clk.stamp())  # a channel this configuration lacks
    ob.append(b"\x01", clk.stamp())  # a damaged payload
    for i in range(4):
        ob.append(uplink.pack_reading(0, 3000 + i), clk.stamp())
    c = Client()
    assert uplink.drain(c, ob, "t", enc, batch=6) == 12
    assert len(ob) == 0 and enc.rejected == 2
    ob.append(uplink.pack_reading(9, 1), clk.stamp())  # a batch with nothing sendable
    assert uplink.drain(c, ob, "t", enc, batch=6) == 1
    assert len(ob) == 0 and enc.rejected == 3


# ---------------------------------------------------------------- the streaming encoder
import cose  # noqa: E402
import senml  # noqa: E402

KEY = bytes(range(32))
DEV = "p-a1b2c3"
CH3 = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1), ("x", "Cel", 1024)]


class Stamps:
    """A clock whose stamps are already SenML times (Unix, or negative ages)."""

    def senml_time(self, stamp):
        return stamp


class Counter:
    def __init__(self, n=1000):
        self.n = n

    def next(self):
        self.n += 1
        return self.n


def generic(records, channels, seq, relative, tag=cose.HMAC_256_256):
    """What the node sent before the streaming encoder: senml.Pack + cose.mac0."""
    p = senml.Pack(DEV + "/", channels)
    for _, t, payload in records:
        ch, v, _ = uplink.unpack_reading(payload)
        if ch < len(channels):
            p.add(ch, v, t)
    data = p.cbor(now=0) if relative else p.cbor()
    return cose.mac0(KEY, DEV.encode(), seq, data, tag)


def lcg(seed):
    state = [seed]

    def rnd(n):
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return state[0] % n
    return rnd


def batch(rnd, n, relative):
    """n readings, channels interleaved or not, times not quite in order
    (distinct within a channel), values of every width and sign."""
    t0 = -86400 if relative else 1767225600
    recs = []
    for k in range(n):
        ch = rnd(len(CH3)) if rnd(2) else k % 3
        v = (rnd(2 ** 31) - 2 ** 30) >> rnd(31)
        if rnd(4) == 0:
            v = v // 100 * 100  # an exact int after scaling
        recs.append((k, t0 + 300 * k - 7 * rnd(3) + ch, uplink.pack_reading(ch, v)))
    return recs


def test_streaming_encoder_is_byte_for_byte_the_generic_one():
    rnd = lcg(7)
    for case in range(60):
        relative = case % 3 == 0
        recs = batch(rnd, 1 + rnd(60), relative)
        enc = uplink.encoder(DEV, CH3, KEY, Counter(case), Stamps())
        for round_ in range(2):  # the kept buffer gives the same bytes again
            msg = enc(recs)
            assert msg == generic(recs, CH3, case + 1 + round_, relative), (case, round_)
            assert isinstance(msg, bytes)
    # the short tag too
    recs = batch(rnd, 36, False)
    enc = uplink.encoder(DEV, CH3, KEY, Counter(), Stamps(), tag=cose.HMAC_256_64)
    assert enc(recs) == generic(recs, CH3, 1001, False, cose.HMAC_256_64)


def test_streaming_encoder_output_reads_back_and_verifies():
    recs = [(s, 1767225600 + 300 * (s // 3), uplink.pack_reading(s % 3, [2153, 4512, 100325][s % 3] + s))
            for s in range(60)]
    msg = uplink.encoder(DEV, CH3, KEY, Counter(), Stamps())(recs)
    kid, seq, payload = cose.verify(KEY, msg)
    assert (kid, seq) == (DEV.encode(), 1001)
    got = senml.decode_cbor(payload)
    assert len(got) == 60 and got[0][:2] == (DEV + "/t", "Cel") and got[0][3] == 1767225600
    assert round(got[0][2] * 100) == 2153
    assert [r[0][-1] for r in got] == ["t"] * 20 + ["h"] * 20 + ["p"] * 20
    assert round(got[1][2] * 100) == 2156 and got[40][2] == 100327 and got[59][3] == 1767225600 + 300 * 19
    # 60 readings of 3 channels: about 11 bytes each with everything
    assert len(msg) < 12 * 60 + 100, len(msg)


def test_streaming_encoder_leaves_out_what_it_cannot_encode():
    enc = uplink.encoder(DEV, CH3[:2], KEY, Counter(), Stamps())
    recs = [(1, 1767225600, uplink.pack_reading(0, 1)), (2, 1767225601, uplink.pack_reading(5, 1)),
            (3, 1767225602, b"\x00"), (4, 1767225603, uplink.pack_reading(1, 2))]
    assert enc(recs) == generic([recs[0], recs[3]], CH3[:2], 1001, False)
    assert enc.rejected == 2
    assert enc(recs[1:3]) is None and enc.rejected == 4
    assert enc.counter.n == 1001  # no sequence number spent on nothing


def test_streaming_encoder_refuses_bad_times_and_names():
    enc = uplink.encoder(DEV, CH3, KEY, Counter(), Stamps())
    # Unix time and an age in one batch (drain's kind= keeps them apart)
    raises(ValueError, enc, [(1, -60, uplink.pack_reading(0, 1)), (2, 1767225600, uplink.pack_reading(0, 1))])
    raises(ValueError, enc, [(1, 1767225600, uplink.pack_reading(0, 1)), (2, -60, uplink.pack_reading(0, 1))])
    raises(ValueError, uplink.encoder(DEV, [("t!", "Cel", 1)], KEY, Counter(), Stamps()),
           [(1, 1767225600, uplink.pack_reading(0, 1))])
    raises(ValueError, uplink.encoder(DEV, [("t", "Cel", 0)], KEY, Counter(), Stamps()),
           [(1, 1767225600, uplink.pack_reading(0, 1))])
