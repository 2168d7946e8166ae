# app.update: an update's download on the node, in a flash folder of its own
# (as test_mailbox): the manifest accepted through app.mailbox or refused by
# reason (forged, replay, stale, reverted, invalid fields, no room); chunks
# taken in order over several wakes, each checked by the hash chain before it
# is written; a power cut between a chunk's write and the state's save; the
# last chunk -> unpacked into the free slot, the tree verified, appslot.stage,
# the image removed; a corrupted unpack and bad paths refused, nothing staged;
# wanted() and report(). Images are built here, in the format of U-spec
# (the host's builder, tools/petrel/update.py, is checked against the same
# format in host/test_update_host.py). The fetch itself: test_session.py.
import binascii
import hashlib
import json
import os
import struct
import sys
import time

import appslot
import cbor
import clock
import cose
import downmsg
import esp32
import espimage
import eventlog
import machine
import rtcmem
import simstate

from app import config, fwupdate, mailbox, state, update, updating
from ptest import host_folder, raises

HMAC = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
DEV = "p-a1b2c3"
CONFIG = {"format": 1, "device_id": DEV, "sample_s": 300, "wifi": {"ssid": "lab"},
          "broker": {"host": "broker.lan", "ca": "ca.der"}}
BUILD = 1764000000
K_MAC, _ = downmsg.keys(bytes.fromhex(HMAC))
FILES = {"app/__init__.py": b"", "app/ladder.py": b"def run():\n    pass\n",
         "app/version.py": b"VERSION = '0.7.0'\n" + b"# padding\n" * 120,
         "lib/util.py": bytes(range(256)) * 6}


class PowerCut(BaseException):
    """Like the board's Halt: no `except Exception` takes it, nothing after it runs."""


# ------------------------------------------------------------ the fleet side, in the format
def pack(entries):
    """[(path, bytes)] in the order given -> an app image (no rule checked:
    the tests make broken ones too)."""
    out = b"PTRLAPP1"
    for path, data in entries:
        raw = path.encode()
        out += struct.pack("<H", len(raw)) + raw + struct.pack("<I", len(data)) + data
    return out + b"\0\0"


def image(files=FILES):
    return pack(sorted(files.items()))


def chain(img, c):
    n = (len(img) + c - 1) // c
    msgs = [b""] * n
    nxt = bytes(32)
    for i in range(n - 1, -1, -1):
        msgs[i] = img[i * c:(i + 1) * c] + nxt
        nxt = hashlib.sha256(msgs[i]).digest()
    return msgs


class Release:
    """An image, its chunk messages and its manifest's fields."""

    def __init__(self, img, v=7, c=512, t="app", name="0.7.0"):
        self.img, self.msgs = img, chain(img, c)
        self.h = hashlib.sha256(img).digest()
        self.p = "petrel/update/" + binascii.hexlify(self.h).decode()[:16]
        self.body = {"t": t, "v": v, "n": name, "z": len(img), "h": self.h, "c": c,
                     "f": hashlib.sha256(self.msgs[0]).digest(), "p": self.p}

    def manifest(self, version, retained=False, k_mac=K_MAC, **fields):
        body = dict(self.body)
        body.update(fields)
        body["k"] = "update"
        msg = cose.mac0(k_mac, DEV.encode(), version, cbor.dumps(body), aad=b"petrel down update")
        return (("petrel/%s/down/update" % DEV).encode(), msg, retained)

    def chunk(self, i, msg=False):
        """Chunk i's topic and message (msg: another message, None as the
        client notes one it read past)."""
        return ((self.p + "/" + str(i)).encode(), self.msgs[i] if msg is False else msg, True)


# ------------------------------------------------------------ the node
def _folder():
    return host_folder("update")


class Node:
    """A node's flash folder (cwd), its RTC record, appslot as at boot."""

    def __init__(self, cfg=CONFIG, table="factory"):
        b = simstate.reset_world(power=False)
        b.partition_table = table  # "ota": ESP32_GENERIC-OTA's two app slots (firmware updates)
        b.power_on()
        fwupdate._forget()
        self.dir = _folder()
        self.here = os.getcwd()
        self.path = list(sys.path)
        os.chdir(self.dir)
        os.mkdir("data")
        with open("config.json", "w") as f:
            f.write(json.dumps(cfg))
        with open("secrets.json", "w") as f:
            f.write(json.dumps({"hmac_key": HMAC}))
        with open("ca.der", "w") as f:
            f.write("x")
        self.lines = []
        eventlog.print = self.lines.append
        appslot.print = self.lines.append
        appslot._cur = None
        self.st = state.State()
        self.clk = clock.Clock(BUILD, rtcmem.Region(machine.RTC(), 1280, 64))

    def cfg(self):
        return config.load("config.json", "secrets.json", "config.good.json")

    def receive(self, *items):
        mailbox.receive(self.st, self.cfg(), self.clk, list(items))

    def wake(self):
        """A new wake: RTC memory kept, nothing of the last one's objects."""
        self.st.save()
        self.st = state.State()
        appslot._cur = None

    def boot(self):
        """A new boot through appslot.choose() (main.py's first step)."""
        self.wake()
        sys.path[:] = self.path
        appslot.choose()

    def wanted(self):
        return update.wanted(self.st, self.cfg())

    def download(self, rel):
        """As many uplink wakes as the whole image takes (4 chunks each)."""
        for _ in range((len(rel.msgs) + 3) // 4):
            self.fetch(rel)

    def fetch(self, rel):
        """One uplink wake: the chunks wanted(), as the session would get
        them, then the mailbox."""
        self.wake()
        got = [rel.chunk(int(t.rsplit("/", 1)[1])) for t in self.wanted()]
        self.receive(*got)
        return len(got)

    def close(self):
        del eventlog.print
        del appslot.print
        appslot._cur = None
        sys.path[:] = self.path
        os.chdir(self.here)


def with_node(fn, cfg=CONFIG, table="factory"):
    n = Node(cfg, table)
    try:
        fn(n)
    finally:
        n.close()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def read(path):
    with open(path, "rb") as f:
        return f.read()


def running_v5(n):
    """The node runs app v5 from slot 1, confirmed."""
    r = Release(image(), v=5)
    n.receive(r.manifest(1))
    while update.load().busy:
        n.fetch(r)
    n.boot()
    appslot.uplink(True)
    assert appslot.running()[:2] == (1, 5) and not appslot.on_trial()


def refusals(st):
    return tuple(getattr(st, "dr_" + r) for r in downmsg.REASONS)


# ------------------------------------------------------------ tests
def test_a_download_over_several_wakes_is_unpacked_verified_and_staged():
    def run(n):
        r = Release(image(), v=7, c=512)
        nchunks = len(r.msgs)
        assert nchunks >= 6 and n.wanted() == []  # nothing to fetch before a manifest
        n.receive(r.manifest(3))
        assert n.st.upd == update.BUSY and update.report(n.st)["upd"] == "app v7 0/%d" % nchunks
        wakes = 0
        while update.load().busy:
            u = update.load()
            assert exists(update.IMG) == (u.done > 0)
            if u.done:
                assert os.stat(update.IMG)[6] == u.done * 512  # chunk i at i * c, nothing else
            assert n.fetch(r) == min(4, nchunks - u.done)  # update_chunks' default
            wakes += 1
        assert wakes == (nchunks + 3) // 4
        for path, data in FILES.items():
            assert read("slots/1/" + path) == data
        assert not exists(update.IMG) and n.wanted() == []
        assert n.st.upd == update.IDLE and update.report(n.st)["upd"] == ""
        s = appslot._load()
        assert (s.pending, s.v_pending, s.n_pending) == (1, 7, "0.7.0")
        assert refusals(n.st) == (0,) * 7
        n.boot()  # the next boot runs it, on trial
        assert appslot.running() == (1, 7, "0.7.0") and appslot.on_trial()

    with_node(run)


def test_a_download_done_during_a_trial_waits_for_it_to_end_before_taking_its_way_back():
    def release(v):
        files = dict(FILES)
        files["app/version.py"] = b"VERSION = '0.%d.0'\n" % v
        return Release(image(files), v=v, name="0.%d.0" % v)

    def run(n):
        running_v5(n)  # slot 1, confirmed
        r6 = release(6)
        n.receive(r6.manifest(2))
        n.download(r6)
        n.boot()  # v6 on trial in slot 2; its way back is v5 in slot 1
        s = appslot._load()
        assert (s.active, s.prev, s.trial) == (2, 1, 1)
        r8 = release(8)
        n.receive(r8.manifest(3))
        n.download(r8)
        # every chunk in, nothing staged: slot 1 still holds the way back, whole
        assert update.load().busy and exists(update.IMG)
        s = appslot._load()
        assert (s.active, s.prev, s.pending) == (2, 1, 0)
        assert read("slots/1/app/version.py") == FILES["app/version.py"]
        appslot.uplink(True)  # v6 confirmed
        n.fetch(r8)  # the next uplink wake's mailbox finishes it
        s = appslot._load()
        assert (s.pending, s.v_pending) == (1, 8) and not update.load().busy
        assert read("slots/1/app/version.py") == b"VERSION = '0.8.0'\n"

    with_node(run)


def test_wanted_gives_the_next_k_chunk_topics_within_the_heap_bound():
    def run(n):
        r = Release(image(), v=7, c=512)
        n.receive(r.manifest(1))
        assert n.wanted() == [r.p + "/%d" % i for i in range(3)]
        n.receive(r.chunk(0), r.chunk(1))
        assert n.wanted() == [r.p + "/%d" % i for i in range(2, 5)]

    def big(n):
        # 6 chunks (small enough for the VM's heap in a full run), 16 asked,
        # 16 KiB of chunks at most held: 4 of 3584 bytes
        r = Release(image(dict(FILES, **{"lib/big.py": b"x" * 16000})), v=8, c=3584)
        assert len(r.msgs) > update.FETCH_BYTES // (3584 + 32)
        n.receive(r.manifest(2))
        assert n.wanted() == [r.p + "/%d" % i for i in range(update.FETCH_BYTES // (3584 + 32))]
        assert len(n.wanted()) == 4

    with_node(run, dict(CONFIG, update_chunks=3))
    with_node(big, dict(CONFIG, update_chunks=16))


def test_update_chunks_is_checked_by_the_config_checker():
    for bad in (0, 17, "4"):
        try:
            config.check(dict(CONFIG, update_chunks=bad))
        except config.ConfigError as e:
            assert "update_chunks" in str(e)
        else:
            raise AssertionError("update_chunks=%r taken" % (bad,))
    assert config.check(dict(CONFIG)).update_chunks == 4


def test_manifests_refused_by_reason_start_nothing():
    def run(n):
        running_v5(n)
        r = Release(image(), v=7)
        before = refusals(n.st)

        def refused(item, reason):
            was = refusals(n.st)
            n.receive(item)
            now = refusals(n.st)
            i = downmsg.REASONS.index(reason)
            assert now[i] == was[i] + 1 and sum(now) == sum(was) + 1, (reason, was, now)
            assert not update.load().busy and n.st.upd != update.BUSY

        refused(r.manifest(10, k_mac=bytes(32)), "forged")
        refused(Release(image(), v=5).manifest(10), "stale")  # the running version
        refused(Release(image(), v=4).manifest(11), "stale")
        refused(r.manifest(12, t="os"), "invalid")
        refused(r.manifest(13, z=0), "invalid")
        refused(r.manifest(14, z=262145), "invalid")  # an app image's bound
        refused(r.manifest(15, c=256), "invalid")
        refused(r.manifest(16, c=3585), "invalid")
        refused(r.manifest(17, n="x" * 33), "invalid")
        refused(r.manifest(18, p="petrel/update/#"), "invalid")
        refused(r.manifest(19, p="/petrel/x"), "invalid")
        refused(r.manifest(20, h=b"short"), "malformed")
        refused(r.manifest(21, v="7"), "malformed")
        refused(r.manifest(22, v=0), "invalid")
        refused(r.manifest(23, t="fw", c=3000), "invalid")  # a fw chunk must divide 4096
        refused(r.manifest(9), "replay")  # below the last downlink version (23)
        spare = updating.ROOM_SPARE
        updating.ROOM_SPARE = 1 << 40  # more than this flash has
        try:
            refused(r.manifest(24), "invalid")
            assert "no room" in update.report(n.st)["uperr"]
        finally:
            updating.ROOM_SPARE = spare
        assert sum(refusals(n.st)) - sum(before) == 17
        # every one refused for good used its version: never again; "no room"
        # may pass later: its version is not spent (a retained copy comes again)
        assert update.load().downv == 23
        n.receive(r.manifest(23, retained=True))  # a refused one's retained copy at the next connect
        assert sum(refusals(n.st)) - sum(before) == 17 and not update.load().busy
        n.receive(r.manifest(24, retained=True))  # the one refused for room, again, with room now: taken
        assert sum(refusals(n.st)) - sum(before) == 17
        assert update.load().busy and update.load().v == 7 and update.load().downv == 24
        n.receive(r.manifest(25))  # the same image sealed again: its progress kept
        assert update.load().busy and update.load().downv == 25

    with_node(run)


def test_a_rolled_back_version_is_refused_as_reverted():
    def run(n):
        r = Release(image(), v=6)
        n.receive(r.manifest(1))
        while update.load().busy:
            n.fetch(r)
        n.boot()
        for _ in range(appslot.TRIAL_UPLINKS):
            appslot.uplink(False)
        n.boot()  # rolled back to the factory app
        assert appslot.running()[0] == 0 and appslot.refused(6)
        n.receive(Release(image(), v=6, c=600).manifest(2))
        assert n.st.dr_reverted == 1 and not update.load().busy
        n.receive(Release(image(), v=7).manifest(3))
        assert update.load().busy  # a later version is another matter

    with_node(run)


def test_a_newer_manifest_replaces_the_download_and_the_same_image_keeps_its_progress():
    def run(n):
        r7 = Release(image(), v=7)
        n.receive(r7.manifest(1))
        n.fetch(r7)
        assert update.load().done == 4
        n.receive(r7.manifest(2))  # the same image sealed again (another rollout): progress kept
        assert update.load().done == 4 and n.st.dr_replay == 0
        n.receive(Release(image(), v=6).manifest(3))  # older than the one downloading
        assert n.st.dr_stale == 1 and update.load().v == 7
        r8 = Release(image(dict(FILES, **{"app/new.py": b"n = 8\n"})), v=8)
        n.receive(r7.chunk(4), r8.manifest(4))  # a chunk of the old one, then the newer manifest
        u = update.load()
        assert (u.v, u.done, u.p) == (8, 0, r8.p) and not exists(update.IMG)
        n.receive(r7.chunk(5))  # the old download's chunks now belong to nothing
        assert update.load().done == 0 and n.st.dr_malformed == 1
        while update.load().busy:
            n.fetch(r8)
        assert read("slots/1/app/new.py") == b"n = 8\n" and appslot._load().v_pending == 8

    with_node(run)


def test_a_wrong_chunk_is_refused_counted_and_not_written_and_others_are_ignored():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        n.receive(r.chunk(0))
        size = os.stat(update.IMG)[6]
        bad = bytearray(r.msgs[1])
        bad[100] ^= 1
        n.receive(r.chunk(1, bytes(bad)))
        assert n.st.dr_forged == 1 and update.load().done == 1
        assert os.stat(update.IMG)[6] == size and read(update.IMG) == r.img[:512]
        n.receive(r.chunk(3), r.chunk(0), r.chunk(0))  # ahead, behind, again: ignored quietly
        n.receive((r.p.encode() + b"/01", r.msgs[1], True))  # "01" is not chunk 1's topic
        assert update.load().done == 1 and sum(refusals(n.st)) == 1
        n.receive(r.chunk(1, None))  # read past by the client: too big for a chunk
        assert n.st.dr_oversized == 1 and update.load().done == 1
        n.receive(r.chunk(1))
        assert update.load().done == 2 and "chunk 1" in update.report(n.st)["uperr"]

    with_node(run)


def test_a_power_cut_between_a_chunk_and_the_state_writes_that_chunk_again():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        save = update.Update.save
        at = [0]

        def cut(self):  # the chunk is whole on flash before its state is written
            i = at[0]
            assert read(update.IMG)[i * 512:(i + 1) * 512] == r.img[i * 512:(i + 1) * 512]
            raise PowerCut()

        for i in range(len(r.msgs)):
            at[0] = i
            update.Update.save = cut
            try:
                n.receive(r.chunk(i))
                raise AssertionError("no cut")
            except PowerCut:
                pass
            finally:
                update.Update.save = save
            n.wake()  # after the cut: what flash holds
            assert update.load().done == i  # the chunk is on flash, the state not
            n.receive(r.chunk(i))  # asked again, written again at its place
            assert update.load().done == i + 1 or not update.load().busy
        assert read("slots/1/app/ladder.py") == FILES["app/ladder.py"] and appslot._load().pending == 1

    with_node(run)


def test_a_power_cut_in_the_finish_is_redone_from_the_image():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        stage = appslot.stage

        def cut(*args):
            raise PowerCut()

        appslot.stage = cut  # all unpacked and verified, the switch not written
        try:
            while True:
                try:
                    n.fetch(r)
                except PowerCut:
                    break
        finally:
            appslot.stage = stage
        n.wake()
        u = update.load()
        assert u.busy and u.done == len(r.msgs) and exists(update.IMG) and appslot._load().pending == 0
        n.receive()  # the next wake with an uplink: nothing to fetch, the finish redone
        assert not update.load().busy and appslot._load().pending == 1 and not exists(update.IMG)

    with_node(run)


def test_a_power_cut_after_the_stage_only_cleans_up_at_the_trial_boot():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        done = updating._done

        def cut(u, why):
            raise PowerCut()

        updating._done = cut  # staged, the image and the state not yet cleaned up
        try:
            n.download(r)
            raise AssertionError("no cut")
        except PowerCut:
            pass
        finally:
            updating._done = done
        assert appslot._load().pending == 1 and update.load().busy
        n.boot()  # the switch: v7 on trial from slot 1
        assert appslot.running()[:2] == (1, 7)
        n.receive()
        assert not update.load().busy and not exists(update.IMG)
        assert appslot._load().pending == 0 and not exists("slots/2")  # not unpacked again elsewhere
        assert appslot.running()[:2] == (1, 7) and appslot.on_trial()

    with_node(run)


def test_a_corrupted_unpack_is_refused_and_nothing_is_staged():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        unpack = updating._unpack

        def flaky(img, entries, d):  # the flash gives back one byte wrong
            unpack(img, entries, d)
            with open(d + "/lib/util.py", "r+b") as f:
                f.seek(7)
                f.write(b"!")

        updating._unpack = flaky
        try:
            n.download(r)
        finally:
            updating._unpack = unpack
        assert n.st.dr_forged == 1 and "slot 1" in update.report(n.st)["uperr"]
        assert appslot._load().pending == 0 and not exists("slots/1")
        u = update.load()
        assert u.busy and u.done == 0 and not exists(update.IMG)  # downloaded again

    with_node(run)


def test_an_image_hash_mismatch_starts_the_download_over():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1, h=bytes(32)))  # chunks chained from f, the whole not h
        n.download(r)
        assert n.st.dr_forged == 1 and "image hash" in update.report(n.st)["uperr"]
        assert update.load().done == 0 and appslot._load().pending == 0 and not exists("slots/1")

    with_node(run)


def test_images_that_break_the_rules_are_refused_and_nothing_is_written():
    ladder = ("app/ladder.py", b"def run(): pass\n")
    bad = {
        "../x": [("../x", b"x"), ladder],
        "/x": [("/x", b"x"), ladder],
        "5 levels": [("app/a/b/c/d.py", b"x"), ladder],
        "main.py": [ladder, ("main.py", b"x")],
        "appslot.mpy": [ladder, ("appslot.mpy", b"x")],
        "config.good.json": [ladder, ("config.good.json", b"{}")],
        "data/": [ladder, ("data/down", b"x")],
        "a space": [("app/a b.py", b"x"), ladder],
        "a//b": [("app//b.py", b"x"), ladder],
        "unsorted": [ladder, ("app/a.py", b"x")],
        "twice": [ladder, ladder],
        "a file and its folder": [("app", b"x"), ladder],
        "a file and a later folder": [ladder, ("lib", b"x"), ("lib-x", b"x"), ("lib/y.py", b"x")],
        "no ladder": [("app/cycle.py", b"x")],
    }
    for name, entries in bad.items():
        img = pack(entries)
        with_node(lambda n, img=img, why=name: _refused_image(n, img, why))
    for name, img in (("trailing bytes", image() + b"x"), ("truncated", image()[:-3]),
                      ("magic", b"PTRLAPP2" + image()[8:])):
        with_node(lambda n, img=img, why=name: _refused_image(n, img, why))


def _refused_image(n, img, why):
    r = Release(img, v=7)
    n.receive(r.manifest(1))
    n.download(r)
    assert not update.load().busy, why
    assert n.st.dr_invalid == 1 and sum(refusals(n.st)) == 1, why
    assert not exists("slots/1") and not exists("slots") and appslot._load().pending == 0, why
    assert not exists(update.IMG) and not exists("../x") and not exists("main.py"), why
    assert not exists("appslot.mpy") and read("config.good.json") != b"{}", why
    assert read("data/down")[:1] != b"x", why


def test_a_damaged_state_file_is_no_download_and_logged():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        raw = bytearray(read(update.PATH))
        raw[5] ^= 0xFF
        with open(update.PATH, "wb") as f:
            f.write(raw)
        u = update.load()
        assert not u.busy and u.downv == 0 and any("damaged" in str(x) for x in n.lines)
        n.wake()
        assert n.wanted() == [] and n.st.upd == update.IDLE

    with_node(run)


def test_report_reads_nothing_on_an_idle_node():
    def run(n):
        n.st.upd = update.IDLE
        with open(update.PATH, "wb") as f:  # would read as damaged if it were read
            f.write(b"garbage")
        import app

        held = {name: sys.modules.pop("app." + name) for name in ("updating", "fwupdate")}
        for name in held:  # as if never imported: an import would load them again
            delattr(app, name)
        try:  # neither the download's work nor the firmware's module is loaded for it
            r = update.report(n.st)
            assert "app.updating" not in sys.modules and "app.fwupdate" not in sys.modules
        finally:
            for name, m in held.items():
                sys.modules["app." + name] = m
                setattr(app, name, m)
        assert r == {"upd": "", "uperr": "", "fwv": 0, "fwt": 0}
        assert not any("damaged" in str(x) for x in n.lines)

    with_node(run)


def test_a_refusal_is_reported_once_then_not_read_again_until_a_power_on():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1, c=256))
        assert n.st.upd == update.IDLE_ERR
        assert "chunk of 256" in update.report(n.st)["uperr"]
        assert n.st.upd == update.IDLE  # reported: the next uplinks neither read data/update nor repeat it
        n.wake()
        with open(update.PATH, "ab") as f:  # would read as damaged if it were read
            f.write(b"x")
        assert update.report(n.st)["uperr"] == "" and not any("damaged" in str(x) for x in n.lines)
        n.st.upd = 0  # RTC memory lost (a power-on): data/update read once more
        assert update.report(n.st)["uperr"] == "" and any("damaged" in str(x) for x in n.lines)

    with_node(run)


def test_texts_cut_at_their_byte_bound_never_split_a_character():
    def run(n):
        u = update.load()
        for err, kept in (("\u00e9" * 60, "\u00e9" * 40), ("x" + "\u00e9" * 60, "x" + "\u00e9" * 39),
                          ("x" + "\u20ac" * 30, "x" + "\u20ac" * 26)):  # 2- and 3-byte characters
            u.err = err
            u.downv = 5
            u.save()
            back = update.load()
            assert back.err == kept and back.downv == 5, (err, back.err)
        assert not any("damaged" in str(x) for x in n.lines)
        assert update.cut("\u00e9\u00e9", 3) == "\u00e9".encode() and update.cut("ab", 5) == b"ab"

    with_node(run)


def test_a_manifest_for_the_other_target_waits_for_the_download_in_progress():
    def run(n):
        app = Release(image(), v=7)
        fw = Release(fw_image(), v=3, c=1024, t="fw", name="1.30.0")
        n.receive(app.manifest(1))
        n.fetch(app)
        n.receive(fw.manifest(2))  # fw v3 during app v7: neither stale nor a reason to drop the app's
        u = update.load()
        assert (u.t, u.v, u.done) == (0, 7, 4) and refusals(n.st) == (0,) * 7 and exists(update.QUEUE)
        assert u.downv == 2
        n.receive(fw.manifest(2, retained=True))  # its retained copy: already taken (waiting)
        assert refusals(n.st) == (0,) * 7
        for _ in range(len(app.msgs)):  # until the app's is done and staged: then the firmware's starts
            if update.load().t == 1 or not update.load().busy:
                break
            n.fetch(app)
        assert appslot._load().v_pending == 7
        u = update.load()
        assert (u.busy, u.t, u.v, u.done) == (1, 1, 3, 0) and not exists(update.QUEUE)
        assert refusals(n.st) == (0,) * 7 and n.wanted()[0] == fw.p + "/0"

    def reverse(n):
        fw = Release(fw_image(), v=3, c=1024, t="fw", name="1.30.0")
        app = Release(image(), v=7)
        n.receive(fw.manifest(1))
        n.fetch(fw)
        n.receive(app.manifest(2))  # app v7 during fw v3: the firmware's download is kept
        u = update.load()
        assert (u.t, u.v, u.done) == (1, 3, 4) and refusals(n.st) == (0,) * 7
        spare = updating.ROOM_SPARE
        updating.ROOM_SPARE = 1 << 40
        try:  # the firmware's given up; the app's, checked now, finds no room: its version given back
            update.abandon(n.st, "test")
        finally:
            updating.ROOM_SPARE = spare
        u = update.load()
        assert not u.busy and u.downv == 1 and "no room" in u.err and not exists(update.QUEUE)
        n.receive(app.manifest(2, retained=True))  # so its retained copy is taken when it comes again
        u = update.load()
        assert (u.busy, u.t, u.v, u.downv) == (1, 0, 7, 2)

    with_node(run, table="ota")
    with_node(reverse, table="ota")


def test_a_firmware_manifest_during_a_firmware_trial_does_not_spend_its_version():
    def run(n):
        fw = Release(fw_image(), v=3, c=1024, t="fw", name="1.30.0")
        on_trial = fwupdate.on_trial
        fwupdate.on_trial = lambda: True
        try:
            n.receive(fw.manifest(1))
        finally:
            fwupdate.on_trial = on_trial
        u = update.load()
        assert n.st.dr_invalid == 1 and not u.busy and u.downv == 0 and "trial" in u.err
        n.receive(fw.manifest(1, retained=True))  # the trial over: its retained copy taken
        assert update.load().busy and update.load().downv == 1 and n.st.dr_invalid == 1

    with_node(run, table="ota")


def test_a_finish_without_room_is_tried_twice_then_given_up_and_leaves_no_half_slot():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        spare = updating.ROOM_SPARE
        updating.ROOM_SPARE = 1 << 40  # the outbox took the flash while the chunks came
        try:
            n.download(r)
        finally:
            updating.ROOM_SPARE = spare
        u = update.load()
        assert u.busy and u.fails == 1 and exists(update.IMG) and not exists("slots/1")
        assert refusals(n.st) == (0,) * 7
        unpack = updating._unpack

        def full(img, entries, d):  # ENOSPC half way
            unpack(img, entries[:2], d)
            raise OSError(28, "ENOSPC")

        updating._unpack = full
        try:
            n.fetch(r)  # the next wake's mailbox: the second try
        finally:
            updating._unpack = unpack
        u = update.load()
        assert not u.busy and n.st.dr_invalid == 1 and "given up" in u.err and "28" in u.err
        assert not exists("slots/1") and not exists(update.IMG) and appslot._load().pending == 0
        n.fetch(r)
        assert n.st.dr_invalid == 1  # nothing tried again

    with_node(run)


def test_the_unpacked_size_is_counted_in_littlefs_blocks():
    # data in whole blocks (a small file counted as one), two per folder and the slot's
    entries = [("app/a.py", 0, 10), ("app/b.py", 0, 5000), ("app/x/c.py", 0, 4096), ("lib/d.py", 0, 0)]
    assert updating._entries_blocks(entries, 4096) == 1 + 2 + 1 + 1 + 2 * 4


def fw_image(size=9000):
    """A valid ESP app image (what set_boot accepts), as test_fwupdate builds one."""
    blob = bytes((i * 7) & 0xFF for i in range(size))
    return espimage.build([(0x3F400020, espimage.app_desc("1.30.0")), (0x3FFB0000, blob),
                           (0x40080000, b"\x36\x41\x00\x1d\xf0\x00\x00\x00")], version="1.30.0")


def running_partition():
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


def test_a_firmware_download_goes_to_the_ota_partition_and_switches_with_a_reset():
    def run(n):
        img = fw_image()
        r = Release(img, v=3, c=1024, t="fw", name="1.30.0")
        n.receive(r.manifest(1))
        assert update.load().busy and running_partition() == "ota_0"
        for _ in range((len(r.msgs) + 3) // 4 - 1):
            n.fetch(r)
        assert not exists(update.IMG)  # straight into the partition, no copy on littlefs
        buf = bytearray(4096)
        esp32.Partition("ota_1").readblocks(0, buf)
        assert bytes(buf) == img[:4096]
        h = raises(simstate.Halt, n.fetch, r)  # the last chunks: verified read back, set_boot, reset
        simstate.board.after_halt(h)
        fwupdate._forget()
        assert running_partition() == "ota_1" and fwupdate.on_trial()
        n.st = state.State()
        n.receive()  # the trial wake's mailbox: the download is over, nothing flashed again
        assert not update.load().busy and n.st.upd == update.IDLE
        assert refusals(n.st) == (0,) * 7

    with_node(run, table="ota")


def test_a_firmware_manifest_on_a_build_without_ota_partitions_is_invalid():
    def run(n):
        r = Release(fw_image(), v=3, c=1024, t="fw")
        n.receive(r.manifest(1))
        assert n.st.dr_invalid == 1 and not update.load().busy
        assert "firmware" in update.report(n.st)["uperr"]

    with_node(run)


# app.cycle's part: a trial's wake tries an uplink even when none is due (inside
# a backoff too), and tells appslot how it went; a download in progress has its
# next chunks fetched in the session and taken after it. The session is one
# whose link and broker are there (as test_cycle's Linked): what the wake does
# with it is under test, the session itself in test_session.
BOARD = {"i2c": {"0": {"scl": 22, "sda": 21}}, "sensors": {"sht4x": {"bus": 0}},
         "battery": {"pin": 35, "divider": [2, 1]}}
CHANNELS = [{"name": "t", "sensor": "sht4x.t", "scale": 10, "unit": "Cel"}]


class Linked:
    """A session that reaches the broker; fetch() finds the chunks of
    Linked.release on it. Linked.ok False: the broker fails at close."""
    opened = 0
    fetched = []
    release = None
    ok = True
    acked = True  # the broker answers fetch()'s SUBSCRIBE

    def __init__(self, cfg, rtc):
        self.result, self.sent, self.rssi, self.wifi_ms, self.auth_refused = None, 0, -60, 100, False
        self.inbox = []
        self.fetch_acked = False

    def open(self):
        Linked.opened += 1
        return True

    def sync_clock(self, clk, ppm=None):
        return None

    def connect(self):
        return True

    def drain(self, ob, enc, kind=None):
        return 0

    def publish(self, topic, msg):
        return True

    def await_time(self, ms):
        return False

    def fetch(self, topics):
        Linked.fetched.append(list(topics))
        self.fetch_acked = Linked.acked
        if Linked.release is None or not Linked.acked:  # the chunks are not on the broker
            return 0
        for t in topics:
            self.inbox.append(Linked.release.chunk(int(t.rsplit("/", 1)[1])))
        return len(topics)

    def close(self):
        self.result = "ok" if Linked.ok else "broker:timeout: no answer"


def wake(n, samples=0, backoff=False):
    """One sampling wake of the node, its uplink through Linked; a trial
    judged by it as the ladder does once the wake is done."""
    from simdev.sht4x import SHT4xModel

    from app import cycle, hardware, ladder, session

    simstate.board.i2c[0] = {0x44: SHT4xModel()}
    simstate.board.analog[35] = 1505000
    cfg = config.check({"device_id": DEV, "channels": CHANNELS, "uplink_every": 12, "wifi": {"ssid": "lab"},
                        "broker": {"host": "broker.lan", "ca": "ca.der"}})
    cfg._secrets = {"hmac_key": HMAC}
    n.st.samples = samples
    n.st.up_next = time.time() + 600 if backoff else 0
    Linked.opened, Linked.fetched = 0, []
    real = session.Session
    session.Session = Linked
    try:
        w = cycle.Wake(n.st, cfg, hardware.Hardware(BOARD), "deepsleep", "timer", 0)
        w.run()
    finally:
        session.Session = real
    if w.trial_uplink is not None:
        ladder._trial_uplink(w.trial_uplink)
    n.wake()


def test_a_trial_wake_tries_an_uplink_even_when_none_is_due_and_confirms_the_trial():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        n.download(r)
        n.boot()
        assert appslot.on_trial()
        wake(n, samples=0, backoff=True)  # not due, and inside a backoff
        assert Linked.opened == 1
        assert not appslot.on_trial() and appslot._load().trial == 0  # confirmed, on flash
        wake(n, samples=0)
        assert Linked.opened == 0  # confirmed: back to the schedule

    with_node(run)


def test_a_trial_wake_whose_uplink_fails_counts_toward_the_rollback():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        n.download(r)
        n.boot()
        Linked.ok = False
        try:
            for i in range(appslot.TRIAL_UPLINKS):
                wake(n)
                assert Linked.opened == 1 and appslot._load().fails == i + 1
        finally:
            Linked.ok = True
        n.boot()
        assert appslot.running()[0] == 0 and appslot.refused(7)  # rolled back to the factory

    with_node(run)


def test_a_trial_wake_that_crashes_after_its_uplink_is_a_crash_not_a_confirmation():
    # a trial is judged by a completed wake: the ladder confirms after the
    # wake's state is saved; a crash later in the wake is counted instead
    from app import cycle, ladder, session
    from ptest import sleep_and_wake

    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        n.download(r)
        n.boot()
        assert appslot.on_trial()
        n.wake()
        real_session, real_sleep = session.Session, cycle.Wake.sleep

        def boom(self, ms):
            raise RuntimeError("after the uplink")

        session.Session, cycle.Wake.sleep = Linked, boom
        Linked.opened = 0
        try:
            h = sleep_and_wake(ladder.run)
        finally:
            session.Session, cycle.Wake.sleep = real_session, real_sleep
        assert Linked.opened == 1 and h.cause == machine.DEEPSLEEP_RESET
        s = appslot._load()
        assert (s.trial, s.crashes, s.fails) == (1, 1, 0)  # on trial still, one crashed wake

    with_node(run)


def test_a_trial_wake_puts_the_readings_held_in_rtc_memory_on_flash():
    # a trial may end in a reset or a rollback to an app (or a MicroPython)
    # that reads RTC memory with other code: the readings are on flash first
    import outbox

    from app import stores

    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        n.download(r)
        n.boot()
        assert appslot.on_trial() and not update.load().busy
        wake(n)
        held = len(outbox.Outbox(stores.OUTBOX_PATH, rtc=rtcmem.Region(machine.RTC(), *state.OUTBOX)))
        assert held > 0 and len(outbox.Outbox(stores.OUTBOX_PATH)) == held  # flash alone holds them all

    with_node(run)


def test_an_uplink_wake_fetches_the_next_chunks_and_takes_them_after_the_session():
    def run(n):
        r = Release(image(), v=7)
        Linked.release = r
        wake(n, samples=12)  # no download: nothing fetched, data/update read once (RTC memory was new)
        assert Linked.opened == 1 and Linked.fetched == [] and n.st.upd == update.IDLE
        wake(n, samples=12)
        assert Linked.fetched == []
        n.receive(r.manifest(1))
        for i in range(0, len(r.msgs), 4):
            assert update.load().done == i
            wake(n, samples=12)
            assert Linked.fetched == [[r.p + "/%d" % j for j in range(i, min(i + 4, len(r.msgs)))]]
        assert not update.load().busy and appslot._load().pending == 1 and n.st.upd == update.IDLE
        wake(n, samples=3)  # a wake with no uplink due: nothing of it
        assert Linked.opened == 0 and Linked.fetched == []

    with_node(run)


def test_a_download_wake_puts_the_readings_held_in_rtc_memory_on_flash_first():
    # the mailbox may finish the download (a firmware's switch resets from
    # there; the next app reads RTC memory with its own code): what the
    # outbox holds in RTC memory is on flash before it runs
    import outbox

    from app import stores

    def on_flash():
        return len(outbox.Outbox(stores.OUTBOX_PATH))  # no RTC region: flash alone

    def held():
        return len(outbox.Outbox(stores.OUTBOX_PATH, rtc=rtcmem.Region(machine.RTC(), *state.OUTBOX)))

    def run(n):
        r = Release(image(), v=7)
        Linked.release = r
        wake(n, samples=12)  # no download: the wake's readings stay in RTC memory (the broker kept none)
        first = held()
        assert first > 0 and on_flash() == 0
        n.receive(r.manifest(1))
        wake(n, samples=12)
        assert held() > first and on_flash() == held() and update.load().done == 4

    with_node(run)


def test_a_download_whose_chunks_are_gone_from_the_broker_is_given_up():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        Linked.release = None
        for _ in range(update.FETCH_MISSES - 1):
            wake(n, samples=12)
            assert Linked.fetched and update.load().busy
        Linked.release = r
        wake(n, samples=12)  # one that finds them: the count starts again
        assert n.st.upd_miss == 0 and update.load().done == 4
        Linked.release = None
        for _ in range(update.FETCH_MISSES):
            assert update.load().busy
            wake(n, samples=12)
            assert Linked.fetched
        wake(n, samples=12)  # FETCH_MISSES answered fetches without progress: given up, nothing fetched
        assert Linked.fetched == [] and not update.load().busy and n.st.dr_stale == 1 and not exists(update.IMG)
        assert "no progress in %d sessions" % update.FETCH_MISSES in update.report(n.st)["uperr"]
        wake(n, samples=12)
        assert Linked.fetched == []  # no radio time on it any more
        n.receive(Release(image(), v=7).manifest(2))  # sent again: a new start
        assert update.load().busy and update.load().done == 0

    with_node(run)


def test_a_download_whose_next_chunk_never_matches_is_given_up_though_later_ones_come():
    # chunk `done` forged (or missing) on the broker while the chunks after it
    # come at every fetch: the sessions that brought chunks but no progress
    # count, and the download ends, not ~8 KB fetched at every uplink for ever
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        bad = Release(image(), v=7)
        bad.msgs = list(r.msgs)
        bad.msgs[0] = b"x" + r.msgs[0][1:]
        Linked.release = bad
        for _ in range(update.FETCH_MISSES):
            wake(n, samples=12)
            assert len(Linked.fetched[0]) == 4 and update.load().busy and update.load().done == 0
        assert n.st.dr_forged == update.FETCH_MISSES
        wake(n, samples=12)
        assert Linked.fetched == [] and not update.load().busy and n.st.dr_stale == 1

    with_node(run)


def test_fetches_skipped_or_unanswered_do_not_count_toward_giving_up():
    def run(n):
        r = Release(image(), v=7)
        n.receive(r.manifest(1))
        Linked.release, Linked.acked = None, False  # the SUBACK never came (budget, inbox room)
        try:
            for _ in range(update.FETCH_MISSES + 2):
                wake(n, samples=12)
                assert Linked.fetched and update.load().busy
        finally:
            Linked.acked = True
        assert n.st.upd_miss == 0
        Linked.release = r
        wake(n, samples=12)
        assert update.load().done == 4

    with_node(run)
