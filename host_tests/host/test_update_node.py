"""App updates end to end (issue 17): the firmware on the simulated node
(MicroPython VM, littlefs), a real Mosquitto with persistence and TLS-PSK,
the collector storing what arrives, and the host's own `petrel update`
(tools/petrel/update.py: build, publish, advance) on the other side.

One node lives through the scenario (the `field` fixture); each test checks
one part of it, so the first failure does not hide the rest:

- main: the firmware, its version changed (about 119 KB), published in 59
  chunks and taken over several uplink wakes, with the broker killed (its
  state as last saved) and Wi-Fi gone between them; then switched in, on
  trial, confirmed by its uplink; the health records show the progress, the
  version and the trial's end; the boot log the new version.
- refusals: a manifest sealed with the wrong key, one with an older version,
  and a chunk that does not match its hash (retained under the real prefix):
  refused, counted, nothing written to the running slot or data/appslot.
- three bad images, each rolled back by itself and reported: one whose app
  cannot be imported (v8), one whose wake hangs (v9, the watchdog), one whose
  MQTT client never reaches the broker (v10, the canary of a rollout to two
  devices: `petrel update advance` halts it, the second device never gets a
  manifest).
- every reading the node took arrived in the collector's store, once.
"""

import json
import os
import signal
import subprocess
import time

import paho.mqtt.client as paho
import pytest

import appslot
from petrel import cli, downlink, paths, simflash, store as _store, update
from petrel.broker import Broker
from petrel.collect import Collector
from petrel.simnode import DEVICE_ID, SimNode, node_config

import eventlog
from test_downlink_host import Watcher, registry
from wakecheck import accepted, summary

UPLINK_EVERY = 1  # every wake an uplink: each carries chunks, and few wakes make the scenario
UPDATE_CHUNKS = 8  # a session takes what the node's FETCH_BYTES holds: 7 chunks of 2048
CHUNK = 2048
OTHER = "node-2"  # a second registered device: keys in the registry, no node
CHANNELS = (("t", 100), ("rh", 10), ("bat", 1000))
V_MAIN, V_OLD, V_CRASH, V_HANG, V_NOBROKER = 7, 5, 8, 9, 10

# A VM script: each file under the given paths with its size and SHA-256
# ("sums"), or one file's bytes in hex ("cat"), read from the node's littlefs
# image without writing it (what a deploy tool would see over USB between
# wakes). Run with a heap that holds the image (simflash.Image's own reads run
# out of heap once a slot sits beside the factory app: they return None).
SNAPSHOT = r"""
import hashlib, os, sys, vfs
from binascii import hexlify
from norflash import NorFlash

vfs.mount(vfs.VfsLfs2(NorFlash.load(sys.argv[1]).block_device()), "/_f")
if sys.argv[2] == "cat":
    try:
        with open("/_f/" + sys.argv[3], "rb") as f:
            print(hexlify(f.read()).decode())
    except OSError:
        print("-")
    sys.exit(0)

def one(p):
    h = hashlib.sha256()
    n = 0
    with open(p, "rb") as f:
        while True:
            b = f.read(4096)
            if not b:
                break
            h.update(b)
            n += len(b)
    print(p[4:], n, hexlify(h.digest()).decode())

def walk(p):
    for name, kind, *_ in os.ilistdir(p):
        if kind == 0x4000:
            walk(p + "/" + name)
        else:
            one(p + "/" + name)

for name in sys.argv[3:]:
    p = "/_f/" + name
    try:
        kind = os.stat(p)[0]
    except OSError:
        continue
    if kind & 0x4000:
        walk(p)
    else:
        one(p)
"""


def image_of(tmp, tag, version_text, patches=()):
    """The firmware (firmware/ and lib/ of this tree) with app/version.py's
    VERSION changed and each (file, old, new) text patch applied, built for
    the sim profile (x64 .mpy, as the VM loads them) by `petrel update`'s own
    build -> the image's path."""
    fw, lib = tmp / ("fw-" + tag), tmp / ("lib-" + tag)
    simflash._copy_tree(paths.FIRMWARE, fw)
    simflash._copy_tree(paths.LIB, lib)
    ver = fw / "app" / "version.py"
    text = ver.read_text()
    assert 'VERSION = "0.6.0"' in text
    ver.write_text(text.replace('VERSION = "0.6.0"', 'VERSION = "%s"' % version_text))
    for rel, old, new in patches:
        f = (fw if rel.startswith("app/") else lib) / (rel[4:] if rel.startswith("lib/") else rel)
        text = f.read_text()
        if old is None:
            f.write_text(text + new)
        else:
            assert old in text, (rel, old)  # the fault this image carries is really in it
            f.write_text(text.replace(old, new))
    img, _, arch = update.build("sim", firmware=fw, lib=lib)
    assert arch == "x64"
    p = tmp / (tag + ".img")
    p.write_bytes(img)
    return p


def petrel(*argv):
    """The real command line -> exit code."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def events(boots, tag):
    """(message) of every log line with that tag, over these boots."""
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
        self.broker = Broker(tmp / "broker", persistence=True).start()
        b = self.broker
        cfg = node_config(b, "psk", uplink_every=UPLINK_EVERY, update_chunks=UPDATE_CHUNKS)
        self.node = SimNode(tmp / "flash", b, "vm", config=cfg)
        self.store = _store.open(str(tmp / "readings.sqlite"))
        self.col = Collector(self.store, {DEVICE_ID: self.node.hmac_key}, "localhost", b.ports["tls"],
                             ca=b.pki["ca"], client_id="test-collector", clock=self.node.world_ms).start()
        assert self.col.subscribed.wait(10)
        self.registry = registry(tmp / "devices.sqlite", {DEVICE_ID: self.node.hmac_key, OTHER: os.urandom(32)})
        self.k_mac = downlink.keys(self.node.hmac_key)[0]
        self.log = {}  # phase -> boots
        self.cost = {}  # phase -> {wakes, tx, rx, radio_ms}
        self.records = {}  # phase -> the health records stored during it, in order
        self.snap = {}  # name -> snapshot of the running slot and data/appslot
        self.rc = {}  # what each petrel command returned
        self.t0 = time.monotonic()

    # ------------------------------------------------------------ the world
    def health(self):
        return [json.loads(r[0]) for r in self.store._read(
            "SELECT fields FROM health WHERE device = ? ORDER BY seq", (DEVICE_ID,))]

    def phase(self, name, boots, first_record):
        time.sleep(0.3)  # the collector's last commit
        self.log[name] = boots
        self.records[name] = self.health()[first_record:]
        self.cost[name] = {"wakes": len(boots), "tx": sum(b.tx_bytes for b in boots),
                           "rx": sum(b.rx_bytes for b in boots),
                           "radio_ms": sum(b.phases.get("radio", 0) + b.phases.get("tls", 0) for b in boots) / 1000}

    def run_uplinks(self, n, limit=20):
        """Boots until n uplinks were attempted (ok or not) -> those boots."""
        boots, done = [], 0
        for _ in range(limit):
            boots += self.node.run(1)
            s = summary(boots[-1]) or {}
            if s.get("uplink") not in (None, "-", "backoff", "low-battery"):
                done += 1
                if done == n:
                    break
        return boots

    def run_until(self, text, limit=30):
        """Boots until one says `text` on its log, or `limit` boots -> those
        boots (the scenario goes on either way: the tests say what is missing)."""
        boots = []
        for _ in range(limit):
            boots += self.node.run(1)
            if text in boots[-1].output:
                break
        return boots

    def broker_args(self):
        return ["--registry", self.registry, "--host", "localhost", "--port", self.broker.ports["tls"],
                "--ca", self.broker.pki["ca"]]

    def publish(self, img, version, name, devices=DEVICE_ID, chunk=CHUNK, canary=0):
        return petrel("update", "publish", img, "--version", version, "--name", name, "--devices", devices,
                      "--chunk", chunk, "--canary", canary, *self.broker_args())

    def retain(self, topic, data):
        """A retained QoS 1 message, as anyone allowed to publish there could."""
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-fleet-" + os.urandom(3).hex())
        c.tls_set(ca_certs=str(self.broker.pki["ca"]))
        c.connect("localhost", self.broker.ports["tls"])
        c.loop_start()
        info = c.publish(topic, data, qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published()
        c.disconnect()
        c.loop_stop()

    def seal(self, plan, k_mac=None):
        """A manifest for plan sealed with the registry's next downlink version."""
        with downlink.Versions(self.registry) as versions:
            v = versions.next(DEVICE_ID)
        return downlink.seal("update", DEVICE_ID, v, plan.body, k_mac or self.k_mac)

    def kill_broker(self):
        """The broker killed (SIGKILL): what it had saved is what comes back.
        Its state is saved first (SIGUSR1, as its autosave does), so the
        retained chunks and the sessions survive as a real broker's would."""
        db = self.broker.folder / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        self.broker.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not (db.exists() and db.stat().st_mtime_ns != before):
            assert time.monotonic() < deadline, "mosquitto did not save its state"
            time.sleep(0.05)
        time.sleep(0.2)  # written whole
        self.col.subscribed.clear()
        self.broker.kill()

    def restart_broker(self):
        self.broker.restart()
        assert self.col.subscribed.wait(60), "the collector did not come back"

    def _flash(self, *args):
        script = self.tmp / "snapshot.py"
        script.write_text(SNAPSHOT)
        env = dict(os.environ, MICROPYPATH=str(paths.SIM))
        p = subprocess.run([paths.micropython_binary(), "-X", "heapsize=16M", str(script),
                            str(self.node.image.path)] + list(args), env=env, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr
        return p.stdout

    def snapshot(self, *names):
        """{path: (size, sha256)} of the node's files under names."""
        out = {}
        for line in self._flash("sums", *names).splitlines():
            path, size, sha = line.split()
            out[path] = (int(size), sha)
        return out

    def read(self, name):
        """A file's bytes on the node's flash, or None."""
        text = self._flash("cat", name).strip()
        return None if text == "-" else bytes.fromhex(text)

    def running(self):
        return appslot._parse(self.read(appslot.PATH))

    def close(self):
        self.col.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("update")
    f = Field(tmp)
    node = f.node
    try:
        f.phase("poweron", f.run_uplinks(2), 0)

        # ---- main: about 119 KB over several wakes, the broker killed and Wi-Fi lost on the way
        f.main_img = image_of(tmp, "main", "0.7.0-upd")
        f.main_plan = update.Plan("app", f.main_img.read_bytes(), CHUNK, V_MAIN, "0.7.0-upd")
        first = len(f.health())
        wear0 = node.flash_wear()
        f.rc["main"] = f.publish(f.main_img, V_MAIN, "0.7.0-upd")
        boots = f.run_uplinks(3)  # the manifest, then two sessions of chunks
        f.kill_broker()
        f.killed = f.run_uplinks(1)  # the broker is gone
        f.restart_broker()
        boots += f.killed + f.run_uplinks(1)
        aps, node.board.aps = node.board.aps, []
        f.no_wifi = f.run_uplinks(2)  # the access point is gone
        node.board.aps = aps
        boots += f.no_wifi
        boots += f.run_until("staged in slot", limit=30)
        boots += f.run_until("confirmed by an uplink", limit=10)
        boots += f.run_uplinks(1)  # a health record from the confirmed app
        f.main_wear = tuple(a - b for a, b in zip(node.flash_wear(), wear0))
        f.phase("main", boots, first)
        f.state_main = f.running()
        f.snap["confirmed"] = f.snapshot("slots/1", appslot.PATH)

        # ---- refusals: a forged manifest, an older version, a chunk that does not match its hash
        first = len(f.health())
        crash_files = {"app/__init__.py": b"",
                       "app/ladder.py": b"raise RuntimeError('v8 cannot start')\n"}
        for p, data in update.unpack(f.main_img.read_bytes()):  # real files beside it: a few chunks of 512
            if p in ("lib/eventlog.mpy", "lib/rtcmem.mpy"):
                crash_files[p] = data
        crash = update.pack(crash_files)
        f.crash_img = tmp / "crash.img"
        f.crash_img.write_bytes(crash)
        f.crash_plan = update.Plan("app", crash, 512, V_CRASH, "0.8.0-crash")
        f.retain(downlink.topic(DEVICE_ID, "update"), f.seal(f.crash_plan, k_mac=bytes(32)))  # not its key
        old = update.Plan("app", f.main_img.read_bytes(), CHUNK, V_OLD, "0.5.0")
        f.retain(downlink.topic(DEVICE_ID, "update"), f.seal(old))  # sealed right, but older than v7
        boots = f.run_uplinks(2)
        f.phase("manifests", boots, first)
        first = len(f.health())
        f.rc["crash"] = f.publish(f.crash_img, V_CRASH, "0.8.0-crash", chunk=512)
        m = f.crash_plan.msgs[1]
        f.retain(f.crash_plan.topics()[1], m[:100] + bytes([m[100] ^ 1]) + m[101:])  # one bit off
        boots = f.run_uplinks(4)  # the manifest; the chunks, twice refused; a record of it
        f.refused_img = f.read("data/update.img")
        f.phase("tampered", boots, first)
        f.snap["refusals"] = f.snapshot("slots/1", appslot.PATH)

        # ---- v8: its app cannot be imported: rolled back at once, reset
        first = len(f.health())
        f.retain(f.crash_plan.topics()[1], m)  # the fleet side puts the right chunk back
        boots = f.run_until("rolled back to slot 1", limit=10)
        boots += f.run_uplinks(1)
        f.phase("crash", boots, first)

        # ---- v9: its wake hangs: the watchdog, twice, then rolled back
        first = len(f.health())
        f.hang_img = image_of(tmp, "hang", "0.9.0-hang", [(
            "app/cycle.py", None,
            "\n\ndef _waits_for_ever(self, alarm):  # v9's bug: the uplink waits on what never comes\n"
            "    while True:\n"
            "        time.sleep_ms(100)\n\n\nWake.send = _waits_for_ever\n")])
        f.rc["hang"] = f.publish(f.hang_img, V_HANG, "0.9.0-hang")
        boots = f.run_until("rolled back to slot 1", limit=40)
        boots += f.run_uplinks(1)
        f.phase("hang", boots, first)

        # ---- v10: never reaches its broker; the canary of a rollout to two devices
        first = len(f.health())
        f.nobroker_img = image_of(tmp, "nobroker", "0.10.0-nobroker", [
            ("lib/mqtt_setup.py", 'b"\\0\\4MQTT\\4"', 'b"\\0\\4MQTX\\4"')])  # a CONNECT the broker refuses
        f.rc["canary"] = f.publish(f.nobroker_img, V_NOBROKER, "0.10.0-nobroker", devices="%s,%s" % (DEVICE_ID, OTHER),
                                   canary=1)
        boots = f.run_uplinks(2)  # the manifest, the first chunks
        time.sleep(0.3)
        f.rc["advance_waiting"] = petrel("update", "advance", "--store", tmp / "readings.sqlite", *f.broker_args())
        f.rollout_waiting = update.rollouts(f.registry)[0]
        boots += f.run_until("rolled back to slot 1", limit=40)
        boots += f.run_uplinks(1)
        f.phase("nobroker", boots, first)
        f.rc["advance"] = petrel("update", "advance", "--store", tmp / "readings.sqlite", *f.broker_args())
        f.rollout = update.rollouts(f.registry)[0]
        w = Watcher(f.broker.ports["plain"], downlink.topic(OTHER, "update"))
        time.sleep(0.5)
        w.close()
        f.other_got = w.got
        f.all_boots = [b for name in f.log for b in f.log[name]]
        f.elapsed = time.monotonic() - f.t0
        yield f
    finally:
        f.close()


def progress(records):
    return [r.get("upd") for r in records if r.get("upd")]


# ------------------------------------------------------------ the update taken
def test_a_60kb_update_is_taken_over_several_wakes_through_a_broker_kill_and_lost_wifi(field):
    assert field.rc["main"] == 0
    size = len(field.main_img.read_bytes())
    assert size >= 60 * 1024
    boots = field.log["main"]
    fetched = [t for t in events(boots, "update") if t.startswith("fetched")]
    assert len(fetched) >= 5, fetched  # several wakes, each within its budget
    assert all(b.awake_ms < field.node.config["network_budget_ms"] + 5000 for b in boots)
    # the broker gone, then Wi-Fi gone: those uplinks failed, and the download went on after them
    assert [(summary(b) or {}).get("uplink") for b in field.killed][-1].startswith("broker"), \
        [summary(b) for b in field.killed]
    assert all((summary(b) or {}).get("uplink", "").startswith("wifi:") for b in field.no_wifi), \
        [summary(b) for b in field.no_wifi]
    # the health records: the download's progress, one chunk count after another, never back
    ups = progress(field.records["main"])
    done = [int(u.split()[2].split("/")[0]) for u in ups]
    assert ups and all(u.startswith("app v7 ") and u.endswith("/%d" % len(field.main_plan.msgs)) for u in ups), ups
    assert done == sorted(done) and len(set(done)) >= 4, ups
    after_kill = boots.index(field.killed[-1])
    assert said(boots[after_kill + 1:], "fetched")  # resumed after the broker came back
    assert not said(boots, "Traceback")


def test_the_update_switches_in_on_trial_is_confirmed_and_reported(field):
    boots = field.log["main"]
    staged = said(boots, "app v7 (0.7.0-upd) staged in slot 1")
    assert len(staged) == 1
    trial = boots[boots.index(staged[0]) + 1]
    assert "slot 1 v7 (0.7.0-upd) switched in: on trial" in trial.output
    assert "fw=0.7.0-upd" in trial.output and "slot 1 v7 confirmed by an uplink" in trial.output
    for b in boots[boots.index(trial):]:
        assert "fw=0.7.0-upd" in b.output and b.end == "halt" and b.why.startswith("deepsleep"), b.output[-2000:]
    recs = field.records["main"]
    assert any(r.get("appv") == V_MAIN and r.get("appt") == 1 for r in recs)  # the trial's own record
    last = recs[-1]
    assert (last["appv"], last["appt"], last["aprb"], last["upd"]) == (V_MAIN, 0, 0, ""), last
    s = field.state_main
    assert (s.active, s.v_active, s.trial, s.rollbacks) == (1, V_MAIN, 0, 0)
    assert field.read("data/update.img") is None  # deleted once staged


# ------------------------------------------------------------ refusals
def test_a_forged_and_an_older_manifest_are_refused_and_counted(field):
    before = field.records["main"][-1]
    after = field.records["manifests"][-1]
    why = dict(p.split(":") for p in after["dwhy"].split())
    was = dict(p.split(":") for p in (before.get("dwhy") or "").split())
    assert int(why.get("forged", 0)) - int(was.get("forged", 0)) == 1, (before, after)
    assert int(why.get("stale", 0)) - int(was.get("stale", 0)) == 1, (before, after)
    assert after["dref"] - before.get("dref", 0) == 2
    assert "v5" in after["uperr"] and "running v7" in after["uperr"], after
    assert after["appv"] == V_MAIN and after["upd"] == ""  # no download started


def test_a_chunk_that_does_not_match_its_hash_is_refused_and_not_written(field):
    assert field.rc["crash"] == 0
    texts = events(field.log["tampered"], "update")
    assert [t for t in texts if "refused: forged (chunk 1 does not match its hash)" in t], texts
    last = field.records["tampered"][-1]
    assert last["upd"] == "app v8 1/%d" % len(field.crash_plan.msgs) and "chunk 1 does not match its hash" in last["uperr"], last
    why = dict(p.split(":") for p in last["dwhy"].split())
    assert int(why["forged"]) >= 3  # the forged manifest and the chunk, at each session that took it
    assert field.refused_img == field.crash_img.read_bytes()[:512]  # chunk 0 alone on flash


def test_refusals_write_nothing_to_the_running_slot(field):
    assert field.snap["confirmed"] and field.snap["refusals"] == field.snap["confirmed"]
    assert any(p.startswith("slots/1/app/") for p in field.snap["confirmed"])


# ------------------------------------------------------------ rolled back by itself
def rollback(field, name, why):
    boots = field.log[name]
    back = said(boots, "rolled back to slot 1 v7")
    assert len(back) == 1, [b.output[-1500:] for b in boots[-4:]]
    assert why in back[0].output, back[0].output[-3000:]
    after = boots[boots.index(back[0]) + 1:]
    assert after and all("fw=0.7.0-upd" in b.output for b in after)
    assert any((summary(b) or {}).get("uplink") == "ok" for b in after)
    return field.records[name][-1]


def test_an_update_whose_app_cannot_be_imported_is_rolled_back_at_once(field):
    boots = field.log["crash"]
    trial = said(boots, "switched in: on trial")
    assert len(trial) == 1 and trial[0].why == "machine.reset()"  # not one wake more on it
    last = rollback(field, "crash", "import: RuntimeError: v8 cannot start")
    assert (last["appv"], last["appt"], last["aprb"]) == (V_MAIN, 0, 1), last
    assert "import: RuntimeError: v8 cannot start" in last["aperr"]


def test_an_update_that_hangs_is_rolled_back_after_the_watchdog(field):
    assert field.rc["hang"] == 0
    boots = field.log["hang"]
    hung = [b for b in boots if "fw=0.9.0-hang" in b.output]
    assert len(hung) == 2, [b.output[-800:] for b in hung]
    import simstate

    assert all(b.halt_cause == simstate.WDT_RESET for b in hung)
    assert accepted(hung, "t")  # they sampled before they hung: those readings are checked below
    last = rollback(field, "hang", "hung 2 wakes (watchdog)")
    assert (last["appv"], last["appt"], last["aprb"]) == (V_MAIN, 0, 2), last
    assert last["aperr"] == "hung 2 wakes (watchdog)"


def test_an_update_that_never_reaches_the_broker_is_rolled_back_after_its_trial_uplinks(field):
    boots = field.log["nobroker"]
    tried = [b for b in boots if "fw=0.10.0-nobroker" in b.output]
    assert len(tried) == appslot.TRIAL_UPLINKS, [summary(b) for b in tried]
    for b in tried:
        s = summary(b)
        assert s and s["uplink"] != "ok" and "uplink failed" in b.output, b.output[-2000:]
        assert int(s["readings"]) > 0  # it samples as ever: only the uplink fails
    last = rollback(field, "nobroker", "no uplink in 3 tries")
    assert (last["appv"], last["appt"], last["aprb"]) == (V_MAIN, 0, 3), last


def test_a_canary_that_rolls_back_halts_the_rollout_and_the_other_device_never_gets_it(field):
    assert field.rc["canary"] == 0 and field.rc["advance_waiting"] == 0 and field.rc["advance"] == 0
    assert field.rollout_waiting["state"] == "canary" and field.rollout_waiting["sent"] == [DEVICE_ID]
    r = field.rollout
    assert r["version"] == V_NOBROKER and r["state"] == "halted" and r["sent"] == [DEVICE_ID], r
    assert DEVICE_ID in r["why"]
    assert field.other_got == []  # no manifest retained for the second device


# ------------------------------------------------------------ nothing lost
def test_every_reading_the_node_took_arrived_once(field):
    from decimal import Decimal

    boots = field.all_boots
    assert (summary(boots[-1]) or {}).get("uplink") == "ok" and summary(boots[-1])["queue"] == "0"
    for ch, scale in CHANNELS:
        stored = sorted(field.store.readings(device=DEVICE_ID, channel=ch), key=lambda r: r.rid)
        got = [int(Decimal(r.exact) * scale) for r in stored]
        took = accepted(boots, ch)
        assert took and got == took, (ch, len(got), len(took))


def test_what_the_update_cost(field):
    """The numbers (printed with -s): wakes, radio bytes and time per phase,
    flash wear of the 60 KB update, the module's own time."""
    c = field.cost["main"]
    img = len(field.main_img.read_bytes())
    assert c["rx"] >= img  # every chunk came over the radio
    erases, programmed = field.main_wear
    assert programmed >= 2 * img  # the image in data/update.img, then unpacked in slots/1
    for name, c in field.cost.items():
        print("%-10s %3d wakes  tx %7d B  rx %7d B  radio %7.0f ms" % (name, c["wakes"], c["tx"], c["rx"],
                                                                    c["radio_ms"]))
    print("main: image %d B in %d chunks; flash: %d erases, %d bytes programmed" % (
        img, len(field.main_plan.msgs), erases, programmed))
    fetching = [b for b in field.log["main"] if "fetched %d of %d" % (UPDATE_CHUNKS - 1, UPDATE_CHUNKS - 1) in b.output]
    plain = field.log["manifests"][-1:]  # an uplink wake with no update going on
    for what, bs in (("a wake fetching 7 chunks", fetching), ("a plain uplink wake", plain)):
        assert bs, what
        print("%s: rx %.0f B, tx %.0f B, radio %.0f ms, awake %.0f ms (mean of %d)" % (
            what, sum(b.rx_bytes for b in bs) / len(bs), sum(b.tx_bytes for b in bs) / len(bs),
            sum(b.phases.get("radio", 0) + b.phases.get("tls", 0) for b in bs) / 1000 / len(bs),
            sum(b.awake_ms for b in bs) / len(bs), len(bs)))
    print("scenario: %.1f s, %d boots" % (field.elapsed, len(field.all_boots)))
