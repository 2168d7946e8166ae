# lib/senml: RFC 8428 packs of fixed-point readings, few bytes, readable back.
import struct

import cbor
import senml
from ptest import raises

T0 = 1760000000  # Unix seconds (2025)
CHANNELS = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)]


def batch(now=None, t0=T0):
    p = senml.Pack("p-a1b2c3/", CHANNELS)
    for i in range(12):
        p.add(0, 2153 + 7 * i - 40, t0 + 300 * i)
        p.add(1, 4512 - 31 * i, t0 + 300 * i)
        p.add(2, 101325 + 13 * i, t0 + 300 * i)
    return p


def test_values_take_the_smallest_exact_form():
    assert senml.value(2100, 100) == 21 and isinstance(senml.value(2100, 100), int)
    assert senml.value(-500, 100) == -5
    assert cbor.dumps(senml.value(2150, 100)) == b"\xf9" + struct.pack(">H", 0x4D60)  # 21.5 in float16
    v = senml.value(2153, 100)
    assert cbor.dumps(v)[0] == 0xFA and round(v * 100) == 2153  # float32, reads back
    assert cbor.dumps(senml.value(46080, 1024)) == b"\x18\x2d"  # 45: 1024 divides
    assert cbor.dumps(senml.value(46081, 1024))[0] == 0xFA  # exact in float32
    v = senml.value(123456789, 10 ** 8)
    assert cbor.dumps(v)[0] == 0xFB and round(v * 10 ** 8) == 123456789  # float32 is not enough
    for bad in ((1.5, 100), (True, 1), (1, 0), (1, -10), (1, 2.0), ("1", 1)):
        raises(ValueError, senml.value, *bad)


def test_every_value_reads_back_within_half_a_unit():
    for scale in (10, 100, 1000, 1024, 3):
        for v in list(range(-3000, 3000, 7)) + [101325, -99999, 2 ** 20 + 1]:
            x = senml.value(v, scale)
            back = cbor.loads(cbor.dumps(x))
            assert abs(back * scale - v) < 0.5, (v, scale, back)


def test_decimal_text_is_exact():
    assert senml.decimal(2153, 100) == "21.53"
    assert senml.decimal(-5, 100) == "-0.05"
    assert senml.decimal(2150, 100) == "21.5"
    assert senml.decimal(2100, 100) == "21"
    assert senml.decimal(101325, 1) == "101325"
    assert senml.decimal(-7, 1000) == "-0.007"
    assert senml.decimal(0, 10) == "0"


def test_pack_layout_uses_base_fields():
    recs = cbor.loads(batch().cbor())
    assert len(recs) == 36
    first = recs[0]
    assert first[senml.BN] == "p-a1b2c3/t" and first[senml.BT] == T0 and first[senml.BU] == "Cel"
    assert senml.T not in first  # t = 0 is left out
    assert sorted(recs[1].keys()) == [senml.V, senml.T] and recs[1][senml.T] == 300
    assert recs[12][senml.BN] == "p-a1b2c3/h" and recs[12][senml.BU] == "%RH"
    assert recs[24][senml.BN] == "p-a1b2c3/p" and recs[24][senml.V] == 101325
    assert senml.BT not in recs[12]


def test_cbor_round_trip_resolves_names_units_values_times():
    out = senml.decode_cbor(batch().cbor())
    assert len(out) == 36
    assert out[0][:2] == ("p-a1b2c3/t", "Cel") and out[0][3] == T0
    assert round(out[0][2] * 100) == 2113
    assert out[13][0] == "p-a1b2c3/h" and out[13][1] == "%RH" and out[13][3] == T0 + 300
    assert round(out[13][2] * 100) == 4481
    assert out[35] == ("p-a1b2c3/p", "Pa", 101325 + 13 * 11, T0 + 3300)


def test_textbook_layout_with_names_in_every_record():
    data = batch().cbor(names="n")
    recs = cbor.loads(data)
    assert recs[0][senml.BN] == "p-a1b2c3/" and recs[0][senml.N] == "t"
    assert recs[5][senml.N] == "t" and recs[20][senml.N] == "h"
    assert senml.decode_cbor(data) == senml.decode_cbor(batch().cbor())
    assert len(data) > len(batch().cbor())


def test_a_batch_of_12_samples_of_3_channels_is_small():
    data = batch().cbor()
    # ~11 bytes a reading; the whole uplink budget is 16 (COSE, MQTT, TLS included)
    assert len(data) <= 36 * 12.5, len(data)


def test_relative_times_when_the_wall_clock_is_unknown():
    # stamped on the node's own clock (seconds since boot 0, say); sent at 4000
    p = batch(t0=100)
    recs = cbor.loads(p.cbor(now=4000))
    assert senml.BT not in recs[0]
    assert recs[0][senml.T] == -3900 and recs[11][senml.T] == -600
    out = senml.decode_cbor(p.cbor(now=4000))
    assert out[0][3] == -3900 and out[11][3] == -600  # relative to the receiver's now
    assert all(r[3] < senml.RELATIVE for r in out)
    recs = cbor.loads(batch(t0=700).cbor(now=3300 + 700))
    assert senml.T not in recs[11]  # read exactly at now


def test_absolute_time_must_look_like_unix_time():
    p = senml.Pack("d/", CHANNELS)
    p.add(0, 1, 1000)  # seconds since boot, not Unix time
    raises(ValueError, p.cbor)
    p = senml.Pack("d/", CHANNELS)
    p.add(0, 1, 800000000 + senml.EPOCH_2000)
    assert senml.decode_cbor(p.cbor())[0][3] == 800000000 + senml.EPOCH_2000


def test_readings_are_grouped_by_channel_in_time_order():
    p = senml.Pack("d/", CHANNELS)
    p.add(1, 4000, T0 + 600)
    p.add(0, 2000, T0 + 300)
    p.add(1, 4100, T0)
    out = senml.decode_cbor(p.cbor())
    assert [(r[0], r[2], r[3]) for r in out] == [
        ("d/h", 41, T0), ("d/h", 40, T0 + 600), ("d/t", 20, T0 + 300)]


def test_json_round_trip_and_keys():
    p = batch()
    text = p.json()
    assert text.startswith('[{"bt":1760000000,"bn":"p-a1b2c3/t","bu":"Cel","v":21.13}')
    assert '{"v":21.2,"t":300}' in text
    out = senml.decode_json(text)
    ref = senml.decode_cbor(p.cbor())
    for a, b in zip(out, ref):
        assert a[0] == b[0] and a[1] == b[1] and a[3] == b[3]
        assert abs(a[2] - b[2]) < 0.001
    assert '"t":-3900' in batch(t0=100).json(now=4000)


def test_json_escapes_units():
    p = senml.Pack("d/", [("x", 'a"b\\', 1)])
    p.add(0, 5, T0)
    assert senml.decode_json(p.json()) == [("d/x", 'a"b\\', 5, T0)]


def test_bad_names_and_readings_are_refused():
    raises(ValueError, senml.Pack, "dev ice/", CHANNELS)
    raises(ValueError, senml.Pack, "", [("-t", "Cel", 1)])
    raises(ValueError, senml.Pack, "d/", [("t", "Cel", 0)])
    p = senml.Pack("d/", CHANNELS)
    raises(ValueError, p.add, 3, 1, T0)
    raises(ValueError, p.add, 0, 1.5, T0)
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, "now")])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, T0)], None, "x")
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
        cbor.Map([(senml.BV, 100), (senml.N, "y"), (senml.V, 5)]),
        cbor.Map([(senml.N, "s"), (senml.VS, "on")]),
    ])
    out = senml.decode_cbor(data)
    assert out[0] == ("urn:dev:ow:10e2073a01080063", "%RH", 21.2, 1.320067464e9)
    assert out[1][3] == 1.320067464e9 + 10
    assert out[2] == ("urn:dev:ow:10e2073a01080063x", "Cel", True, 1.320067464e9)
    assert out[3][2] == 105
    assert out[4][2] == "on"


def test_decoder_refuses_what_is_not_senml():
    for obj in ({}, [1], [{senml.V: "x"}], [{senml.BN: 5, senml.V: 1}], [{senml.V: 1}],
                [{senml.BN: "d", "x_": 1, senml.V: 1}], [{senml.BN: "d", senml.T: True}],
                [{senml.BN: "bad name", senml.V: 1}]):
        raises(ValueError, senml.decode_cbor, cbor.dumps(obj))
    raises(ValueError, senml.decode_cbor, b"\x81")
    raises(ValueError, senml.decode_json, "[{")
    raises(ValueError, senml.decode_json, "{}")
    raises(ValueError, senml.decode_json, "[1]")


def test_units_are_required_and_mixed_clocks_refused():
    raises(ValueError, senml.encode_cbor, "d/", [("t", None, 1, 1, T0)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "", 1, 1, T0)])
    # one reading on the boot clock among Unix times: it would read as relative
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, T0), ("t", "Cel", 1, 1, 50)])
    raises(ValueError, senml.encode_cbor, "d/", [("t", "Cel", 1, 1, 5)], 1.5)
    # base time is the first record's: the earliest reading of the first channel
    data = senml.encode_cbor("d/", [("t", "Cel", 1, 1, T0 + 60), ("t", "Cel", 2, 1, T0)])
    assert cbor.loads(data)[0][senml.BT] == T0
