# lib/uplink.drain and encoder without a network: a client that confirms what
# it is told to, so the outbox bookkeeping is what is tested; the encoder
# against senml.Pack (the format's reference) and read back by senml.resolve.
import cbor
import cose
import outbox
import senml
import uplink
from ptest import raises, scratch_dir

CHANNELS = [("t", "Cel", 100), ("h", "%RH", 100)]
KEY = bytes(range(32))
DEV = "p-a1b2c3"
CH3 = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1), ("x", "Cel", 1024)]
T0 = 1767225600


class Clock:
    """clock.Clock's senml_time(stamp, seq) contract: here an outbox stamp is
    already the SenML time (Unix seconds, or minus an age); the readings whose
    sequence numbers are in `undated` cannot be dated (None). With now: a
    stamp below 2**28 is seconds on the node's clock, sent as minus its age."""

    def __init__(self, undated=(), now=None):
        self.undated = undated
        self.now = now

    def senml_time(self, stamp, seq=None):
        if seq in self.undated:
            return None
        return stamp - self.now if self.now is not None and stamp < senml.RELATIVE else stamp


class Counter:
    def __init__(self, n=1000):
        self.n = n

    def next(self):
        self.n += 1
        return self.n


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


def setup(n, clk=None):
    path, flash = scratch_dir()
    ob = outbox.Outbox(path + "/ob")
    clk = clk or Clock()
    for i in range(n):
        ob.append(uplink.pack_reading(i % 2, 2000 + i), T0 + 60 * i)
    return ob, uplink.encoder(DEV, CHANNELS, KEY, Counter(), clk), clk


def readings(msg):
    kid, seq, payload = cose.verify(KEY, msg)
    assert kid == DEV.encode()
    return senml.decode_cbor(payload)


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
    ob.append(uplink.pack_reading(7, 1), T0)  # a channel this configuration lacks
    ob.append(b"\x01", T0)  # a damaged payload
    for i in range(4):
        ob.append(uplink.pack_reading(0, 3000 + i), T0 + i)
    c = Client()
    assert uplink.drain(c, ob, "t", enc, batch=6) == 12
    assert len(ob) == 0 and enc.rejected == 2
    ob.append(uplink.pack_reading(9, 1), T0)  # a batch with nothing sendable
    assert uplink.drain(c, ob, "t", enc, batch=6) == 1
    assert len(ob) == 0 and enc.rejected == 3


def test_drain_never_mixes_time_kinds_and_every_reading_arrives_once():
    path, flash = scratch_dir()
    ob = outbox.Outbox(path + "/ob")
    stamps = [T0, T0 + 60, 9500, 9600, 1000, 1100, T0 + 300, 9700]  # the 5th and 6th: undated
    seqs = [ob.append(uplink.pack_reading(0, 2000 + i), stamps[i]) for i in range(len(stamps))]
    clk = Clock(undated=(seqs[4], seqs[5]), now=10000)
    enc = uplink.encoder(DEV, CHANNELS, KEY, Counter(), clk)
    c = Client()
    assert uplink.drain(c, ob, "t", enc, batch=6, kind=uplink.time_kind(clk)) == 8
    got = [readings(m) for m in c.sent]
    kinds = [[senml.kind(r[3]) for r in g] for g in got]
    assert kinds == [["dated", "dated"], ["relative", "relative"], ["undated", "undated"], ["dated"],
                     ["relative"]]
    ids = [r[5] for g in got for r in g]
    assert ids == seqs
    assert [r[3] for g in got for r in g] == [T0, T0 + 60, -500, -400, None, None, T0 + 300, -300]
    assert uplink.time_kind(clk)((seqs[4], 1000, b"")) == "undated"
    assert uplink.time_kind(clk)((seqs[0], T0, b"")) == "dated"
    assert uplink.time_kind(clk)((seqs[2], 9500, b"")) == "relative"


# ---------------------------------------------------------------- the streaming encoder
def generic(records, channels, seq, tag=cose.HMAC_256_256, layout="compact", clk=None):
    """The format's reference: senml.Pack + cose.mac0."""
    clk = clk or Clock()
    p = senml.Pack(DEV + "/", channels)
    for s, t, payload in records:
        ch, v, f = uplink.unpack_reading(payload)
        if ch < len(channels):
            p.add(ch, v, clk.senml_time(t, s), f, s)
    return cose.mac0(KEY, DEV.encode(), seq, p.cbor(layout), tag)


def lcg(seed):
    state = [seed]

    def rnd(n):
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return state[0] % n
    return rnd


def batch(rnd, n, kind):
    """n readings, channels interleaved or not, times not quite in order
    (distinct within a channel), values of every width and sign, flags,
    sequence numbers with gaps and steps of every size."""
    t0 = {"dated": T0, "relative": -86400, "undated": None}[kind]
    recs = []
    s = rnd(2 ** 20) if rnd(2) else 2 ** 32 + rnd(99)
    for k in range(n):
        ch = rnd(len(CH3)) if rnd(2) else k % 3
        v = (rnd(2 ** 31) - 2 ** 30) >> rnd(31)
        if rnd(4) == 0:
            v = v // 100 * 100  # an exact int after scaling
        if rnd(5) == 0:
            v = -2 ** 31 if rnd(2) else 2 ** 31 - 1
        t = None if t0 is None else t0 + 300 * k - 7 * rnd(3) + ch
        s += 1 if rnd(3) else (rnd(300) if rnd(2) else 1 + rnd(3))
        recs.append((s, t, uplink.pack_reading(ch, v, rnd(8) if rnd(3) == 0 else 0)))
    return recs


def test_streaming_encoder_is_byte_for_byte_the_reference():
    rnd = lcg(7)
    for case in range(60):
        kind = ("dated", "relative", "undated")[case % 3]
        layout = ("compact", "named")[case // 3 % 2]
        recs = batch(rnd, 1 + rnd(60), kind)
        enc = uplink.encoder(DEV, CH3, KEY, Counter(case), Clock(), layout=layout)
        for round_ in range(2):  # the kept buffer gives the same bytes again
            msg = enc(recs)
            assert msg == generic(recs, CH3, case + 1 + round_, layout=layout), (case, round_)
            assert isinstance(msg, bytes)
    recs = batch(rnd, 36, "dated")  # the short tag too
    enc = uplink.encoder(DEV, CH3, KEY, Counter(), Clock(), tag=cose.HMAC_256_64)
    assert enc(recs) == generic(recs, CH3, 1001, cose.HMAC_256_64)


def test_the_kept_buffer_is_exactly_what_the_largest_batch_needed():
    rnd = lcg(3)
    enc = uplink.encoder(DEV, CH3, KEY, Counter(), Clock())
    big = batch(rnd, 60, "dated")
    msg = enc(big)
    payload = cose.verify(KEY, msg)[2]
    assert len(enc.buf) == cose.room(DEV.encode()) + len(payload) + cose.TAIL
    buf = enc.buf
    enc(batch(rnd, 20, "undated"))
    assert enc.buf is buf  # a smaller batch in the same buffer


def test_values_arrive_exact():
    scales = (1, 2, 4, 5, 8, 10, 16, 20, 25, 100, 1000, 1024, 8192, 5 ** 10)
    chans = [("c%d" % j, "Cel", s) for j, s in enumerate(scales)]
    values = [0, 1, -1, 5, 2153, 2150, 2100, -2153, 45, 101325, 46081, 2 ** 31 - 1, -2 ** 31, 999999]
    recs = []
    for j in range(len(scales)):
        for v in values:
            recs.append((len(recs) + 1, T0 + len(recs), uplink.pack_reading(j, v)))
    enc = uplink.encoder(DEV, chans, KEY, Counter(), Clock())
    out = readings(enc(recs))
    k = 0
    for scale in scales:
        for v in values:
            got = out[k][2]
            k += 1
            if v % scale == 0:
                assert got == v // scale and isinstance(got, int), (v, scale, got)
            else:
                assert isinstance(got, senml.Dec) and got.m % 10 != 0, (v, scale, got)
                # got.m * 10**got.e == v / scale, in integers
                assert got.e < 0 and got.m * scale == v * 10 ** -got.e, (v, scale, got)
    # the format's own examples, byte for byte
    enc = uplink.encoder(DEV, [("t", "Cel", 100)], KEY, Counter(), Clock())
    for v, want in ((2153, "c482211908 69"), (2150, "c4822018d7"), (2100, "15"), (-5, "c4822124")):
        payload = cose.verify(KEY, enc([(1, T0, uplink.pack_reading(0, v))]))[2]
        want = bytes.fromhex(want.replace(" ", ""))
        assert payload.startswith(b"\x81\xa5\x02" + want), (v, payload)


def test_scales_must_give_finite_decimals():
    assert [uplink.scale_digits(s) for s in (1, 2, 4, 5, 10, 16, 25, 100, 1000, 1024, 8192)] == \
        [0, 1, 2, 1, 1, 4, 2, 2, 3, 10, 13]
    for bad in (3, 6, 7, 12, 100 * 3, 2 ** 14, 0, -10, 2.5, True, "10"):
        raises(ValueError, uplink.scale_digits, bad)
    enc = uplink.encoder(DEV, [("t", "Cel", 3)], KEY, Counter(), Clock())
    raises(ValueError, enc, [(1, T0, uplink.pack_reading(0, 1))])


def test_flags_ids_and_times_are_carried():
    # two channels interleaved as the cycle appends them; seq 13 is missing
    recs = [(10, T0, uplink.pack_reading(0, 2153)), (11, T0, uplink.pack_reading(1, 4500, 2)),
            (12, T0 + 300, uplink.pack_reading(0, 2160, 1)), (14, T0 + 300, uplink.pack_reading(1, 4512)),
            (15, T0 + 600, uplink.pack_reading(0, 2170, 4)), (16, T0 + 600, uplink.pack_reading(1, 4530))]
    msg = uplink.encoder(DEV, CHANNELS, KEY, Counter(), Clock())(recs)
    pack = cbor.loads(cose.verify(KEY, msg)[2])
    # compact: bn on each channel's first record, bt on the first, ids only where they break
    assert pack[0] == {senml.V: cbor.Tag(4, [-2, 2153]), senml.BN: DEV + "/t", senml.BT: T0,
                       senml.BU: "Cel", "i": 10}
    assert pack[1] == {senml.V: cbor.Tag(4, [-1, 216]), senml.T: 300, "is": 2, "flags": 1}
    assert pack[2] == {senml.V: cbor.Tag(4, [-1, 217]), senml.T: 600, "is": 3, "flags": 4}
    assert pack[3] == {senml.V: 45, senml.BN: DEV + "/h", senml.BU: "%RH", "i": 11, "flags": 2}
    assert pack[4] == {senml.V: cbor.Tag(4, [-2, 4512]), senml.T: 300}
    assert pack[5] == {senml.V: cbor.Tag(4, [-1, 453]), senml.T: 600, "is": 2}
    assert [(r[0], str(r[2]), r[3], r[4], r[5]) for r in senml.resolve(pack)] == [
        (DEV + "/t", "21.53", T0, 0, 10), (DEV + "/t", "21.6", T0 + 300, 1, 12),
        (DEV + "/t", "21.7", T0 + 600, 4, 15), (DEV + "/h", "45", T0, 2, 11),
        (DEV + "/h", "45.12", T0 + 300, 0, 14), (DEV + "/h", "45.3", T0 + 600, 0, 16)]


def test_relative_and_undated_packs():
    recs = [(7, -600, uplink.pack_reading(0, 2153)), (8, -300, uplink.pack_reading(0, 2154)),
            (9, 0, uplink.pack_reading(0, 2155))]
    pack = cbor.loads(cose.verify(KEY, uplink.encoder(DEV, CHANNELS, KEY, Counter(), Clock())(recs))[2])
    assert senml.BT not in pack[0] and [r.get(senml.T) for r in pack] == [-600, -300, None]
    enc = uplink.encoder(DEV, CHANNELS, KEY, Counter(), Clock(undated=(7, 8, 9)))
    pack = cbor.loads(cose.verify(KEY, enc(recs))[2])
    assert all(r["undated_"] is True and senml.T not in r and senml.BT not in r for r in pack)
    assert [r[3] for r in senml.resolve(pack)] == [None, None, None]
    # a time the clock should never give (0 < t < 2**28) goes out undated, never misdated
    pack = cbor.loads(cose.verify(KEY, enc([(20, 4900, uplink.pack_reading(0, 1))]))[2])
    assert pack[0]["undated_"] is True and senml.T not in pack[0]


def test_named_layout_has_n_in_every_record():
    recs = [(k + 1, T0 + 300 * (k // 2), uplink.pack_reading(k % 2, 2000 + k)) for k in range(6)]
    pack = cbor.loads(cose.verify(KEY, uplink.encoder(DEV, CHANNELS, KEY, Counter(), Clock(),
                                                      layout="named")(recs))[2])
    assert [r[senml.N] for r in pack] == ["t", "t", "t", "h", "h", "h"]
    assert pack[0][senml.BN] == DEV + "/" and all(senml.BN not in r for r in pack[1:])
    assert pack[3][senml.BU] == "%RH"
    compact = uplink.encoder(DEV, CHANNELS, KEY, Counter(), Clock())(recs)
    assert senml.decode_cbor(cose.verify(KEY, compact)[2]) == senml.resolve(pack)
    raises(ValueError, uplink.encoder, DEV, CHANNELS, KEY, Counter(), Clock(), layout="n")


def test_streaming_encoder_leaves_out_what_it_cannot_encode():
    enc = uplink.encoder(DEV, CH3[:2], KEY, Counter(), Clock())
    recs = [(1, T0, uplink.pack_reading(0, 1)), (2, T0 + 1, uplink.pack_reading(5, 1)),
            (3, T0 + 2, b"\x00"), (4, T0 + 3, uplink.pack_reading(1, 2))]
    assert enc(recs) == generic([recs[0], recs[3]], CH3[:2], 1001)
    assert enc.rejected == 2
    assert enc(recs[1:3]) is None and enc.rejected == 4
    assert enc.counter.n == 1001  # no sequence number spent on nothing


def test_streaming_encoder_refuses_mixed_times_and_bad_names():
    enc = uplink.encoder(DEV, CH3, KEY, Counter(), Clock(undated=(3,)))
    one = uplink.pack_reading(0, 1)
    # one kind per batch (drain's kind= keeps them apart)
    raises(ValueError, enc, [(1, -60, one), (2, T0, one)])
    raises(ValueError, enc, [(1, T0, one), (2, -60, one)])
    raises(ValueError, enc, [(1, T0, one), (3, T0, one)])
    for chans in ([("t!", "Cel", 1)], [("t", "Cel", 0)], [("t", "", 1)], [("t", "Cel", 12)]):
        raises(ValueError, uplink.encoder(DEV, chans, KEY, Counter(), Clock()), [(1, T0, one)])
    raises(ValueError, uplink.encoder("node 1", CH3, KEY, Counter(), Clock()), [(1, T0, one)])
    raises(ValueError, uplink.check_name, "node 1/t")
    uplink.check_name("node-1/t")


def test_a_60_reading_batch_stays_small():
    recs = []
    for k in range(60):
        i = k // 3
        recs.append((5000 + k, T0 + 300 * i, uplink.pack_reading(k % 3, (2153 + 7 * i, 4512 - 13 * i, 100325 + i)[k % 3])))
    msg = uplink.encoder(DEV, CH3, KEY, Counter(), Clock())(recs)
    payload = cose.verify(KEY, msg)[2]
    # measured 763 bytes of SenML (values, times, ids; 706 before ids and decimal fractions)
    assert len(payload) <= 13 * 60, len(payload)
