"""petrel readings: the collector's store out as CSV, JSON and SenML JSON
(RFC 8428), filtered by device, channel and time. The store is filled the way
the collector fills it: messages written by testmsg, opened by the verifier,
committed by the store."""

import csv
import io
import json

import pytest

from petrel import cli, store, testmsg, verify

T0 = 1767225600  # 2026-01-01T00:00:00Z
KEY_A, KEY_B = bytes(range(7, 39)), bytes(range(50, 82))


def fill(path):
    """p-A: t 21.53 / 21.5 (clamped) / 21 and rh 58.7 dated, two undated t;
    p-B: one t. -> the store's url."""
    v = verify.Verifier({"p-A": KEY_A, "p-B": KEY_B})
    st = store.open(str(path))
    msgs = [
        ("petrel/p-A/up", testmsg.up(KEY_A, "p-A", 1, [
            ("t", "Cel", 2153, 100, T0, 10), ("t", "Cel", 2150, 100, T0 + 300, 11, 2),
            ("t", "Cel", 2100, 100, T0 + 600, 12), ("rh", "%RH", 587, 10, T0, 13)])),
        ("petrel/p-A/up", testmsg.up(KEY_A, "p-A", 2, [
            ("t", "Cel", -125, 100, 0, 3), ("t", "Cel", 7, 1, 0, 4)], time="undated")),
        ("petrel/p-B/up", testmsg.up(KEY_B, "p-B", 5, [("t", "Cel", 1999, 100, T0 + 60, 1)])),
    ]
    for topic, data in msgs:
        st.commit(v.open(topic, data, received=T0 + 3600))
    st.close()
    return str(path)


@pytest.fixture
def db(tmp_path):
    return fill(tmp_path / "readings.sqlite")


def readings(capsys, *args):
    code = cli.main(["readings"] + list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_has_a_header_exact_values_and_iso_utc_times(db, capsys):
    code, out, _ = readings(capsys, "--db", db, "--device", "p-A", "--channel", "t")
    assert code == 0
    assert out.splitlines()[0] == "device,channel,time,unit,value,flags,quality,id"
    rows = list(csv.DictReader(io.StringIO(out)))
    dated = [r for r in rows if r["quality"] == "dated"]
    assert [(r["time"], r["value"], r["unit"], r["flags"], r["id"]) for r in dated] == [
        ("2026-01-01T00:00:00Z", "21.53", "Cel", "0", "10"),
        ("2026-01-01T00:05:00Z", "21.5", "Cel", "2", "11"),
        ("2026-01-01T00:10:00Z", "21", "Cel", "0", "12")]
    undated = sorted((r["value"], r["time"]) for r in rows if r["quality"] == "undated")
    assert undated == [("-1.25", ""), ("7", "")]
    assert len(rows) == 5 and set(r["device"] for r in rows) == {"p-A"}


def test_senml_json_is_rfc8428_with_flags_and_undated_marked(db, capsys):
    code, out, _ = readings(capsys, "--db", db, "--format", "senml-json")
    assert code == 0
    pack = json.loads(out)
    assert len(pack) == 7
    for rec in pack:  # resolved records: each stands alone, no base fields
        assert set(rec) <= {"n", "u", "v", "t", "flags", "undated_"}
        assert rec["n"].count("/") == 1 and isinstance(rec["v"], (int, float))
        assert ("t" in rec) != ("undated_" in rec)
        assert rec.get("undated_", True) is True and rec.get("flags", 1) != 0
    dated = [(r["n"], r["u"], r["v"], r["t"], r.get("flags")) for r in pack if "t" in r]
    assert ("p-A/t", "Cel", 21.53, T0, None) in dated
    assert ("p-A/t", "Cel", 21.5, T0 + 300, 2) in dated
    assert ("p-A/rh", "%RH", 58.7, T0, None) in dated
    assert ("p-B/t", "Cel", 19.99, T0 + 60, None) in dated
    assert sorted(r["v"] for r in pack if "undated_" in r) == [-1.25, 7]
    assert '"v": 21.53,' in out and '"v": 58.7,' in out  # the decimal written, not a float's digits


def test_json_records_carry_everything(db, capsys):
    code, out, _ = readings(capsys, "--db", db, "--device", "p-B", "--format", "json")
    assert code == 0
    assert json.loads(out) == [{"device": "p-B", "channel": "t", "time": "2026-01-01T00:01:00Z",
                                "unix": T0 + 60, "unit": "Cel", "value": 19.99, "flags": 0,
                                "quality": "dated", "id": 1}]


def test_time_range_and_channel_filters(db, capsys):
    code, out, _ = readings(capsys, "--db", db, "--since", "2026-01-01T00:01:00Z",
                            "--until", str(T0 + 300), "--format", "json")
    assert code == 0
    got = sorted((r["device"], r["channel"], r["unix"]) for r in json.loads(out))
    assert got == [("p-A", "t", T0 + 300), ("p-B", "t", T0 + 60)]
    code, out, _ = readings(capsys, "--db", db, "--channel", "rh", "--format", "json")
    assert [r["value"] for r in json.loads(out)] == [58.7]


def test_out_file_and_an_empty_answer(db, tmp_path, capsys):
    path = tmp_path / "x.csv"
    code, _, err = readings(capsys, "--db", db, "--device", "p-A", "-o", str(path))
    assert code == 0 and "6 readings written to %s" % path in err
    assert len(path.read_text().splitlines()) == 7
    code, out, _ = readings(capsys, "--db", db, "--device", "nobody", "--format", "senml-json")
    assert code == 0 and json.loads(out) == []


def test_bad_arguments_are_usage_errors_and_nothing_is_created(tmp_path, db, capsys):
    missing = tmp_path / "none.sqlite"
    code, _, err = readings(capsys, "--db", str(missing))
    assert code == 2 and "no such store" in err and not missing.exists()
    code, _, err = readings(capsys, "--db", db, "--since", "yesterday")
    assert code == 2 and "ISO-8601" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["readings", "--db", db, "--format", "xml"])
    assert e.value.code == 2
