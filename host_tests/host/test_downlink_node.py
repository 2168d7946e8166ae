"""The downlink end to end: the firmware on the simulated node (MicroPython
VM), a real Mosquitto with TLS-PSK, the collector storing what arrives and
answering time requests, and the fleet side's own sealing
(tools/petrel/downlink.py, written apart from the node's lib/downmsg.py)
publishing to the node's mailbox while it sleeps.

One node lives through the scenario (the `field` fixture, about a minute);
each test checks one part of it, so the first failure does not hide the rest:
trusted time at power-on, a pushed configuration taken at the next uplink
and reported, refusals counted by reason, the newest of several pushes, a
configuration that cuts the node off rolled back, secrets unreadable on the
broker and applied, forged NTP that cannot move the clock past the
authenticated time, and the radio cost of a mailbox with nothing in it.
"""

import json
import time

import paho.mqtt.client as paho
import pytest

import simstate

from petrel import downlink, store as _store
from petrel.broker import Broker
from petrel.collect import Collector
from petrel.simnode import DEVICE_ID, SimNode, node_config

import eventlog
from wakecheck import summary

UPLINK_EVERY = 2  # samples per uplink: an uplink every other wake keeps the scenario short


def health(node):
    """The newest health record the collector stored for the node."""
    for d in node.store.devices():
        if d["device"] == DEVICE_ID:
            return d["health"] or {}
    return {}


def run_uplinks(node, n, limit=20):
    """Boots until n uplinks were attempted (ok or not) -> those boots."""
    boots = []
    done = 0
    for _ in range(limit):
        boots += node.run(1)
        s = summary(boots[-1]) or {}
        if s.get("uplink") not in (None, "-", "backoff", "low-battery"):
            done += 1
            if done == n:
                break
    time.sleep(0.3)  # the collector's last commit
    return boots


class Field:
    def __init__(self, tmp):
        self.broker = Broker(tmp / "broker", persistence=True).start()
        b = self.broker
        self.node = SimNode(tmp / "flash", b, "vm", config=node_config(b, "psk", uplink_every=UPLINK_EVERY))
        self.store = _store.open(str(tmp / "readings.sqlite"))
        self.node.store = self.store
        self.col = Collector(self.store, {DEVICE_ID: self.node.hmac_key}, "localhost", b.ports["tls"],
                             ca=b.pki["ca"], client_id="test-collector", clock=self.node.world_ms).start()
        assert self.col.subscribed.wait(10)
        self.k_mac, self.k_enc = downlink.keys(self.node.hmac_key)
        self.version = 1000
        self.log = {}  # phase -> boots
        self.h = {}  # phase -> the newest health record stored at its end
        self.files = {}  # phase -> {name: the node's file at its end}

    def phase(self, name, boots):
        self.log[name] = boots
        self.h[name] = dict(health(self.node))
        self.files[name] = dict((f, self.node.read_file(f)) for f in ("config.json", "secrets.json"))

    def seal(self, kind, body, version=None, k_mac=None):
        if version is None:
            self.version += 1
            version = self.version
        return downlink.seal(kind, DEVICE_ID, version, body, k_mac or self.k_mac)

    def publish(self, kind, data, retain=True):
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-fleet")
        c.tls_set(ca_certs=self.broker.pki["ca"])
        c.connect("localhost", self.broker.ports["tls"])
        c.loop_start()
        info = c.publish(downlink.topic(DEVICE_ID, kind), data, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()
        c.disconnect()
        c.loop_stop()

    def push_config(self, **over):
        cfg = dict(self.node.config, **over)
        data = self.seal("config", downlink.config_body(json.dumps(cfg).encode()))
        self.publish("config", data)
        return self.version

    def close(self):
        self.col.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    f = Field(tmp_path_factory.mktemp("field"))
    node = f.node
    try:
        # power-on: the first uplink asks for the fleet side's time and waits for it
        f.phase("poweron", run_uplinks(node, 1))
        f.phase("settle", run_uplinks(node, 1))
        # a pushed configuration, taken at the next uplink, switched at the wake after
        f.cfg_v = f.push_config(sample_s=600)
        f.phase("config", run_uplinks(node, 2))
        # forged, replayed, older, oversized, malformed
        f.publish("config", f.seal("config", downlink.config_body(b"{}"), k_mac=bytes(32)))
        f.publish("config", f.seal("config", downlink.config_body(json.dumps(node.config).encode()), f.cfg_v))
        f.publish("config", f.seal("config", downlink.config_body(json.dumps(node.config).encode()), f.cfg_v - 1))
        f.publish("config", b"\x00" * 5000)  # past the node's max_packet: read past, never held whole
        f.publish("config", b"\xd1\x84garbage")
        f.phase("refusals", run_uplinks(node, 2))  # taken after one session, reported in the next
        # three pushes while it sleeps: the newest is taken
        for s in (900, 1200, 1500):
            f.newest = f.push_config(sample_s=300, uplink_every=UPLINK_EVERY, network_budget_ms=10000 + s)
        f.phase("newest", run_uplinks(node, 2))
        # a configuration that cannot reach the broker: on trial, rolled back after failed uplinks
        f.bad_v = f.push_config(broker=dict(node.config["broker"], port=1))
        f.phase("bad", run_uplinks(node, 5, limit=60))
        f.phase("after_bad", run_uplinks(node, 1, limit=40))
        # new Wi-Fi keys: the access point changes its password as the node gets the new one
        f.new_psk = "aa" * 32
        f.secrets_msg = f.seal("secrets", downlink.secrets_body({"wifi_psk": f.new_psk}, f.k_enc))
        f.publish("secrets", f.secrets_msg)
        f.phase("secrets", run_uplinks(node, 1))
        node.board.aps[0]["password"] = f.new_psk
        f.phase("secrets2", run_uplinks(node, 1, limit=40))
        # forged NTP, years ahead, after the authenticated time
        node.board.ntp_forge_s = 5 * 365 * 86400
        f.phase("forged_ntp", run_uplinks(node, 1, limit=40))
        # a maintenance hold: after the next uplink, 2 minutes at the REPL, then back on schedule
        node.board.ntp_forge_s = 0
        f.publish("hold", f.seal("hold", downlink.hold_body(2, 2000000000)))
        f.phase("hold", run_uplinks(node, 1, limit=40) + node.run(1))
        yield f
    finally:
        f.close()


def lines(boots, tag=None):
    """The log lines' messages with that tag, over these boots."""
    out = []
    for b in boots:
        for line in b.output.splitlines():
            e = eventlog.parse(line)
            if e and (tag is None or e[2] == tag):
                out.append(e[4])
    return out


def test_at_power_on_the_node_takes_the_fleet_sides_time_in_the_same_session(field):
    texts = lines(field.log["poweron"], "clock")
    assert not [t for t in texts if "no authenticated time" in t], texts
    h = field.h["settle"]  # the health record after the answer came
    assert 0 <= h["tunc"] <= 2, h  # a LAN round trip and the collector: within a second either side


def test_a_pushed_configuration_is_applied_at_the_next_uplink_and_reported(field):
    assert json.loads(field.files["config"]["config.json"])["sample_s"] == 600
    texts = lines(field.log["config"], "down")
    assert any("staged" in t for t in texts) and any("on trial" in t for t in texts), texts
    assert any("confirmed" in t for t in texts), texts
    assert field.h["config"]["cfgv"] == field.cfg_v


def test_forged_replayed_oversized_and_malformed_messages_change_nothing_and_are_reported(field):
    h = field.h["refusals"]
    why = dict(p.split(":") for p in h["dwhy"].split())
    assert why.get("forged") == "1" and why.get("replay") == "2", h["dwhy"]  # the same version, an older one
    assert why.get("oversized") == "1" and why.get("malformed") == "1", h["dwhy"]
    assert h["dref"] == 5 and h["cfgv"] == field.cfg_v
    assert field.files["refusals"]["config.json"] == field.files["config"]["config.json"]
    assert lines(field.log["refusals"], "crash") == []


def test_a_node_asleep_through_several_pushes_takes_only_the_newest(field):
    staged = [t for t in lines(field.log["newest"], "down") if "staged" in t]
    assert len(staged) == 1 and ("v%d" % field.newest) in staged[0], staged
    assert json.loads(field.files["newest"]["config.json"])["network_budget_ms"] == 11500
    assert field.h["newest"]["cfgv"] == field.newest


def test_a_configuration_that_cuts_the_node_off_is_rolled_back_by_itself(field):
    texts = lines(field.log["bad"], "down")
    assert any("reverted" in t for t in texts), texts
    assert json.loads(field.files["after_bad"]["config.json"])["broker"]["port"] != 1
    h = field.h["after_bad"]
    assert "reverted" in h["dwhy"] and "uplinks failed" in h["cfgerr"] and h["cfgv"] == field.newest, h
    ups = [(summary(b) or {}).get("uplink") for b in field.log["after_bad"]]
    assert "ok" in ups, ups  # back on the broker with the previous configuration


def test_pushed_secrets_are_unreadable_on_the_broker_and_applied(field):
    assert field.new_psk.encode() not in field.secrets_msg and b"wifi_psk" not in field.secrets_msg
    sec = json.loads(field.files["secrets2"]["secrets.json"])
    assert sec["wifi_psk"] == field.new_psk and sec["hmac_key"] == field.node.hmac_key.hex()
    ups = [(summary(b) or {}).get("uplink") for b in field.log["secrets2"]]
    assert "ok" in ups, ups  # through the access point's new password
    assert field.h["secrets2"]["secv"] > 0
    for b in field.log["secrets"] + field.log["secrets2"]:
        assert field.new_psk not in b.output  # never on the serial log


def test_forged_ntp_cannot_move_the_clock_past_the_authenticated_time(field):
    refused = [t for t in lines(field.log["forged_ntp"], "clock") if "refused" in t]
    assert refused, lines(field.log["forged_ntp"], "clock")
    board = field.node.board
    assert abs(board.rtc_us() - board.true_rtc_us()) < 120 * 1000000  # the RTC stays near the truth
    assert field.h["forged_ntp"]["ntp_refused"] >= 1


def test_a_maintenance_hold_keeps_the_node_at_the_repl_then_back_on_its_schedule(field):
    boots = field.log["hold"]
    held = [b for b in boots if any("hold: REPL free for 2 min" in t for t in lines([b], "maintenance"))]
    assert len(held) == 1, [b.output[-500:] for b in boots]
    b = held[0]
    assert any("hold over" in t for t in lines([b], "maintenance"))
    assert b.end == "halt" and b.halt_cause == simstate.DEEPSLEEP_RESET  # not a watchdog reset
    assert b.awake_ms >= 120000  # the two minutes at the REPL
    after = boots[boots.index(b) + 1]
    assert after.wake_reason == 4 and summary(after)  # the next wake: the timer, a normal wake
    assert not [x for x in boots if x.halt_cause == simstate.WDT_RESET]
