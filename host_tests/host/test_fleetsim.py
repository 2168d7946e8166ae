"""petrel fleet-sim: N provisioned nodes' messages (the node's own encoder,
real per-device keys, the node configuration's batches and intervals) through
a real Mosquitto into a collector, every reading stored once; a second run
provisions nothing new and is stored again, not refused; the speed-up paces it."""

import sqlite3
import time

import pytest

from petrel import cli, collect, fleetsim, provision, simnode, store, verify


class _Ports:
    ports = {"psk": 1}


CFG = simnode.node_config(_Ports())


def collector(broker, st, keys, group=None):
    c = collect.Collector(st, keys, "127.0.0.1", broker.ports["plain"], insecure_plain=True,
                          client_id="test-fleet-%s" % id(st), group=group).start()
    assert c.subscribed.wait(10)
    return c


def wait_stored(c, n, timeout=30):
    deadline = time.monotonic() + timeout
    while c.counts["messages"] + c.counts["refused"] < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_fleet_of_real_nodes_is_stored_once_and_again_on_a_second_run(broker, tmp_path, capsys):
    reg = tmp_path / "fleet.sqlite"
    keys, new = fleetsim.provision_fleet(reg, 4, tmp_path / "nodes")
    assert new == 4 and sorted(keys) == ["fleet-0000", "fleet-0001", "fleet-0002", "fleet-0003"]
    assert len(set(keys.values())) == 4 and all(len(k) == 32 for k in keys.values())
    assert keys == provision.load_keys(reg)
    st = store.open(str(tmp_path / "r.sqlite"))
    c = collector(broker, st, keys)
    try:
        args = ["fleet-sim", "--nodes", "4", "--registry", str(reg), "--hours", "2",
                "--speedup", "0", "--port", str(broker.ports["plain"]), "--insecure-plain"]
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert "4 nodes (0 provisioned now)" in out
        # hourly uplinks of 12 samples x 3 channels in one batch of 36, then health
        assert "published 16 messages (288 readings)" in out and "16 acknowledged" in out
        wait_stored(c, 16)
        counts = st.counts()
        assert counts["readings"] == 288 and counts["messages"] == 16 and counts["health"] == 8
        assert counts["refused"] == {}
        rows = list(st.readings())
        for dev in keys:
            mine = [r for r in rows if r.device == dev]
            assert len(mine) == 72 and set(r.channel for r in mine) == {"t", "rh", "bat"}
            assert set(r.unit for r in mine) == {"Cel", "%RH", "V"}
            ts = sorted(set(r.time for r in mine))
            assert len(ts) == 24 and set(b - a for a, b in zip(ts, ts[1:])) == {300}
        assert cli.main(args) == 0  # the same fleet again: new ids and seqs, all stored
        wait_stored(c, 32)
        counts = st.counts()
        assert counts["readings"] == 576 and counts["messages"] == 32 and counts["refused"] == {}
    finally:
        c.stop()
        st.close()


def test_messages_come_from_the_node_encoder_with_distinct_seqs_and_ids(tmp_path):
    keys, _ = fleetsim.provision_fleet(tmp_path / "fleet.sqlite", 3, tmp_path / "nodes")
    msgs = list(fleetsim.fleet(keys, CFG, 3))
    v = verify.Verifier(keys)
    seqs, rids = set(), set()
    for m in msgs:
        got = v.open(m.topic, m.payload)
        assert (got.device, got.seq) == (m.device, m.seq) and got.kind == m.topic.rsplit("/")[-1]
        seqs.add((m.device, m.seq))
        rids.update((r.device, r.channel, r.rid) for r in got.readings)
        for r in got.readings:
            assert r.quality == "dated" and r.exact == str(r.value).rstrip("0").rstrip(".")
        if got.kind == "health":
            assert got.health["uplink_s"] == 3600 and got.health["sample_s"] == 300
        else:
            assert len(got.readings) == CFG["batch"]
    assert len(seqs) == len(msgs) == 3 * 3 * 2 and len(rids) == 3 * 3 * 36
    # uplinks spread over the hour, in time order
    ats = [m.at for m in msgs]
    assert ats == sorted(ats) and len(set(ats)) == 9 and max(ats) < 3 * 3600
    with pytest.raises(verify.Rejected):  # each device's own key
        verify.Verifier({"fleet-0001": keys["fleet-0000"]}).open(msgs[2].topic, msgs[2].payload)


def test_speedup_paces_the_publishing(broker, tmp_path):
    keys, _ = fleetsim.provision_fleet(tmp_path / "fleet.sqlite", 2, tmp_path / "nodes")
    pub = fleetsim.Publisher("127.0.0.1", broker.ports["plain"], insecure_plain=True)
    try:
        # one hour at 3600x: the two nodes' uplinks at 15 and 45 virtual minutes
        n, readings, took, behind = fleetsim.run(fleetsim.fleet(keys, CFG, 1), pub, 3600)
        assert pub.wait(10) == n == 4 and readings == 72
    finally:
        pub.close()
    assert 0.7 < took < 1.5 and behind < 0.5


def test_bad_usage(tmp_path, capsys):
    reg = tmp_path / "r.sqlite"
    assert cli.main(["fleet-sim", "--nodes", "0", "--registry", str(reg), "--insecure-plain"]) == 2
    assert cli.main(["fleet-sim", "--nodes", "2", "--registry", str(reg)]) == 2
    assert "--ca" in capsys.readouterr().err and not reg.exists()
    reg.write_text("not a registry")
    assert cli.main(["fleet-sim", "--nodes", "1", "--registry", str(reg), "--insecure-plain"]) == 1
    with pytest.raises(sqlite3.DatabaseError):
        provision.load_keys(reg)
