"""petrel plot: a PNG of a device's channels, one panel per unit with the unit
on its axis, the device in the title, lines broken where no data arrived,
undated readings left out and counted."""

import math

from petrel import cli, plot, store, testmsg, verify

T0 = 1767225600
KEY = bytes(range(9, 41))


def fill(path):
    """t every 5 min for 2 h with a 1 h hole in the middle, rh alongside,
    3 undated t."""
    v = verify.Verifier({"p-A": KEY})
    st = store.open(str(path))
    times = [T0 + 300 * k for k in range(25) if not 8 <= k < 20]
    rows = [("t", "Cel", 2000 + k, 100, t, 100 + k) for k, t in enumerate(times)]
    rows += [("rh", "%RH", 500 + k, 10, t, 200 + k) for k, t in enumerate(times)]
    st.commit(v.open("petrel/p-A/up", testmsg.up(KEY, "p-A", 1, rows), received=T0 + 9000))
    st.commit(v.open("petrel/p-A/up", testmsg.up(
        KEY, "p-A", 2, [("t", "Cel", 1, 1, 0, k) for k in (1, 2, 3)], time="undated"), received=T0))
    st.close()
    return str(path), len(times)


def test_gaps_break_the_line_only_where_data_is_missing():
    t = [0, 300, 600, 900, 2700, 3000, 3300]
    tt, vv = plot.with_gaps(t, [1.0] * len(t))
    nan = [i for i, x in enumerate(vv) if math.isnan(x)]
    assert len(nan) == 1 and tt[nan[0] - 1] == 900 and tt[nan[0] + 1] == 2700
    assert plot.with_gaps([0, 300, 610, 900], [1.0] * 4)[1] == [1.0] * 4  # jitter is no gap


def test_figure_has_a_panel_per_unit_gaps_and_counts_undated(tmp_path):
    db, n = fill(tmp_path / "r.sqlite")
    st = store.open(db)
    data = {}
    for c in ("t", "rh"):
        data.update(plot.series(st.readings(device="p-A", channel=c)))
    st.close()
    assert data["t"]["undated"] == 3 and len(data["t"]["t"]) == n
    fig = plot.figure("p-A", data, ["t", "rh"])
    assert [ax.get_ylabel() for ax in fig.axes] == ["Cel", "%RH"]
    assert "p-A" in fig._suptitle.get_text()
    t_line = fig.axes[0].get_lines()[0]
    assert sum(math.isnan(y) for y in t_line.get_ydata()) == 1  # the hour without data
    legend = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert legend == ["t (%d), 3 undated not shown" % n]
    assert any("3 undated readings left out" in x.get_text() for x in fig.texts)


def test_cli_writes_the_png(tmp_path, capsys):
    db, n = fill(tmp_path / "r.sqlite")
    out = tmp_path / "p.png"
    assert cli.main(["plot", "--db", db, "--device", "p-A", "--channel", "t", "rh", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10000
    assert "rh %d readings, t %d readings" % (n, n) in capsys.readouterr().out
    none = tmp_path / "none.png"
    assert cli.main(["plot", "--db", db, "--device", "p-B", "--channel", "t", "-o", str(none)]) == 1
    assert not none.exists() and "nothing written" in capsys.readouterr().err
