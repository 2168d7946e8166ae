# lib/senml: the format's reference (format v2: exact values, flags, ids, three
# time kinds, two layouts) and its reader.
import cbor
import senml
from ptest import raises

T0 = 1760000000  # Unix seconds (2025)
CHANNELS = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)]


def batch(t0=T0, step=300):
    p = senml.Pack("p-a1b2c3/", CHANNELS)
    for i in range(12):
        t = None if t0 is None else t0 + step * i
        p.add(0, 2153 + 7 * i - 40, t, 0, 100 + 3 * i)
        p.add(1, 4512 - 31 * i, t, 2 if i == 5 else 0, 101 + 3 * i)
        p.add(2, 101325 + 13 * i, t, 0, 102 + 3 * i)
    return p


def test_values_are_ints_or_exact_decimal_fractions():
    assert senml.value(2100, 100) == 21 and isinstance(senml.value(2100, 100), int)
    assert senml.value(-500, 100) == -5
    assert cbor.dumps(senml.value(2153, 100)) == bytes.fromhex("c48221190869")  # the format's example
    assert cbor.dumps(senml.value(2150, 100)) == bytes.fromhex("c4822018d7")  # [-1, 215]
    assert cbor.dumps(senml.value(46080, 1024)) == b"\x18\x2d"  # 45: 1024 divides
    assert senml.value(46081, 1024).value == [-10, 450009765625]
    assert senml.value(-1, 8).value == [-3, -125]
    assert senml.value(7, 25).value == [-2, 28]
    for bad in ((1.5, 100), (True, 1), (1, 0), (1, -10), (1, 2.0), ("1", 1), (1, 3), (1, 1000 * 7)):
        raises(ValueError, senml.value, *bad)


def test_every_value_reads_back_exactly():
    for scale in (1, 2, 4, 5, 8, 10, 16, 20, 25, 100, 1000, 1024):
        for v in list(range(-3000, 3000, 7)) + [101325, -99999, 2 ** 31 - 1, -2 ** 31]:
            x = cbor.loads(cbor.dumps(senml.value(v, scale)))
            if isinstance(x, cbor.Tag):
                e, m = x.value
                assert x.tag == 4 and e < 0 and m % 10 != 0 and m * scale == v * 10 ** -e, (v, scale, x)
            else:
                assert x * scale == v, (v, scale, x)


def test_decimal_text_is_exact():
    assert senml.decimal(2153, 100) == "21.53"
    assert senml.decimal(-5, 100) == "-0.05"
    assert senml.decimal(2150, 100) == "21.5"
    assert senml.decimal(2100, 100) == "21"
    assert senml.decimal(101325, 1) == "101325"
    assert senml.decimal(-7, 1000) == "-0.007"
    assert senml.decimal(0, 10) == "0"
    assert senml.decimal(46081, 1024) == "45.0009765625"
    assert str(senml.Dec(21, 2)) == "2100" and senml.Dec(2100, 0) == 2100 and senml.Dec(215, -1) != 21
    assert senml.Dec(2150, -2) == senml.Dec(215, -1) and repr(senml.Dec(-5, -2)) == "Dec('-0.05')"


def test_pack_layout_uses_base_fields_and_deterministic_keys():
    data = batch().cbor()
    recs = cbor.loads(data)
    assert len(recs) == 36
    first = recs[0]
    assert first == {senml.V: cbor.Tag(4, [-2, 2113]), senml.BN: "p-a1b2c3/t", senml.BT: T0,
                     senml.BU: "Cel", senml.I: 100}
    assert recs[1] == {senml.V: cbor.Tag(4, [-1, 212]), senml.T: 300, senml.IS: 3}
    assert recs[2] == {senml.V: cbor.Tag(4, [-2, 2127]), senml.T: 600}  # id 106 = 103 + 3
    assert recs[12] == {senml.V: cbor.Tag(4, [-2, 4512]), senml.BN: "p-a1b2c3/h", senml.BU: "%RH",
                        senml.I: 101}
    assert recs[17][senml.FLAGS] == 2 and senml.FLAGS not in recs[16]
    assert recs[24][senml.BN] == "p-a1b2c3/p" and recs[24][senml.V] == 101325
    # keys in RFC 8949 section 4.2.1 order: v t bn bt bu "i" "is" "flags"
    assert data[:5] == b"\x98\x24\xa5\x02\xc4" and data.find(b"\x21jp-a1b2c3/t\x22") > 0


def test_cbor_round_trip_resolves_names_units_values_times_flags_ids():
    out = senml.decode_cbor(batch().cbor())
    assert len(out) == 36
    assert out[0] == ("p-a1b2c3/t", "Cel", senml.Dec(2113, -2), T0, 0, 100)
    assert out[13] == ("p-a1b2c3/h", "%RH", senml.Dec(4481, -2), T0 + 300, 0, 104)
    assert out[17][4] == 2 and out[17][5] == 116
    assert out[35] == ("p-a1b2c3/p", "Pa", 101325 + 13 * 11, T0 + 3300, 0, 135)


def test_ids_resolve_by_i_and_is():
    pack = [{senml.BN: "d/x", senml.V: 1, senml.I: 50}, {senml.V: 1}, {senml.V: 1, senml.IS: 10},
            {senml.V: 1}, {senml.V: 1, senml.I: 7}, {senml.V: 1}, {senml.V: 1, senml.I: 3, senml.IS: 2},
            {senml.V: 1}]
    assert [r[5] for r in senml.resolve(pack)] == [50, 51, 61, 71, 7, 17, 3, 5]
    assert [r[5] for r in senml.resolve([{senml.BN: "d/x", senml.V: 1}])] == [None]  # no ids at all
    for bad in ([{senml.BN: "d/x", senml.V: 1, senml.IS: 2}], [{senml.BN: "d/x", senml.V: 1, senml.I: -1}],
                [{senml.BN: "d/x", senml.V: 1, senml.I: 1, senml.IS: 0}],
                [{senml.BN: "d/x", senml.V: 1, senml.I: True}], [{senml.BN: "d/x", senml.V: 1, senml.FLAGS: -1}]):
        raises(ValueError, senml.resolve, bad)
    # the writer picks whatever is shortest by the rule: nothing, "is", "i"
    p = senml.Pack("d/", CHANNELS)
    for s in (5, 6, 7, 9, 11, 4, 5):
        p.add(0, 1, T0 + s, 0, s)
    p.add(1, 1, T0, 0, 6)
    recs = cbor.loads(p.cbor())
    assert [(r.get(senml.I), r.get(senml.IS)) for r in recs] == [
        (4, None), (None, None), (5, None), (None, None), (None, None), (None, 2), (None, None), (6, None)]
    assert [r[5] for r in senml.decode_cbor(p.cbor())] == [4, 5, 5, 6, 7, 9, 11, 6]


def test_named_layout_with_n_in_every_record():
    data = batch().cbor(layout="named")
    recs = cbor.loads(data)
    assert recs[0][senml.BN] == "p-a1b2c3/" and recs[0][senml.N] == "t"
    assert recs[5][senml.N] == "t" and recs[20][senml.N] == "h" and senml.BN not in recs[20]
    assert senml.decode_cbor(data) == senml.decode_cbor(batch().cbor())
    assert len(data) > len(batch().cbor())


def test_relative_times_when_the_wall_clock_is_unknown():
    p = batch(t0=-3900)  # minus the ages at encoding
    recs = cbor.loads(p.cbor())
    assert senml.BT not in recs[0]
    assert recs[0][senml.T] == -3900 and recs[11][senml.T] == -600
    out = senml.decode_cbor(p.cbor())
    assert out[0][3] == -3900 and out[11][3] == -600  # relative to the receiver's now
    recs = cbor.loads(batch(t0=-3300).cbor())
    assert senml.T not in recs[11]  # read exactly at now
    p = senml.Pack("d/", CHANNELS)
    raises(ValueError, p.add, 0, 1, 4900)  # a positive age: the future, never sent
    raises(ValueError, p.add, 0, 1, 1.5)


def test_undated_readings_carry_the_must_understand_label():
    p = batch(t0=None)
    recs = cbor.loads(p.cbor())
    assert all(r[senml.UNDATED] is True and senml.T not in r and senml.BT not in r for r in recs)
    out = senml.decode_cbor(p.cbor())
    assert [r[3] for r in out] == [None] * 36 and out[0][2] == senml.Dec(2113, -2)
    # in outbox order within a channel: no time to sort by
    assert [r[5] for r in out[:3]] == [100, 103, 106]
    for bad in ([{senml.BN: "d/x", senml.V: 1, senml.UNDATED: 1}],
                [{senml.BN: "d/x", senml.V: 1, senml.T: 5, senml.UNDATED: True}],
                [{senml.BN: "d/x", senml.V: 1, "later_": True}]):
        raises(ValueError, senml.resolve, bad)


def test_time_kinds_never_mix():
    for a, b in ((T0, -60), (-60, None), (None, T0)):
        p = senml.Pack("d/", CHANNELS)
        p.add(0, 1, a)
        p.add(0, 1, b)
        raises(ValueError, p.cbor)
    assert [senml.kind(t) for t in (T0, 0, -5, None)] == ["dated", "relative", "relative", "undated"]


def test_readings_are_grouped_by_channel_in_time_order():
    p = senml.Pack("d/", CHANNELS)
    p.add(1, 4000, T0 + 600)
    p.add(0, 2000, T0 + 300)
    p.add(1, 4100, T0)
    out = senml.decode_cbor(p.cbor())
    assert [(r[0], r[2], r[3], r[5]) for r in out] == [
        ("d/h", 41, T0, 3), ("d/h", 40, T0 + 600, 1), ("d/t", 20, T0 + 300, 2)]


def test_json_round_trip_and_keys():
    p = batch()
    text = p.json()
    assert text.startswith('[{"v":21.13,"bn":"p-a1b2c3/t","bt":1760000000,"bu":"Cel","i":100}')
    assert '{"v":21.2,"t":300,"is":3}' in text and '"flags":2' in text
    out = senml.decode_json(text)
    ref = senml.decode_cbor(p.cbor())
    for a, b in zip(out, ref):
        assert a[0] == b[0] and a[1] == b[1] and a[3:] == b[3:]
        assert repr(a[2]) == str(b[2]) or a[2] == b[2]
    assert '"t":-3900' in batch(t0=-3900).json()
    assert '"undated_":true' in batch(t0=None).json()


def test_json_escapes_units():
    p = senml.Pack("d/", [("x", 'a"b\\', 1)])
    p.add(0, 5, T0, 0, 9)
    assert senml.decode_json(p.json()) == [("d/x", 'a"b\\', 5, T0, 0, 9)]


def test_bad_names_and_readings_are_refused():
    raises(ValueError, senml.Pack, "dev ice/", CHANNELS)
    raises(ValueError, senml.Pack, "", [("-t", "Cel", 1)])
    raises(ValueError, senml.Pack, "d/", [("t", "Cel", 0)])
    raises(ValueError, senml.Pack, "d/", [("t", "Cel", 3)])  # no finite decimal
    p = senml.Pack("d/", CHANNELS)
    raises(ValueError, p.add, 3, 1, T0)
    raises(ValueError, p.add, 0, 1.5, T0)
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, "now", 0, 1)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, T0)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, T0, 256, 1)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, T0, 0, -1)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, T0, 0, 1)], "x")
    assert senml.encode_cbor("d/", []) == b"\x80"
    assert len(p) == 0
    p.add(0, 1, T0)
    assert len(p) == 1
    p.clear()
    assert len(p) == 0


def test_decoder_resolves_base_fields_of_any_layout():
    # RFC 8428 section 5.1.2 style: bn/bt/bu on the first record, n/v/t after
    data = cbor.dumps([
        cbor.Map([(senml.BN, "urn:dev:ow:10e2073a01080063"), (senml.BT, 1.320067464e9),
                  (senml.BU, "%RH"), (senml.V, 21.2)]),
        cbor.Map([(senml.T, 10), (senml.V, 21.3)]),
        cbor.Map([(senml.N, "x"), (senml.U, "Cel"), (senml.VB, True)]),
        cbor.Map([(senml.N, "d"), (senml.V, cbor.Tag(4, [1, 3]))]),
        cbor.Map([(senml.BV, 100), (senml.N, "y"), (senml.V, 5)]),
        cbor.Map([(senml.N, "s"), (senml.VS, "on")]),
    ])
    out = senml.decode_cbor(data)
    assert out[0] == ("urn:dev:ow:10e2073a01080063", "%RH", 21.2, 1.320067464e9, 0, None)
    assert out[1][3] == 1.320067464e9 + 10
    assert out[2][:4] == ("urn:dev:ow:10e2073a01080063x", "Cel", True, 1.320067464e9)
    assert out[3][2] == 30 and str(out[3][2]) == "30"
    assert out[4][2] == 105
    assert out[5][2] == "on"


def test_decoder_refuses_what_is_not_senml():
    for obj in ({}, [1], [{senml.V: "x"}], [{senml.BN: 5, senml.V: 1}], [{senml.V: 1}],
                [{senml.BN: "d", "x_": 1, senml.V: 1}], [{senml.BN: "d", senml.T: True}],
                [{senml.BN: "bad name", senml.V: 1}], [{senml.BN: "d", senml.V: cbor.Tag(4, [1])}],
                [{senml.BN: "d", senml.V: cbor.Tag(4, [10 ** 6, 1])}],
                [{senml.BN: "d", senml.V: cbor.Tag(4, [-1, 1.5])}]):
        raises(ValueError, senml.decode_cbor, cbor.dumps(obj))
    raises(ValueError, senml.decode_cbor, b"\x81")
    raises(ValueError, senml.decode_json, "[{")
    raises(ValueError, senml.decode_json, "{}")
    raises(ValueError, senml.decode_json, "[1]")


def test_units_are_required():
    raises(ValueError, senml.encode_cbor, "d/", [("t", None, 1, 1, T0, 0, 1)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "", 1, 1, T0, 0, 1)])
    # base time is the first record's: the earliest reading of the first channel
    data = senml.encode_cbor("d/", [("t", "Cel", 1, 1, T0 + 60, 0, 1), ("t", "Cel", 2, 1, T0, 0, 2)])
    assert cbor.loads(data)[0][senml.BT] == T0
