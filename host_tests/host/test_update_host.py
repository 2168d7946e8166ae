"""The host side of updates (tools/petrel/update.py, the update columns of
`petrel fleet status`), against a real Mosquitto and a real SQLite store.
Every image, chunk and manifest is checked by a path of its own: the archive
read by a reader written here from the format's text, the chain's hashes
computed here, the manifest verified by pycose and opened by the node's
lib/downmsg.py."""

import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import sys
import threading
import time

import pytest

from petrel import cli, downlink, store as _store, testmsg, update, verify
from test_downlink_host import Watcher, broker_args, clear, new_id, opened, registry

ZERO = bytes(32)


def read_archive(img):
    """The image format as U-spec words it, read without update.py."""
    assert img[:8] == b"PTRLAPP1"
    i, out = 8, []
    while True:
        (n,) = struct.unpack("<H", img[i:i + 2])
        i += 2
        if n == 0:
            assert i == len(img)
            return out
        path = img[i:i + n].decode()
        (size,) = struct.unpack("<I", img[i + n:i + n + 4])
        i += n + 4
        out.append((path, img[i:i + size]))
        i += size


def petrel(*argv):
    """The real command line (cli.main) -> exit code."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def small_image(tmp_path, size=9000, name="app.img"):
    """An app image of its own (random bytes: a chunk prefix no other test uses)."""
    img = update.pack({"app/ladder.py": b"import cycle\n", "app/cycle.py": b"x = 1\n",
                       "lib/blob.mpy": os.urandom(size)})
    p = tmp_path / name
    p.write_bytes(img)
    return p, img


# ------------------------------------------------------------ the image
def test_the_built_image_holds_the_app_minus_what_an_update_never_replaces(tmp_path):
    assert petrel("update", "build", "--board", "sim", "-o", tmp_path / "app.img", "--version", 7,
                  "--name", "0.7.0") == 0
    img = (tmp_path / "app.img").read_bytes()
    entries = read_archive(img)
    paths = [p for p, _ in entries]
    assert paths == sorted(paths) and len(set(paths)) == len(paths)
    assert "app/ladder.mpy" in paths and "lib/mqtt.mpy" in paths and "app/cycle.mpy" in paths
    for never in ("main.py", "boot.py", "appslot.mpy", "appslot.py", "board.json"):
        assert never not in paths
    assert not any(p.startswith(("lib/senml.", "lib/cbordec.", "lib/cosecheck.")) for p in paths)  # host-only
    assert all(data[:1] == b"M" for p, data in entries if p.endswith(".mpy"))  # compiled, not source
    assert len(img) <= update.MAX_APP
    assert update.unpack(img) == entries  # update.py's reader agrees with the format's text
    notes = update.sidecar(tmp_path / "app.img")
    assert notes["version"] == 7 and notes["name"] == "0.7.0" and notes["sha256"] == hashlib.sha256(img).hexdigest()
    assert petrel("update", "inspect", tmp_path / "app.img") == 0
    for cmd in ("build", "inspect", "publish", "advance", "clear"):
        assert petrel("update", cmd, "--help") == 0
    assert petrel("update") == 2


BAD_PATHS = ["/app/x.mpy", "app/../main.py", "app//x.mpy", "app/./x.mpy", "a/b/c/d/e.mpy", "app/x y.mpy",
             "app/é.mpy", "app/" + "x" * 61 + ".mpy", "main.py", "boot.py", "appslot.mpy", "board.json",
             "config.json", "secrets.json", "secrets.new.json", "data/outbox"]


def test_paths_an_update_may_not_carry_are_refused_when_packed_and_when_read():
    ok = {"app/ladder.mpy": b"M", "lib/x.mpy": b"M"}
    assert update.unpack(update.pack(ok)) == sorted(ok.items())
    for bad in BAD_PATHS:
        with pytest.raises(update.ImageError):
            update.pack(dict(ok, **{bad: b"x"}))
        # the same entry in hand-made bytes (pack would not write it): refused when read
        raw = b"PTRLAPP1"
        for p, d in sorted(dict(ok, **{bad: b"x"}).items()):
            raw += struct.pack("<H", len(p.encode())) + p.encode() + struct.pack("<I", len(d)) + d
        with pytest.raises(update.ImageError):
            update.unpack(raw + b"\0\0")
    good = update.pack(ok)
    for broken in (good[:-1], good + b"\0", b"PTRLAPPX" + good[8:], good[:20],
                   update.pack({"app/ladder.py": b""}).replace(b"app/ladder.py", b"app/ladder.px")):
        with pytest.raises(update.ImageError):
            update.unpack(broken)
    # out of order or twice
    e = [(b"lib/x.mpy", b"M"), (b"app/ladder.mpy", b"M")]
    raw = b"PTRLAPP1" + b"".join(struct.pack("<H", len(p)) + p + struct.pack("<I", len(d)) + d for p, d in e)
    with pytest.raises(update.ImageError, match="sorted"):
        update.unpack(raw + b"\0\0")
    with pytest.raises(update.ImageError, match="entries"):
        update.pack(dict(("app/m%03d.mpy" % i, b"M") for i in range(200)) | {"app/ladder.mpy": b"M"})
    with pytest.raises(update.ImageError, match="ladder"):
        update.pack({"app/cycle.mpy": b"M"})
    # a file that is another entry's folder: the node could unpack only one of the two
    for files in ({"app": b"x", "app/ladder.mpy": b"M"}, dict(ok, lib=b"x", **{"lib-x": b"x"})):
        with pytest.raises(update.ImageError, match="which is a file"):
            update.pack(files)


def test_the_nodes_own_reader_unpacks_the_built_image_and_refuses_what_the_host_refuses(tmp_path, monkeypatch):
    """app/update.py (the node's code, under CPython) on the host's bytes:
    the built image unpacked into a folder whose tree hashes back to the
    image, and every path the host refuses refused by the node too."""
    from app import update as node

    img, files, _ = update.build("sim")
    monkeypatch.chdir(tmp_path)  # the node's paths are relative to its cwd (slots/1)
    p = tmp_path / "update.img"
    p.write_bytes(img)
    entries = node._entries(str(p), len(img))
    assert [e[0] for e in entries] == sorted(files)
    node._unpack(str(p), entries, "slots/1")
    for path, data in files.items():
        assert (tmp_path / "slots/1" / path).read_bytes() == data
    assert node._tree_digest("slots/1", entries) == hashlib.sha256(img).digest()
    ok = {"app/ladder.mpy": b"M", "lib/x.mpy": b"M"}
    for bad in BAD_PATHS:
        raw = b"PTRLAPP1"
        for path, d in sorted(dict(ok, **{bad: b"x"}).items()):
            raw += struct.pack("<H", len(path.encode())) + path.encode() + struct.pack("<I", len(d)) + d
        raw += b"\0\0"
        p.write_bytes(raw)
        with pytest.raises(node.downmsg.Refused):
            node._entries(str(p), len(raw))
    for path in [e[0] for e in entries] + ["lib/a/b/c.mpy", "app/x-y_z.mpy"]:
        assert node._path_problem(path) is None and update.path_problem(path) is None, path
    for bad in BAD_PATHS:
        assert update.path_problem(bad) is not None, bad


# ------------------------------------------------------------ the chain
@pytest.mark.parametrize("size,chunk", [(9000, 2048), (8192 - 8 - 2, 512), (1, 512), (70000, 3584)])
def test_each_chunk_carries_the_next_ones_hash_and_the_manifest_the_first(size, chunk):
    img = os.urandom(size)
    plan = update.Plan("app", img, chunk, 3, "t")
    n = (size + chunk - 1) // chunk
    assert len(plan.msgs) == n == len(plan.topics())
    assert plan.body["f"] == hashlib.sha256(plan.msgs[0]).digest() == plan.first
    assert plan.body["h"] == hashlib.sha256(img).digest() and plan.body["z"] == size and plan.body["c"] == chunk
    # the image's and the chunk size's: the same image at another --chunk is on other topics
    assert plan.body["p"] == "petrel/update/%s-%d" % (hashlib.sha256(img).hexdigest()[:16], chunk)
    assert update.Plan("app", img, 1024 if chunk != 1024 else 2048, 3, "t").prefix != plan.prefix
    assert plan.topics()[-1] == plan.body["p"] + "/%d" % (n - 1)
    whole = b""
    for i, m in enumerate(plan.msgs):
        data, nxt = m[:-32], m[-32:]
        assert nxt == (hashlib.sha256(plan.msgs[i + 1]).digest() if i + 1 < n else ZERO)
        assert len(data) == (chunk if i + 1 < n else size - chunk * (n - 1))
        whole += data
    assert whole == img


def test_chunk_sizes_and_firmware_images_are_checked():
    for c in (511, 3585):
        with pytest.raises(downlink.Refused):
            update.Plan("app", b"x" * 1000, c, 1, "t")
    for c in (1536, 3584, 4096):  # a fw chunk must divide the 4096-byte erase block
        with pytest.raises(downlink.Refused):
            update.Plan("fw", b"\xe9" * 5000, c, 1, "t")
    update.Plan("fw", b"\xe9" * 5000, 1024, 1, "t")
    update.check_fw(b"\xe9" + bytes(update.MAX_FW - 1))
    for bad in (b"", b"\x00" * 100, b"\xe9" * (update.MAX_FW + 1)):
        with pytest.raises(update.ImageError):
            update.check_fw(bad)
    for field in ({"version": 0}, {"version": 2 ** 32}, {"name": "x" * 33}, {"size": update.MAX_APP + 1}):
        kw = dict(target="app", version=1, name="n", size=10, sha=ZERO, chunk=512, first=ZERO, prefix="p/u/1")
        kw.update(field)
        with pytest.raises(ValueError):
            downlink.update_body(**kw)


# ------------------------------------------------------------ the manifest
def test_the_manifest_verifies_with_pycose_and_opens_with_the_nodes_downmsg():
    import downmsg  # lib/, under CPython (harness)

    hk = os.urandom(32)
    k_mac, _ = downlink.keys(hk)
    plan = update.Plan("app", os.urandom(5000), 1024, 9, "0.9.0")
    data = downlink.seal("update", "p-x1", 1767225600777, plan.body, k_mac)
    assert len(data) < 400  # small whatever the image's size
    ok, version, kid, body = opened(data, k_mac, "update")
    assert ok and version == 1767225600777 and kid == b"p-x1"
    assert body == dict(plan.body, k="update")
    for other in ("config", "hold"):
        assert not opened(data, k_mac, other)[0]
    v, body = downmsg.open_message("update", data, k_mac, b"p-x1")
    m = downmsg.update_manifest(body)
    assert v == 1767225600777
    assert (m.t, m.v, m.n, m.z, m.h, m.c, m.f, m.p) == ("app", 9, "0.9.0", 5000, plan.body["h"], 1024,
                                                        plan.first, plan.prefix)
    assert m.chunks() == len(plan.msgs)
    fw = update.Plan("fw", b"\xe9" + os.urandom(9000), 2048, 4, "fw-1.29")
    m = downmsg.update_manifest(downmsg.open_message("update", downlink.seal("update", "p-x1", 2, fw.body, k_mac),
                                                     k_mac, b"p-x1")[1])
    assert m.t == "fw" and m.c == 2048 and m.chunks() == 5
    with pytest.raises(downmsg.Refused) as e:  # a manifest on the config topic is not a config
        downmsg.open_message("config", data, k_mac, b"p-x1")
    assert e.value.args[0] == "forged"


# ------------------------------------------------------------ publish
def test_publish_retains_the_chunks_once_and_a_sealed_manifest_per_device(broker, tmp_path, capsys):
    a, b = new_id("ua"), new_id("ub")
    keys = {a: os.urandom(32), b: os.urandom(32)}
    reg = registry(tmp_path / "devices.sqlite", keys, down_keys={b: os.urandom(32)})
    img_path, img = small_image(tmp_path, 60000)
    plan = update.Plan("app", img, 2048, 7, "0.7.0")
    try:
        assert petrel("update", "publish", img_path, "--version", 7, "--name", "0.7.0", "--devices",
                      "%s,%s" % (a, b), *broker_args(broker, reg)) == 0
        out = capsys.readouterr()
        text = out.out + out.err
        for k in keys.values():
            assert k.hex() not in text
        assert "30 chunks" in text and plan.prefix in text and a in text and b in text
        # a subscriber that comes later: what the broker retained
        w = Watcher(broker.ports["plain"], plan.prefix + "/+")
        got = w.wait(len(plan.msgs))
        w.close()
        assert all(r for _, _, r, _ in got)
        assert dict((t, m) for t, m, _, _ in got) == dict(zip(plan.topics(), plan.msgs))
        known = downlink.load_device_keys(reg)
        versions = []
        for d in (a, b):
            w = Watcher(broker.ports["plain"], downlink.topic(d, "update"))
            (t, data, retained, _), = w.wait(1)
            w.close()
            k_mac = downlink.keys(*known[d])[0]
            ok, v, kid, body = opened(data, k_mac, "update")
            assert retained and ok and kid == d.encode() and body == dict(plan.body, k="update")
            versions.append(v)
            with sqlite3.connect(str(reg)) as db:  # the registry's counter, the last one handed out
                assert db.execute("SELECT last_version FROM down_versions WHERE device = ?", (d,)).fetchone()[0] == v
        assert not opened(data, downlink.keys(keys[b])[0], "update")[0]  # b's provisioned key, not the derived one

        # refused, exit 2, nothing published: the same version again, an older one, a device without
        # keys, an image breaking the rules, a firmware that is not one
        w = Watcher(broker.ports["plain"], "petrel/+/down/update")
        time.sleep(0.3)
        seen = len(w.got)
        bad_img = tmp_path / "bad.img"
        raw = b"PTRLAPP1"
        for p, d in (("app/ladder.py", b"x"), ("main.py", b"x")):
            raw += struct.pack("<H", len(p)) + p.encode() + struct.pack("<I", len(d)) + d
        bad_img.write_bytes(raw + b"\0\0")
        (tmp_path / "fw.bin").write_bytes(b"\x00" * 4096)
        for argv in ([img_path, "--version", 7, "--devices", a],
                     [img_path, "--version", 6, "--devices", b],
                     [img_path, "--version", 8, "--devices", "%s,p-nokeys" % a],
                     [bad_img, "--version", 8, "--devices", a],
                     [tmp_path / "fw.bin", "--target", "fw", "--version", 1, "--devices", a],
                     [img_path, "--version", 8, "--devices", a, "--chunk", 4000],
                     [img_path, "--version", 8]):
            assert petrel("update", "publish", *argv, *broker_args(broker, reg)) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("petrel update publish:"), (argv, err)
        time.sleep(0.3)
        assert len(w.got) == seen
        w.close()
        # a higher version goes through for one device
        assert petrel("update", "publish", img_path, "--version", 8, "--devices", a, *broker_args(broker, reg)) == 0
        # clear: the chunks are gone from the broker
        assert petrel("update", "clear", img_path, "--host", "localhost", "--port", broker.ports["tls"],
                      "--ca", broker.pki["ca"], "--registry", reg) == 0
        assert "cleared %d retained chunks" % len(plan.msgs) in capsys.readouterr().out
        w = Watcher(broker.ports["plain"], plan.prefix + "/+")
        time.sleep(0.5)
        assert w.got == []
        w.close()
        # --chunks-only: the same chunks back (a broker that lost them), no manifest, the registry unchanged
        with sqlite3.connect(str(reg)) as db:
            before = db.execute("SELECT device, last_version FROM down_versions ORDER BY device").fetchall()
        w = Watcher(broker.ports["plain"], "petrel/+/down/update")
        time.sleep(0.3)
        seen = len(w.got)
        assert petrel("update", "publish", img_path, "--version", 8, "--chunks-only",
                      *broker_args(broker, reg)) == 0
        time.sleep(0.3)
        assert len(w.got) == seen
        w.close()
        with sqlite3.connect(str(reg)) as db:
            assert db.execute("SELECT device, last_version FROM down_versions ORDER BY device").fetchall() == before
        w = Watcher(broker.ports["plain"], plan.prefix + "/+")
        got = w.wait(len(plan.msgs))
        w.close()
        assert dict((t, m) for t, m, _, _ in got) == dict(zip(plan.topics(), plan.msgs))
    finally:
        clear(broker.ports["plain"], plan.topics() + [downlink.topic(d, "update") for d in (a, b)])


NODE_TAKES = r"""
import json, os, sys
from petrel import harness
harness.install()
import downmsg
from app import update
os.mkdir("data")
got = json.load(open(sys.argv[1]))
class St:  # the counters app.state keeps
    def __init__(self):
        self.counts = {}
    def bump(self, k):
        self.counts[k] = self.counts.get(k, 0) + 1
st = St()
k_mac = bytes.fromhex(got["k_mac"])
_, body = downmsg.open_message("update", bytes.fromhex(got["manifest"]), k_mac, got["device"].encode())
u = update.load()
u.accept(st, downmsg.update_manifest(body))
chunks = [(t, bytes.fromhex(m)) for t, m in got["chunks"]]
t0, m0 = chunks[0]
u.take(st, t0, m0[:-33] + bytes([m0[-33] ^ 1]) + m0[-32:])  # one bit off: refused, nothing written
forged = dict(st.counts), os.path.exists(update.IMG)
for t, m in chunks:
    u.take(st, t, m)
u.settle(st)
print(json.dumps({"forged": forged, "done": u.done, "busy": u.busy, "err": u.err}))
"""


def test_the_nodes_download_takes_the_chunks_and_manifest_the_broker_kept(broker, tmp_path):
    """What publish left on the broker, as a node's session gets it, fed to
    the node's app/update.py (CPython, in a process and a flash folder of its
    own): the manifest accepted, a chunk off by one bit refused, the rest
    taken in order, the image verified, unpacked and staged in slot 1."""
    a = new_id("un")
    reg = registry(tmp_path / "devices.sqlite", {a: os.urandom(32)})
    img_path, img = small_image(tmp_path, 20000)
    plan = update.Plan("app", img, 1024, 4, "v4")
    try:
        assert petrel("update", "publish", img_path, "--version", 4, "--name", "v4", "--chunk", 1024,
                      "--devices", a, *broker_args(broker, reg)) == 0
        w = Watcher(broker.ports["plain"], downlink.topic(a, "update"))
        manifest = w.wait(1)[0][1]
        w.close()
        w = Watcher(broker.ports["plain"], plan.prefix + "/+")
        chunks = sorted(((t, m) for t, m, _, _ in w.wait(len(plan.msgs))), key=lambda x: int(x[0].rsplit("/", 1)[1]))
        w.close()
        flash = tmp_path / "flash"
        flash.mkdir()
        (tmp_path / "got.json").write_text(json.dumps({
            "device": a, "manifest": manifest.hex(), "chunks": [(t, m.hex()) for t, m in chunks],
            "k_mac": downlink.keys(*downlink.load_device_keys(reg)[a])[0].hex()}))
        p = subprocess.run([sys.executable, "-c", NODE_TAKES, str(tmp_path / "got.json")], cwd=flash,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["forged"] == [{"dr_forged": 1}, False]
        assert out["done"] == len(plan.msgs) and out["busy"] == 0 and out["err"].startswith("update: chunk 0")
        for path, data in update.unpack(img):
            assert (flash / "slots/1" / path).read_bytes() == data
        assert not (flash / "data/update.img").exists()
    finally:
        clear(broker.ports["plain"], plan.topics() + [downlink.topic(a, "update")])


def test_a_firmware_is_published_in_chunks_that_divide_the_erase_block(broker, tmp_path):
    a = new_id("uf")
    reg = registry(tmp_path / "devices.sqlite", {a: os.urandom(32)})
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(b"\xe9" + os.urandom(10000))
    plan = update.Plan("fw", fw.read_bytes(), 2048, 3, "v3")
    try:
        assert petrel("update", "publish", fw, "--target", "fw", "--version", 3, "--chunk", 3072,
                      "--devices", a, *broker_args(broker, reg)) == 2
        assert petrel("update", "publish", fw, "--target", "fw", "--version", 3, "--name", "v3",
                      "--devices", a, *broker_args(broker, reg)) == 0
        w = Watcher(broker.ports["plain"], downlink.topic(a, "update"))
        ok, _, _, body = opened(w.wait(1)[0][1], downlink.keys(downlink.load_device_keys(reg)[a][0])[0], "update")
        w.close()
        assert ok and body == dict(plan.body, k="update") and body["t"] == "fw" and body["c"] == 2048
        w = Watcher(broker.ports["plain"], plan.prefix + "/+")
        assert len(w.wait(5)) == 5
        w.close()
        # the app target's version is its own: v1 of the app is still above nothing
        img_path, img = small_image(tmp_path)
        app = update.Plan("app", img, 2048, 1, "v1")
        assert petrel("update", "publish", img_path, "--version", 1, "--devices", a, *broker_args(broker, reg)) == 0
    finally:
        clear(broker.ports["plain"], plan.topics() + app.topics() + [downlink.topic(a, "update")])


# ------------------------------------------------------------ the staged rollout
class Fleet:
    """Devices in a registry and the collector's store their health records arrive in."""

    def __init__(self, tmp_path, n, tag):
        self.devices = [new_id("%s%d" % (tag, i)) for i in range(n)]
        self.keys = dict((d, os.urandom(32)) for d in self.devices)
        self.reg = registry(tmp_path / "devices.sqlite", self.keys)
        self.db = tmp_path / "readings.sqlite"
        self.seq = dict((d, 0) for d in self.devices)
        self.ver = verify.Verifier(self.keys)

    def health(self, d, **fields):
        self.seq[d] += 1
        with _store.open(self.db) as st:
            st.commit(self.ver.open("petrel/%s/health" % d, testmsg.health(self.keys[d], d, self.seq[d], fields)))


def _retained_manifests(broker, devices, wait=0.5):
    w = Watcher(broker.ports["plain"], "petrel/+/down/update")
    time.sleep(wait)
    w.close()
    return set(t.split("/")[1] for t, m, r, _ in w.got if r and m and t.split("/")[1] in devices)


def test_the_rest_get_the_manifest_once_every_canary_confirmed(broker, tmp_path, capsys):
    f = Fleet(tmp_path, 4, "uc")
    a, b, c, d = f.devices
    img_path, img = small_image(tmp_path)
    plan = update.Plan("app", img, 2048, 7, "v7")
    for dev in f.devices:
        f.health(dev, appv=6, appt=0, aprb=0, aperr="")
    try:
        assert petrel("update", "publish", img_path, "--version", 7, "--devices", ",".join(f.devices),
                      "--canary", 2, *broker_args(broker, f.reg)) == 0
        assert _retained_manifests(broker, f.devices) == {a, b}
        # c and d: a version at or below the one waiting for them is refused too
        assert petrel("update", "publish", img_path, "--version", 7, "--devices", c, *broker_args(broker, f.reg)) == 2
        # the canaries are downloading these chunks: clear refuses (exit 2), the chunks stay
        capsys.readouterr()
        clear_args = ("update", "clear", img_path, "--host", "localhost", "--port", broker.ports["tls"],
                      "--ca", broker.pki["ca"], "--registry", f.reg)
        assert petrel(*clear_args) == 2
        err = capsys.readouterr().err
        assert "is canary" in err and plan.prefix in err and "--force" in err
        w = Watcher(broker.ports["plain"], plan.prefix + "/+")
        assert len(w.wait(len(plan.msgs))) == len(plan.msgs)
        w.close()
        assert update.rollouts(f.reg)[0]["state"] == "canary"
        f.health(a, appv=7, appt=0, aprb=0, aperr="")
        f.health(b, appv=7, appt=1, aprb=0, aperr="", upd="")  # b still on trial
        capsys.readouterr()
        assert petrel("update", "advance", "--store", f.db, *broker_args(broker, f.reg)) == 0
        assert "waiting on canaries" in capsys.readouterr().out
        assert _retained_manifests(broker, f.devices) == {a, b}
        assert update.rollouts(f.reg)[0]["state"] == "canary"
        f.health(b, appv=7, appt=0, aprb=0, aperr="")
        assert petrel("update", "advance", "--store", f.db, *broker_args(broker, f.reg)) == 0
        assert "all 2 canaries confirmed" in capsys.readouterr().out
        assert _retained_manifests(broker, f.devices) == {a, b, c, d}
        r = update.rollouts(f.reg)[0]
        assert r["state"] == "done" and r["sent"] == f.devices
        known = downlink.load_device_keys(f.reg)
        w = Watcher(broker.ports["plain"], downlink.topic(d, "update"))
        ok, _, _, body = opened(w.wait(1)[0][1], downlink.keys(*known[d])[0], "update")
        w.close()
        assert ok and body == dict(plan.body, k="update")
        # fleet status: the versions running, trials, the rollout
        f.health(c, appv=6, appt=0, aprb=0, aperr="", upd="app v7 3/5")
        assert petrel("fleet", "status", "--db", f.db, "--registry", f.reg) == 0
        rows = dict((line.split()[0], line) for line in capsys.readouterr().out.splitlines()[1:])
        assert "v7" in rows[a] and "canary sent, rollout done" in rows[a] and "trial" not in rows[a]
        assert "app v7 3/5" in rows[c] and "sent, rollout done" in rows[c]
        # the rollout done: clear takes the chunks (every chunk size of the image) and marks it
        assert petrel(*clear_args) == 0
        assert "cleared %d retained chunks" % len(plan.msgs) in capsys.readouterr().out
        assert update.rollouts(f.reg)[0]["state"] == "cleared"
    finally:
        clear(broker.ports["plain"], plan.topics() + [downlink.topic(x, "update") for x in f.devices])


def test_a_canary_that_rolls_back_halts_the_rollout_and_the_rest_never_get_it(broker, tmp_path, capsys):
    f = Fleet(tmp_path, 3, "ur")
    a, b, c = f.devices
    img_path, img = small_image(tmp_path)
    plan = update.Plan("app", img, 2048, 12, "v12")
    for dev in f.devices:
        f.health(dev, appv=11, appt=0, aprb=1, aperr="v9 crashed on import")  # an older rollback
    try:
        assert petrel("update", "publish", img_path, "--version", 12, "--devices", ",".join(f.devices),
                      "--canary", 2, *broker_args(broker, f.reg)) == 0
        f.health(a, appv=12, appt=0, aprb=1, aperr="v9 crashed on import")  # a confirmed
        f.health(b, appv=12, appt=1, aprb=1, aperr="v9 crashed on import")  # b on trial ...
        f.health(b, appv=11, appt=0, aprb=2, aperr="v12: 2 crashed wakes")  # ... rolled back
        capsys.readouterr()
        assert petrel("update", "advance", "--store", f.db, *broker_args(broker, f.reg)) == 0
        out = capsys.readouterr().out
        assert "halted" in out and b in out and "v12: 2 crashed wakes" in out
        for _ in range(2):  # b confirming something later changes nothing: halted stays halted
            f.health(b, appv=12, appt=0, aprb=2, aperr="v12: 2 crashed wakes")
            assert petrel("update", "advance", "--store", f.db, *broker_args(broker, f.reg)) == 0
        r = update.rollouts(f.reg)[0]
        assert r["state"] == "halted" and r["sent"] == [a, b]
        assert _retained_manifests(broker, f.devices) == {a, b}
        assert petrel("fleet", "status", "--db", f.db, "--registry", f.reg) == 0
        rows = dict((line.split()[0], line) for line in capsys.readouterr().out.splitlines()[1:])
        assert "halted, not sent" in rows[c] and "2 (v12: 2 crashed wakes)" in rows[b]
    finally:
        clear(broker.ports["plain"], plan.topics() + [downlink.topic(x, "update") for x in f.devices])


def test_follow_advances_until_the_canary_confirmed(broker, tmp_path):
    f = Fleet(tmp_path, 2, "uw")
    a, b = f.devices
    img_path, img = small_image(tmp_path)
    plan = update.Plan("app", img, 2048, 2, "v2")
    result = []
    t = threading.Thread(target=lambda: result.append(petrel(
        "update", "publish", img_path, "--version", 2, "--devices", "%s,%s" % (a, b), "--canary", 1,
        "--follow", "--poll", 0.2, "--follow-timeout", 30, "--store", f.db, *broker_args(broker, f.reg))))
    try:
        t.start()
        deadline = time.monotonic() + 15
        while [r["state"] for r in update.rollouts(f.reg)] != ["canary"]:
            assert time.monotonic() < deadline, "the publish did not get to its canary"
            time.sleep(0.1)
        assert _retained_manifests(broker, f.devices, 0.3) == {a}
        f.health(a, appv=2, appt=1, aprb=0)  # its trial wake, then confirmed: seen arriving
        f.health(a, appv=2, appt=0, aprb=0)
        t.join(15)
        assert result == [0]
        assert _retained_manifests(broker, f.devices) == {a, b}
    finally:
        t.join(15)
        clear(broker.ports["plain"], plan.topics() + [downlink.topic(x, "update") for x in f.devices])


# ------------------------------------------------------------ judging a canary
def test_a_canary_is_judged_by_its_version_its_trial_and_its_rollbacks():
    before = {"appv": 6, "appt": 0, "aprb": 0, "aperr": ""}
    j = update.judge
    assert j(before, [], 7)[0] == "waiting"
    assert j(before, [{"appv": 6, "appt": 0, "aprb": 0, "upd": "app v7 3/9"}], 7) == ("waiting", "downloading app v7 3/9")
    assert j(before, [{"appv": 7, "appt": 1, "aprb": 0}], 7)[0] == "trial"
    assert j(before, [{"appv": 7, "appt": 1, "aprb": 0}, {"appv": 7, "appt": 0, "aprb": 0}], 7)[0] == "confirmed"
    # the three signs of a rollback
    assert j(before, [{"appv": 6, "appt": 0, "aprb": 1, "aperr": "x"}], 7)[0] == "rolled back"
    assert j(before, [{"appv": 6, "appt": 0, "aprb": 0, "aperr": "v7 hung"}], 7)[0] == "rolled back"
    assert j(before, [{"appv": 7, "appt": 1}, {"appv": 6, "appt": 0}], 7)[0] == "rolled back"
    # a rollback before the rollout is not this one's; nor is another version's why
    old = {"appv": 6, "appt": 0, "aprb": 3, "aperr": "v5 crashed"}
    assert j(old, [dict(old, appv=7)], 7)[0] == "confirmed"
    assert j(old, [dict(old, aperr="v17 crashed")], 7)[0] == "waiting"
    # no record before: rollbacks counted from the first one after
    assert j(None, [{"appv": 6, "aprb": 2}, {"appv": 7, "appt": 0, "aprb": 2}], 7)[0] == "confirmed"
    assert j(None, [{"appv": 6, "aprb": 2}, {"appv": 6, "aprb": 3}], 7)[0] == "rolled back"
    # a later version already running counts as past this one
    assert j(before, [{"appv": 8, "appt": 0, "aprb": 0}], 7)[0] == "confirmed"


def test_a_firmware_canary_is_judged_by_its_firmware_fields_not_the_apps():
    j = update.judge
    before = {"appv": 9, "appt": 0, "aprb": 0, "aperr": "", "fwv": 2, "fwt": 0, "uperr": ""}
    # the app's version above the firmware's rollout version: no evidence of the firmware at all
    assert j(before, [dict(before)], 3, "fw")[0] == "waiting"
    assert j(before, [dict(before, upd="fw v3 5/24")], 3, "fw") == ("waiting", "downloading fw v3 5/24")
    # its trial wake (fwv moves only once confirmed), then confirmed
    trial = dict(before, fwt=1)
    assert j(before, [trial], 3, "fw")[0] == "trial"
    assert j(before, [trial, dict(before, fwv=3)], 3, "fw")[0] == "confirmed"
    assert j(before, [dict(before, upd="fw v3 23/24"), dict(before, fwv=3)], 3, "fw")[0] == "confirmed"
    # rolled back: its why in uperr (from fwerr) or fwerr, or still v2 after its trial
    assert j(before, [trial, dict(before, uperr="v3 rolled back: no uplink in its trial wake")], 3, "fw") \
        == ("rolled back", "v3 rolled back: no uplink in its trial wake")
    assert j(before, [dict(before, fwerr="v3 refused by set_boot: -5379")], 3, "fw")[0] == "rolled back"
    assert j(before, [trial, dict(before)], 3, "fw") == ("rolled back", "back to v2 after its trial of v3")
    # a refusal of the manifest is not a rollback; an app's rollback is not the firmware's
    assert j(before, [dict(before, uperr="update: fw v3: firmware: a firmware trial is on")], 3, "fw")[0] == "waiting"
    assert j(before, [dict(before, aprb=1, aperr="v3 crashed")], 3, "fw")[0] == "waiting"
    # fwv is the version itself, not a later one
    assert j(before, [trial, dict(before, fwv=4)], 3, "fw")[0] == "waiting"


def test_a_canary_is_confirmed_only_on_evidence_from_after_the_rollout():
    j = update.judge
    # already running the version (a record before the rollout shows it): not this rollout's doing
    at7 = {"appv": 7, "appt": 0, "aprb": 0, "aperr": ""}
    assert j(at7, [dict(at7)], 7) == ("waiting", "runs v7, not seen arriving since the rollout")
    # no record before, and the first after already shows it confirmed: not evidence either
    assert j(None, [dict(at7)], 7)[0] == "waiting"
    # its download or its trial seen since, or an older version before it: evidence
    assert j(None, [dict(at7, appv=6, upd="app v7 2/9"), dict(at7)], 7)[0] == "confirmed"
    assert j(None, [dict(at7, appt=1), dict(at7)], 7)[0] == "confirmed"
    assert j(dict(at7, appv=6), [dict(at7)], 7)[0] == "confirmed"
    # another target's download is no evidence for this one
    assert j(None, [dict(at7, upd="fw v7 2/9"), dict(at7)], 7)[0] == "waiting"


def test_clear_force_takes_the_chunks_of_a_rollout_under_way_and_ends_it(broker, tmp_path, capsys):
    f = Fleet(tmp_path, 2, "uf")
    img_path, img = small_image(tmp_path)
    plan = update.Plan("app", img, 1024, 4, "v4")
    other = update.Plan("app", img, 2048, 4, "v4")  # the same image at another chunk size: other topics
    try:
        assert petrel("update", "publish", img_path, "--version", 4, "--devices", ",".join(f.devices),
                      "--canary", 1, "--chunk", 1024, *broker_args(broker, f.reg)) == 0
        assert petrel("update", "publish", img_path, "--version", 4, "--chunks-only",
                      *broker_args(broker, f.reg)) == 0  # --chunk 2048: the download's chunks untouched
        w = Watcher(broker.ports["plain"], plan.prefix + "/+")
        got = w.wait(len(plan.msgs))
        w.close()
        assert dict((t, m) for t, m, _, _ in got) == dict(zip(plan.topics(), plan.msgs))
        capsys.readouterr()
        assert petrel("update", "clear", "--prefix", plan.prefix, "--force", "--host", "localhost", "--port",
                      broker.ports["tls"], "--ca", broker.pki["ca"], "--registry", f.reg) == 0
        out = capsys.readouterr()
        assert "warning" in out.err and "cleared %d retained chunks" % len(plan.msgs) in out.out
        assert update.rollouts(f.reg)[0]["state"] == "cleared"  # advance leaves it be
        w = Watcher(broker.ports["plain"], "petrel/update/+/+")
        time.sleep(0.5)
        w.close()
        left = set(t for t, m, r, _ in w.got if r and m)
        assert left == set(other.topics())  # only --prefix's chunks went
    finally:
        clear(broker.ports["plain"], plan.topics() + other.topics() + [downlink.topic(x, "update") for x in f.devices])
