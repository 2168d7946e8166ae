"""petrel energy: the arithmetic of the battery model, and its outputs."""

import subprocess
import sys

import pytest

from petrel import boards, energy


def profile(**kw):
    e = {"volts": 3.0, "sleep_ua": 10, "cpu_ma": 40, "radio_ma": 100, "boot_ms": 100,
         "sample_ms": 50, "wifi_dhcp_ms": 1600, "wifi_static_ms": 700, "wifi_cached_ms": 200,
         "tls_cert_ms": 1000, "tls_psk_ms": 50, "mqtt_ms": 50, "battery_mah": 3000,
         "self_discharge_per_year": 0.0}
    e.update(kw)
    return {"name": "t", "energy": e}


def test_a_day_is_the_sum_of_its_phases():
    p = profile()
    sc = energy.Scenario("x", 12, "cached", "psk")
    d = energy.daily(p, 300, sc)
    wakes, uplinks = 288, 24
    assert d["boot"] == pytest.approx(40 * 0.1 * wakes / 3600)
    assert d["wifi"] == pytest.approx(100 * 0.2 * uplinks / 3600)
    assert d["tls"] == pytest.approx(100 * 0.05 * uplinks / 3600)
    down_s = energy.DOWN_HEALTH_BYTES * 8.0 / 2000 / 1000  # the mailbox's health fields at the default 2000 kbps
    assert d["down"] == pytest.approx(100 * down_s * uplinks / 3600)
    awake = wakes * 0.15 + uplinks * (0.3 + down_s)
    assert d["sleep"] == pytest.approx(0.010 * (86400 - awake) / 3600)
    assert energy.per_wake_mc(p, sc) == pytest.approx(40 * 0.15 + 100 * (0.3 + down_s))


def test_the_downlink_costs_what_the_profile_says_a_round_trip_and_a_byte_cost():
    rows = dict((what.split(" (")[0], (ms, mc)) for what, ms, mc in
                energy.downlink_cost(profile(rtt_ms=20, radio_kbps=1000)))
    assert rows["every uplink, nothing waiting"][0] == pytest.approx(energy.DOWN_HEALTH_BYTES * 8 / 1000)
    assert rows["a 1 KiB message waiting"][0] == pytest.approx(8.192 + 20)
    assert rows["a power-on, the fleet's time answered"][0] == 20 + energy.COLLECTOR_MS
    ms, mc = rows["a power-on, no time service answering"]
    assert ms == 1500 and mc == pytest.approx(100 * 1.5)  # radio mA x s


def test_an_update_costs_its_bytes_a_round_trip_per_wake_and_the_trials_uplink():
    p = profile(rtt_ms=20, radio_kbps=1000)
    # 10 KiB in 1 KiB chunks, 4 a wake: 10 chunks over 3 wakes (4, 4, 2)
    u = energy.update_cost(p, 10240, 12, chunk=1024, per_wake=4)
    assert (u["chunks"], u["wakes"]) == (10, 3)
    per_chunk = (1024 + energy.UPDATE_LINK) * 8 / 1000
    assert u["wake_ms"] == pytest.approx(4 * per_chunk + 20)
    radio_ms = 2 * (4 * per_chunk + 20) + 2 * per_chunk + 20
    trial = energy.per_wake_mc(p, energy.Scenario("t", 12, "cached", "psk"))
    assert u["trial_mc"] == pytest.approx(trial)
    assert u["total_mc"] == pytest.approx(100 * radio_ms / 1000 + trial)
    assert u["total_mah"] == pytest.approx(u["total_mc"] / 3600)
    # a last chunk shorter than the others costs only its bytes
    assert energy.update_cost(p, 10240 - 1000, 12, chunk=1024, per_wake=4)["total_mc"] == pytest.approx(
        u["total_mc"] - 100 * 1000 * 8 / 1000 / 1000)


def test_battery_life_with_and_without_self_discharge():
    assert energy.life_years(profile(), 1.0) == pytest.approx(3000 / 365, rel=1e-6)
    assert energy.life_years(profile(self_discharge_per_year=0.05), 1.0) < 3000 / 365


def test_batching_and_psk_each_save_charge():
    p = boards.load("esp32-node")
    totals = [sum(energy.daily(p, 300, energy.Scenario(s.name, s.uplink_every or 12, s.wifi,
                                                       s.tls)).values())
              for s in energy.SCENARIOS]
    assert totals == sorted(totals, reverse=True)  # each step is cheaper than the one before
    assert totals[0] > 5 * totals[-1]


def test_every_figure_of_the_node_profile_names_its_source():
    e = boards.load("esp32-node")["energy"]
    for key in ("sleep_ua", "cpu_ma", "radio_ma", "boot_ms", "sample_ms", "mqtt_ms"):
        assert e[key + "_source"]
    assert e["wifi_ms_source"] and e["tls_ms_source"] and e["battery_source"]


def test_cli_prints_the_table_and_writes_the_chart(tmp_path):
    png = tmp_path / "energy.png"
    p = subprocess.run([sys.executable, "-m", "petrel.cli", "energy", "--png", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "TLS-PSK" in p.stdout and "mAh/day" in p.stdout and "years" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = subprocess.run([sys.executable, "-m", "petrel.cli", "energy", "--board", "esp32-devkitc"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no energy section" in p.stderr


def test_levers_say_what_would_move_the_default_and_by_how_much():
    prof = boards.load("esp32-node")
    rows = energy.levers(prof, 300, 12)
    names = [r[0] for r in rows]
    assert any(n.startswith("boot 300 -> 60 ms") for n in names)
    for what, before, after in rows:
        assert after > before, what  # each lever saves charge
    boot = [r for r in rows if r[0].startswith("boot")][0]
    # boot is the dominant phase: taking 240 ms off each wake is worth years
    assert boot[2] - boot[1] > 3.0
    # the figures agree with the model: the default itself, unchanged profile
    d = energy.daily(prof, 300, energy.Scenario("x", 12, "cached", "psk"))
    assert abs(boot[1] - energy.life_years(prof, sum(d.values()))) < 1e-9


def cli(*args):
    return subprocess.run([sys.executable, "-m", "petrel.cli", "energy"] + list(args),
                          capture_output=True, text=True, timeout=120)


def test_user_mistakes_are_one_line_and_exit_2(tmp_path):
    for args, said in ((["--sample-s", "0"], "--sample-s 0"),
                       (["--uplink-s", "-5"], "--uplink-s -5"),
                       (["--png", "/nonexistent/x.png"], "no folder /nonexistent"),
                       (["--board", "esp32-devkitc"], "use --board esp32-node")):
        p = cli(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and said in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr and not p.stdout, args
    assert not list(tmp_path.iterdir())


def test_tcp_nodelay_saving_comes_from_the_profiles_sourced_delayed_ack():
    prof = boards.load("esp32-node")
    e = prof["energy"]
    assert e["delack_ms"] == 40 and "TCP_DELACK_MIN" in e["delack_ms_source"]
    assert e["tls_stalls_source"] and e["tcp_nodelay"] is True
    saving = energy.nodelay_saving(prof, 300, 12)
    for tls in ("psk", "cert"):
        ms, mc, without, with_ = saving[tls]
        assert ms == e["tls_%s_stalls" % tls] * 40
        assert mc == pytest.approx(e["radio_ma"] * ms / 1000)
        assert with_ > without  # the waits cost battery life
    # the model's own phases: the handshake is longer by exactly the waits without the option
    sc = energy.Scenario("x", 12, "cached", "psk")
    off = dict(prof, energy=dict(e, tcp_nodelay=False))
    tls_on = [ms for n, _, ms, _ in energy.phases(e, sc) if n == "tls"][0]
    tls_off = [ms for n, _, ms, _ in energy.phases(off["energy"], sc) if n == "tls"][0]
    assert tls_off - tls_on == saving["psk"][0]
    p = cli()
    assert p.returncode == 0 and "TCP_NODELAY" in p.stdout and "delayed ACK" in p.stdout, p.stderr


def test_the_chart_says_what_it_assumes(tmp_path, monkeypatch):
    said = {}
    monkeypatch.setattr(energy, "chart", lambda rows, names, path, assumptions="": said.setdefault("a", assumptions))
    import io

    energy.report("esp32-node", 300, 3600, out=io.StringIO(), png=str(tmp_path / "e.png"))
    a = said["a"]
    for what in ("boards/esp32-node.json", "sample every 300 s", "uplink every 12 samples", "3000 mAh",
                 "TCP_NODELAY on", "not a measurement"):
        assert what in a, (what, a)


def test_the_models_time_wait_is_the_firmwares():
    import re

    from petrel import paths

    text = (paths.FIRMWARE / "app" / "cycle.py").read_text()
    assert int(re.search(r"^TIME_WAIT_MS = (\d+)", text, re.M).group(1)) == energy.TIME_WAIT_MS
