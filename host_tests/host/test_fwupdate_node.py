"""MicroPython firmware updates end to end (issue 17, item 3): the firmware
on the simulated node (MicroPython VM, littlefs) built with the OTA partition
table (ESP32_GENERIC-OTA: ota_0 flashed, ota_1 free, otadata), a real
Mosquitto with TLS-PSK, the collector storing what arrives, and the host's
own `petrel update publish --target fw` on the other side. The board's
partitions and the slot the bootloader started cross the VM's one process
per boot in its snapshot (boards/sim/simsave.py).

One node lives through the scenario (the `field` fixture); each test checks
one part of it:

- v3, a valid ESP app image (boards/sim/espimage.py) of about 48 KB in chunks
  of 2048, downloaded over several uplink wakes straight into ota_1, read
  back, set_boot() and a reset; its one trial wake uplinks and confirms
  (otadata VALID); every later boot runs ota_1; the health record says fwv 3.
- v4, whose trial wake cannot reach the access point: the ladder's
  before_sleep() resets instead of sleeping, the bootloader rolls back to
  ota_1 (v3), the health record says why (uperr) and fwv stays 3; the host
  refuses to publish v4 again, and a v4 manifest sealed by hand is refused by
  the node ("reverted") with nothing written to the flash.
- every reading the node took arrived in the collector's store.
"""

import json
import os
import time

import paho.mqtt.client as paho
import pytest

import espimage
import simota

from petrel import cli, downlink, store as _store, update
from petrel.broker import Broker
from petrel.collect import Collector
from petrel.simnode import DEVICE_ID, SimNode, node_config

import eventlog
from test_downlink_host import registry
from wakecheck import accepted, summary

CHUNK = 2048
UPDATE_CHUNKS = 8  # a session takes what the node's FETCH_BYTES holds: 7 chunks of 2048
CHANNELS = (("t", 100), ("rh", 10), ("bat", 1000))
V_GOOD, V_BAD = 3, 4
IMAGE_BYTES = 48 * 1024  # the DRAM segment: the image is a few hundred bytes more


def fw_image(version_text):
    """A valid ESP32 app image (what set_boot() and the bootloader accept) of
    about IMAGE_BYTES: the app descriptor, a DRAM segment of random bytes (so
    no two images share chunks), a little IRAM."""
    return espimage.build([(0x3F400020, espimage.app_desc(version_text)), (0x3FFB0000, os.urandom(IMAGE_BYTES)),
                           (0x40080000, b"\x36\x41\x00\x1d\xf0\x00\x00\x00")])


def petrel(*argv):
    """The real command line -> exit code."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def events(boots, tag):
    out = []
    for b in boots:
        for line in b.output.splitlines():
            e = eventlog.parse(line)
            if e and e[2] == tag:
                out.append(e[4])
    return out


def said(boots, text):
    return [b for b in boots if text in b.output]


class Field:
    def __init__(self, tmp):
        self.tmp = tmp
        self.broker = Broker(tmp / "broker").start()
        b = self.broker
        cfg = node_config(b, "psk", uplink_every=1, update_chunks=UPDATE_CHUNKS)

        def ota_build(board):  # flashed with ESP32_GENERIC-OTA before its first power-on
            board.partition_table = "ota"

        self.node = SimNode(tmp / "flash", b, "vm", config=cfg, prepare=ota_build)
        self.store = _store.open(str(tmp / "readings.sqlite"))
        self.col = Collector(self.store, {DEVICE_ID: self.node.hmac_key}, "localhost", b.ports["tls"],
                             ca=b.pki["ca"], client_id="test-collector", clock=self.node.world_ms).start()
        assert self.col.subscribed.wait(10)
        self.registry = registry(tmp / "devices.sqlite", {DEVICE_ID: self.node.hmac_key})
        self.boots = []  # every boot, each with .slot: the app slot the bootloader started for it
        self.log = {}  # phase -> boots
        self.records = {}  # phase -> health records stored during it
        self.rc = {}
        self.t0 = time.monotonic()

    def health(self):
        return [json.loads(r[0]) for r in self.store._read(
            "SELECT fields FROM health WHERE device = ? ORDER BY seq", (DEVICE_ID,))]

    def run1(self):
        slot = self.node.board.running_app  # chosen at the end of the last boot, for this one
        b = self.node.run(1)[0]
        b.slot = slot
        self.boots.append(b)
        return b

    def run_until(self, text, limit):
        """Boots until one says `text`, or `limit` boots -> those boots."""
        out = []
        for _ in range(limit):
            out.append(self.run1())
            if text in out[-1].output:
                break
        return out

    def run_uplinks(self, n, limit=10):
        out, done = [], 0
        for _ in range(limit):
            out.append(self.run1())
            if (summary(out[-1]) or {}).get("uplink") not in (None, "-", "backoff", "low-battery"):
                done += 1
                if done == n:
                    break
        return out

    def phase(self, name, boots, first_record):
        time.sleep(0.3)  # the collector's last commit
        self.log[name] = boots
        self.records[name] = self.health()[first_record:]

    def broker_args(self):
        return ["--registry", self.registry, "--host", "localhost", "--port", self.broker.ports["tls"],
                "--ca", self.broker.pki["ca"]]

    def publish(self, img, version, name):
        return petrel("update", "publish", img, "--target", "fw", "--version", version, "--name", name,
                      "--devices", DEVICE_ID, "--chunk", CHUNK, *self.broker_args())

    def retain(self, topic, data):
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-fleet-" + os.urandom(3).hex())
        c.tls_set(ca_certs=str(self.broker.pki["ca"]))
        c.connect("localhost", self.broker.ports["tls"])
        c.loop_start()
        info = c.publish(topic, data, qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published()
        c.disconnect()
        c.loop_stop()

    def otadata(self):
        return simota.read_otadata(self.node.board)

    def slot_bytes(self, label, n):
        return simota.read(self.node.board, simota.find(self.node.board, label=label), 0, n)

    def close(self):
        self.col.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fwupdate")
    f = Field(tmp)
    node = f.node
    try:
        f.phase("poweron", f.run_uplinks(1), 0)

        # ---- v3: downloaded over several wakes into ota_1, switched, confirmed in its trial wake
        first = len(f.health())
        f.good = fw_image("1.29.0-p3")
        f.good_path = tmp / "good.bin"
        f.good_path.write_bytes(f.good)
        f.good_plan = update.Plan("fw", f.good, CHUNK, V_GOOD, "1.29.0-p3")
        f.rc["good"] = f.publish(f.good_path, V_GOOD, "1.29.0-p3")
        boots = f.run_until("set to boot from", limit=12)
        boots += f.run_uplinks(3)  # the trial wake, then two deep-sleep wakes on ota_1
        f.phase("good", boots, first)
        f.otadata_good = f.otadata()
        f.ota1_good = f.slot_bytes("ota_1", len(f.good))

        # ---- v4: its trial wake finds no access point: reset, rolled back by the bootloader
        first = len(f.health())
        f.bad = fw_image("1.29.0-p4")
        f.bad_path = tmp / "bad.bin"
        f.bad_path.write_bytes(f.bad)
        f.bad_plan = update.Plan("fw", f.bad, CHUNK, V_BAD, "1.29.0-p4")
        f.rc["bad"] = f.publish(f.bad_path, V_BAD, "1.29.0-p4")
        boots = f.run_until("set to boot from", limit=12)
        aps, node.board.aps = node.board.aps, []
        f.trial_bad = f.run1()
        node.board.aps = aps
        boots.append(f.trial_bad)
        boots += f.run_uplinks(2)  # rolled back; its health record; one more
        f.phase("bad", boots, first)
        f.otadata_bad = f.otadata()

        # ---- v4 again: the host refuses it; sealed by hand, the node refuses it
        first = len(f.health())
        f.rc["again"] = f.publish(f.bad_path, V_BAD, "1.29.0-p4")
        f.ota0_before = f.slot_bytes("ota_0", len(f.bad))
        with downlink.Versions(f.registry) as versions:
            v = versions.next(DEVICE_ID)
        k_mac = downlink.keys(node.hmac_key)[0]
        f.retain(downlink.topic(DEVICE_ID, "update"), downlink.seal("update", DEVICE_ID, v, f.bad_plan.body, k_mac))
        boots = f.run_uplinks(2)  # the manifest refused, then a record of it
        f.phase("again", boots, first)
        f.ota0_after = f.slot_bytes("ota_0", len(f.bad))
        f.elapsed = time.monotonic() - f.t0
        yield f
    finally:
        f.close()


# ------------------------------------------------------------ v3 taken and confirmed
def test_a_firmware_is_downloaded_over_several_wakes_into_the_next_ota_slot(field):
    assert field.rc["good"] == 0
    boots = field.log["good"]
    fetched = [t for t in events(boots, "update") if t.startswith("fetched")]
    assert len(fetched) >= 3, fetched  # 24 chunks, 7 a session
    switch = said(boots, "set to boot from ota_1")
    assert len(switch) == 1 and switch[0].why == "machine.reset()", [b.why for b in boots]
    assert all(b.slot == "ota_0" for b in boots[:boots.index(switch[0]) + 1])
    assert field.ota1_good == field.good  # the image, byte for byte
    progress = [r["upd"] for r in field.records["good"] if r.get("upd")]
    assert progress and all(u.startswith("fw v3 ") for u in progress), progress
    assert not said(boots, "Traceback")


def test_the_trial_wake_uplinks_and_confirms_and_later_boots_run_the_new_slot(field):
    boots = field.log["good"]
    switch = said(boots, "set to boot from ota_1")[0]
    after = boots[boots.index(switch) + 1:]
    trial = after[0]
    assert trial.slot == "ota_1" and "v3 (1.29.0-p3) on trial in ota_1" in trial.output, trial.output[-2000:]
    assert (summary(trial) or {}).get("uplink") == "ok"
    assert "v3 (1.29.0-p3) confirmed: uplink in its trial wake" in trial.output
    assert trial.end == "halt" and trial.why.startswith("deepsleep")  # confirmed: it sleeps, no reset
    assert len(after) >= 3 and all(b.slot == "ota_1" and b.why.startswith("deepsleep") for b in after)
    e = field.otadata_good
    active = simota.active(e)
    assert e[active][1] == simota.VALID and (e[active][0] - 1) % 2 == 1, e  # ota_1, marked valid
    recs = field.records["good"]
    assert any(r.get("fwt") == 1 for r in recs), recs  # the trial's own record
    last = recs[-1]
    assert (last["fwv"], last["fwt"], last["upd"]) == (V_GOOD, 0, ""), last


# ------------------------------------------------------------ v4 rolled back
def test_a_firmware_whose_trial_wake_cannot_uplink_resets_and_is_rolled_back(field):
    assert field.rc["bad"] == 0
    boots = field.log["bad"]
    switch = said(boots, "set to boot from ota_0")
    assert len(switch) == 1, [b.why for b in boots]
    t = field.trial_bad
    assert boots.index(t) == boots.index(switch[0]) + 1
    assert t.slot == "ota_0" and "v4 (1.29.0-p4) on trial in ota_0" in t.output, t.output[-2000:]
    assert (summary(t) or {}).get("uplink", "").startswith("wifi:"), summary(t)
    assert "v4 unconfirmed (no uplink in its trial wake): reset to roll back" in t.output
    assert t.why == "machine.reset()"  # never a deep sleep on an unconfirmed image
    after = boots[boots.index(t) + 1:]
    assert after and all(b.slot == "ota_1" for b in after)  # the bootloader went back to v3
    assert "v4 rolled back: no uplink in its trial wake; running ota_1 again" in after[0].output
    assert any((summary(b) or {}).get("uplink") == "ok" for b in after)
    e = field.otadata_bad
    assert simota.ABORTED in (e[0][1], e[1][1]), e
    last = field.records["bad"][-1]
    assert (last["fwv"], last["fwt"]) == (V_GOOD, 0), last
    assert "v4 rolled back: no uplink in its trial wake" in last["uperr"], last


def test_a_rolled_back_firmware_is_refused_again_by_the_host_and_by_the_node(field):
    assert field.rc["again"] == 2  # the host: that version was published to the device already
    boots = field.log["again"]
    refused = [t for t in events(boots, "down") if "update refused: reverted" in t]
    assert refused == ["update refused: reverted (fw v4 was rolled back)"], events(boots, "down")
    assert not said(boots, "set to boot from") and all(b.slot == "ota_1" for b in boots)
    last = field.records["again"][-1]
    why = dict(p.split(":") for p in last["dwhy"].split())
    assert int(why.get("reverted", 0)) >= 1, last
    assert (last["fwv"], last["upd"], last["uperr"]) == (V_GOOD, "", "update: fw v4 was rolled back"), last
    assert field.ota0_after == field.ota0_before  # nothing written to the update slot


# ------------------------------------------------------------ nothing lost
def test_every_reading_the_node_took_arrived(field):
    from decimal import Decimal

    boots = field.boots
    assert (summary(boots[-1]) or {}).get("uplink") == "ok" and summary(boots[-1])["queue"] == "0"
    for ch, scale in CHANNELS:
        stored = sorted(field.store.readings(device=DEVICE_ID, channel=ch), key=lambda r: r.rid)
        got = [int(Decimal(r.exact) * scale) for r in stored]
        took = accepted(boots, ch)
        assert took and got == took, (ch, len(got), len(took))


def test_what_it_took(field):
    """The numbers (printed with -s)."""
    for name in field.log:
        bs = field.log[name]
        print("%-8s %2d wakes  rx %6d B  tx %6d B" % (name, len(bs), sum(b.rx_bytes for b in bs),
                                                       sum(b.tx_bytes for b in bs)))
    print("image %d B in %d chunks; scenario %.1f s, %d boots" % (
        len(field.good), len(field.good_plan.msgs), field.elapsed, len(field.boots)))
    assert field.elapsed < 120
