"""Power-cut campaign for an app update (issue 17, item 2) on the real
filesystem (MicroPython VM only).

    micropython powercut_update.py [-q] START POSITIONS [IMAGE_BYTES [CHUNK]]

START        factory  the node runs its factory app: the update goes to slot 1
             slot1    it runs v5 from slot 1, confirmed: the update goes to
                      slot 2, and slot 1 is the trial's way back
POSITIONS    all | spread:K (K cut points over the run, plus every point of
             one chunk's write, of the stage, of the switch and of the
             confirmation) | a,b,c (explicit)
IMAGE_BYTES  about how big the new app image is (default 6000)
CHUNK        its chunk size (default 512)

littlefs (vfs.VfsLfs2) sits on the NOR flash model (boards/sim/norflash.py),
the cwd inside it, so app.update's data/update, data/update.img and the
slots/ folders land there beside the factory app (app/, lib/) and the
outbox (data/outbox, every append on flash). The scenario is a run of wakes
as app.cycle orders them: appslot.choose() (the boot), readings appended, the
outbox drained a little, appslot.uplink(True) while on trial, then the
mailbox's part: the retained manifest (accepted once), the next chunks
(a fresh update.load() each wake), the settle (whole-image check, unpack,
tree check, appslot.stage). It ends when the new image is active and
confirmed and the download is cleaned up.

The power dies at the N-th program or erase of that run, leaving it half
done. Then the flash is mounted again and the node boots (appslot.choose()
with its module state reset), and the checks run: the chosen app folder holds
exactly the tree of the version appslot says runs there (the factory's, v5's
or the new v7's, hashed back into the image's form); no slot the state names
(pending, active, a trial's way back) is half written or holds another
version; a stage or a confirmation that returned before the cut is
not undone; every reading the outbox accepted and was not told to forget is
there, in order. Then the scenario resumes from what is on flash to the end
(the new image confirmed and active, the factory untouched, no reading lost).
One line per cut point:
  CUT n ok|FAIL why
and a closing line "powercut-update: N passed, N failed".
"""

import hashlib
import os
import struct
import sys

import vfs

import appslot
import downmsg
import eventlog
import outbox
import simstate
from app import update, updating  # noqa: F401  imported before the cwd holds a factory app/
from norflash import NorFlash

MOUNT = "/pc"
OUTBOX = "data/outbox"
CAPACITY = 65536  # nothing dropped: every reading stays until acknowledged
SETUP_READINGS = 30  # in the outbox before the update starts
READINGS_PER_WAKE = 3
ACK_PER_WAKE = 2  # the outbox grows over the run: there is always something to lose
CHUNKS_PER_WAKE = 3  # cfg update_chunks
MAX_WAKES = 60  # a resumed run that has not ended by then is stuck
V_OLD = 5  # START slot1: the app running from slot 1 before the update
V_NEW = 7


class Cut(Exception):
    """The power died: nothing more runs in this boot."""


class Cfg:
    update_chunks = CHUNKS_PER_WAKE


class St:
    """What app.update and app.updating use of app.state's record."""

    def __init__(self):
        self.upd = 0

    def bump(self, name, n=1):
        setattr(self, name, getattr(self, name, 0) + n)


# ------------------------------------------------------------ the images (U-spec's format)
def pack(files):
    """{path: bytes} -> the app image: entries sorted by path."""
    out = b"PTRLAPP1"
    for path in sorted(files):
        raw = path.encode()
        out += struct.pack("<H", len(raw)) + raw + struct.pack("<I", len(files[path])) + files[path]
    return out + b"\0\0"


def filler(tag, n):
    """n bytes of Python-looking text, different for each tag."""
    line = ("# %s " % tag).encode()
    out = b""
    i = 0
    while len(out) < n:
        out += line + (b"%06d\n" % (i * 7919 % 1000003))
        i += 1
    return out[:n]


FACTORY = {"app/__init__.py": b"", "app/ladder.py": b"def run():\n    return 'factory'\n",
           "app/cycle.py": filler("factory cycle", 900), "lib/util.py": filler("factory util", 700)}


def new_files(size, v):
    """App version v: about size bytes of image, more files than the factory."""
    body = max(600, size - 200)
    tag = "v%d" % v
    return {"app/__init__.py": b"", "app/ladder.py": b"def run():\n    return '%s'\n" % tag.encode(),
            "app/cycle.py": filler(tag + " cycle", body * 4 // 10),
            "app/sense.py": filler(tag + " sense", body * 2 // 10),
            "lib/util.py": filler(tag + " util", body * 3 // 10),
            "lib/extra/more.py": filler(tag + " more", body - body * 9 // 10)}


def chain(img, c):
    """The chunk messages: data_i || SHA-256(message i+1) (zeros for the last)."""
    n = (len(img) + c - 1) // c
    msgs = [b""] * n
    nxt = bytes(32)
    for i in range(n - 1, -1, -1):
        msgs[i] = img[i * c:(i + 1) * c] + nxt
        nxt = hashlib.sha256(msgs[i]).digest()
    return msgs


class Release:
    """An image of version v, its chunk messages and its manifest's body
    (sealed with downlink version downv: the mailbox takes it once)."""

    def __init__(self, size, c, v, downv):
        self.v, self.downv = v, downv
        self.img = pack(new_files(size, v))
        self.h = hashlib.sha256(self.img).digest()
        self.msgs = chain(self.img, c)
        self.p = "petrel/update/" + "".join("%02x" % b for b in self.h[:8])
        self.body = {"k": "update", "t": "app", "v": v, "n": "0.%d.0" % v, "z": len(self.img),
                     "h": self.h, "c": c, "f": hashlib.sha256(self.msgs[0]).digest(), "p": self.p}

    def chunk(self, topic):
        return self.msgs[int(topic.rsplit("/", 1)[1])]


H_FACTORY = hashlib.sha256(pack(FACTORY)).digest()


# ------------------------------------------------------------ flash
def _isdir(path):
    return os.stat(path)[0] & 0x4000


def _files(d, rel, out):
    for name in os.listdir(d if d else "."):
        p = (d + "/" + name) if d else name
        r = (rel + "/" + name) if rel else name
        if _isdir(p):
            _files(p, r, out)
        else:
            with open(p, "rb") as f:
                out[r] = f.read()


def tree_hash(d, tops=None):
    """The files under folder d (only its folders tops, if given) packed back
    into the image's form -> SHA-256; None if a folder is missing."""
    out = {}
    try:
        if tops is None:
            _files(d, "", out)
        else:
            for top in tops:
                _files((d + "/" + top) if d else top, top, out)
    except OSError:
        return None
    return hashlib.sha256(pack(out)).digest()


def mkdirs(path):
    sub = ""
    for part in path.split("/"):
        sub = sub + "/" + part if sub else part
        try:
            os.mkdir(sub)
        except OSError:
            pass


def mount(dev):
    try:
        vfs.umount(MOUNT)
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev.block_device()), MOUNT)
    os.chdir(MOUNT)


def ops(dev):
    return dev.programs + dev.erases


# ------------------------------------------------------------ the model (what returned before the cut)
class Model:
    def __init__(self):
        self.returned = {}  # outbox seq -> reading number
        self.in_flight = None  # ("append", i) | ("ack", upto) at the cut
        self.acked = 0
        self.max_seq = 0
        self.next_reading = 1
        self.staged = False  # appslot.stage returned: the next boot runs the new app
        self.confirmed = False  # appslot.uplink(True) returned on trial: it stays
        self.wakes = 0

    def copy(self):
        m = Model()
        m.returned = dict(self.returned)
        m.acked, m.max_seq, m.next_reading = self.acked, self.max_seq, self.next_reading
        return m


def payload(i):
    return b"reading-%05d" % i


class Node:
    """One run on one chip: the wakes, each step checked for the cut."""

    def __init__(self, dev, rel, m, phases=None):
        self.dev, self.rel, self.m = dev, rel, m
        self.phases = phases  # the uncut run notes where its steps start and end
        self.log = []
        self.path = list(sys.path)

    def alive(self):
        if self.dev.dead:
            raise Cut()

    def step(self, name, fn, *args):
        """fn(*args); a flash error from the dead chip is the cut, any other
        error a failure of the code under test."""
        start = ops(self.dev)
        try:
            r = fn(*args)
        except OSError:
            if self.dev.dead:
                raise Cut()
            raise
        self.alive()
        if self.phases is not None:
            self.phases.append((name, start + 1, ops(self.dev)))
        return r

    def boot(self):
        """main.py's first step, in a fresh module state; sys.path as the
        harness has it afterwards (the firmware's modules are loaded)."""
        appslot._cur = None
        sys.path[:] = self.path
        try:
            self.step("choose", appslot.choose)
            return list(sys.path)
        finally:
            sys.path[:] = self.path

    def append(self, ob):
        m = self.m
        i = m.next_reading
        m.in_flight = ("append", i)
        seq = self.step("append", ob.append, payload(i), i)
        m.in_flight = None
        m.returned[seq] = i
        m.max_seq = max(m.max_seq, seq)
        m.next_reading += 1

    def drain(self, ob):
        batch = self.step("peek", ob.peek, ACK_PER_WAKE)
        if not batch:
            return
        upto = batch[-1][0]
        self.m.in_flight = ("ack", upto)
        self.step("ack", ob.ack, upto)
        self.m.in_flight = None
        self.m.acked = upto

    def mailbox(self, st):
        """app.mailbox.receive's part: the retained manifest (new only while
        data/update has not kept its downlink version), the chunks, then the
        save and the settle (_Update.finish)."""
        u = self.step("load", update.load)
        dirty = False
        if u.downv < self.rel.downv:
            try:
                if self.step("accept", u.accept, st, downmsg.update_manifest(self.rel.body)):
                    dirty = True
            except downmsg.Refused as e:
                raise AssertionError("manifest refused: %r" % (e.args,))
            u.downv = self.rel.downv
            dirty = True
        for topic in u.wanted(Cfg):
            n = int(topic.rsplit("/", 1)[1])
            dirty = self.step("chunk:%d" % n, u.take, st, topic, self.rel.chunk(topic)) or dirty
        if dirty:
            self.step("save", u.save)
        self.step("settle", u.settle, st)
        u.flag(st)

    def wake(self):
        """One wake in app.cycle's order."""
        self.m.wakes += 1
        self.boot()
        ob = self.step("outbox", outbox.Outbox, OUTBOX, CAPACITY)
        for _ in range(READINGS_PER_WAKE):
            self.append(ob)
        trial = appslot.on_trial()
        self.drain(ob)
        if trial:
            self.step("confirm", appslot.uplink, True)
            self.m.confirmed = True
        self.mailbox(St())

    def finished(self):
        s = appslot._load()
        u = update.load()
        return (s.active != 0 and s.v_active == self.rel.v and not s.trial and not s.pending
                and not u.busy)

    def run(self):
        """Wakes until the update is confirmed and cleaned up."""
        for _ in range(MAX_WAKES):
            self.wake()
            if self.finished():
                return
        raise AssertionError("not finished after %d wakes" % MAX_WAKES)


# ------------------------------------------------------------ the board
class Bench:
    """A chip formatted and set up once (factory app, readings); each run
    starts from a copy of it."""

    def __init__(self, start, size, c):
        self.rel = Release(size, c, V_NEW, 2)
        self.hashes = {0: H_FACTORY, V_NEW: self.rel.h}  # version -> the image that is that app
        simstate.reset_world()
        dev = NorFlash(128)  # 512 KiB
        vfs.VfsLfs2.mkfs(dev.block_device())
        mount(dev)
        for path, data in FACTORY.items():
            mkdirs(path.rsplit("/", 1)[0])
            with open(path, "wb") as f:
                f.write(data)
        os.mkdir("data")
        self.model = Model()
        self.v_start = 0  # the app version running when the update comes
        node = Node(dev, self.rel, self.model)
        appslot.print = node.log.append
        ob = outbox.Outbox(OUTBOX, CAPACITY)
        for _ in range(SETUP_READINGS):
            node.append(ob)
        if start == "slot1":  # v5 downloaded, switched to and confirmed, without a cut
            node.rel = Release(size, c, V_OLD, 1)
            self.hashes[V_OLD] = node.rel.h
            node.run()
            self.v_start = V_OLD
            if appslot.running()[:2] != (1, V_OLD):
                raise AssertionError("the bench did not end on v5 in slot 1: %r" % (appslot.running(),))
            self.model.wakes = 0
        elif start != "factory":
            raise ValueError("START: factory or slot1, not %r" % start)
        self.sectors = dict((k, bytearray(v)) for k, v in dev.sectors.items())
        os.chdir("/")
        vfs.umount(MOUNT)

    def chip(self):
        simstate.reset_world()
        dev = NorFlash(128)
        dev.sectors = dict((k, bytearray(v)) for k, v in self.sectors.items())
        mount(dev)
        return dev


def stage_noted(m):
    """appslot.stage, with the model told when it has returned."""
    real = appslot.stage

    def stage(slot, version, name):
        real(slot, version, name)
        m.staged = True

    return stage, real


# ------------------------------------------------------------ the checks
def check_slot(n, v, what):
    """None if slot n holds the whole tree of app version v, else why."""
    want = BENCH.hashes.get(v if n else 0)
    h = tree_hash("", ("app", "lib")) if n == 0 else tree_hash(appslot.slot_dir(n))
    if want is None or h != want:
        return "%s: slot %d does not hold v%d whole" % (what, n, v)
    return None


def check_outbox(m):
    ob = outbox.Outbox(OUTBOX, CAPACITY)
    recs = ob.peek(1 << 20)
    seqs = [r[0] for r in recs]
    for a, b in zip(seqs, seqs[1:]):
        if b <= a:
            return "outbox: out of order or duplicated: %d after %d" % (b, a)
    inflight_seq = m.max_seq + 1
    for seq, t, p in recs:
        i = m.returned.get(seq)
        if i is None:
            if m.in_flight and m.in_flight[0] == "append" and seq == inflight_seq:
                i = m.in_flight[1]  # the append in flight at the cut may have landed
            else:
                return "outbox: record %d was never appended" % seq
        if p != payload(i) or t != i:
            return "outbox: record %d has the wrong content" % seq
        if seq <= m.acked:
            return "outbox: acknowledged record %d came back" % seq
    may_be_gone = m.acked
    if m.in_flight and m.in_flight[0] == "ack":
        may_be_gone = m.in_flight[1]
    present = set(seqs)
    for seq in m.returned:
        if seq > may_be_gone and seq not in present:
            return "outbox: accepted reading %d (seq %d) is missing" % (m.returned[seq], seq)
    # the run goes on from what is on flash: an append that landed counts as
    # accepted, an ack that landed as acknowledged
    if m.in_flight and m.in_flight[0] == "append" and inflight_seq in present:
        m.returned[inflight_seq] = m.in_flight[1]
        m.max_seq = inflight_seq
        m.next_reading = m.in_flight[1] + 1
    m.acked = max(m.acked, ob.floor)
    m.in_flight = None
    return None


def check_boot(node, m):
    """Right after the cut: the state, the boot, the readings. None or why."""
    node.log[:] = []
    before = appslot._load()  # a damaged file is logged (E) and fails below
    named = [(before.active, before.v_active, "active")]
    if before.pending:
        named.append((before.pending, before.v_pending, "pending"))
    if before.trial:
        named.append((before.prev, before.v_prev, "trial's way back"))
    for n, v, what in named:
        why = check_slot(n, v, what)
        if why:
            return why
    path = node.boot()
    errors = [ln for ln in node.log if ln.startswith("E ")]
    if errors:
        return "the boot logged %r" % errors[0]
    slot, v, _ = appslot.running()
    why = check_slot(slot, v, "chosen")
    if why:
        return why
    if v not in (BENCH.v_start, V_NEW):
        return "slot %d v%d chosen: neither the app before the update nor the new one" % (slot, v)
    if slot and path[0] != MOUNT + "/" + appslot.slot_dir(slot):
        return "slot %d chosen but sys.path starts with %r" % (slot, path[0])
    if not slot and path != node.path:
        return "the factory chosen but sys.path changed: %r" % path
    if (m.staged or m.confirmed) and (slot == 0 or v != V_NEW):
        return "the new app was %s before the cut, slot %d v%d runs" % (
            "confirmed" if m.confirmed else "staged", slot, v)
    if m.confirmed and appslot.on_trial():
        return "confirmed before the cut, on trial again"
    return check_outbox(m)


def check_end(node, m):
    s = appslot._load()
    if s.v_active != V_NEW or s.trial or s.pending or s.rollbacks:
        return "end: active v%d trial %d pending %d rollbacks %d" % (s.v_active, s.trial, s.pending,
                                                                    s.rollbacks)
    want = 2 if BENCH.v_start else 1  # the slot free_slot() gives: not the one running
    if s.active != want:
        return "end: v%d runs from slot %d, not %d" % (s.v_active, s.active, want)
    why = check_slot(s.active, s.v_active, "end") or check_slot(0, 0, "end")
    if not why and BENCH.v_start:
        why = check_slot(1, V_OLD, "end (the app before)")
    if why:
        return why
    for path in (update.IMG,):
        try:
            os.stat(path)
            return "end: %s left behind" % path
        except OSError:
            pass
    return check_outbox(m)


def one_cut(n):
    """Cut at op n of the run, check, resume, check. None or why."""
    dev = BENCH.chip()
    m = BENCH.model.copy()
    node = Node(dev, BENCH.rel, m)
    appslot.print = node.log.append
    appslot.stage, real = stage_noted(m)
    try:
        dev.cut_power_at(n)
        try:
            node.run()
            return "the cut at op %d never happened" % n
        except Cut:
            pass
        appslot.stage = real  # the boot after the cut and the rest: the model knows what returned
        dev.revive()
        try:
            mount(dev)
        except OSError as e:
            return "the filesystem does not mount: %r" % e
        why = check_boot(node, m)
        if why:
            return why
        appslot.stage, _ = stage_noted(m)
        node.run()
        return check_end(node, m)
    finally:
        appslot.stage = real


def uncut():
    """The whole run without a cut -> (ops, [(step, first op, last op)], wakes)."""
    dev = BENCH.chip()
    m = BENCH.model.copy()
    phases = []
    node = Node(dev, BENCH.rel, m, phases)
    appslot.print = node.log.append
    real = appslot.stage
    appslot.stage = lambda slot, v, name: node.step("stage", real, slot, v, name)
    base = ops(dev)
    try:
        node.run()
    finally:
        appslot.stage = real
    why = check_end(node, m)
    if why:
        raise AssertionError("the uncut run: " + why)
    return ops(dev) - base, [(p, a - base, b - base) for p, a, b in phases if b >= a], m.wakes


def focus(phases, nchunks):
    """Every op of one chunk's write (a middle one: the take and the state
    save after it), of the stage, of the boot that switches to the new app
    and of the confirmation."""
    pts = set()
    mid = "chunk:%d" % (nchunks // 2)
    for name, a, b in phases:
        if name in (mid, "stage", "choose", "confirm"):  # a boot writes only to switch or count a trial
            pts.update(range(a, b + 1))
    return pts


def positions(spec, total, phases, nchunks):
    if spec == "all":
        return list(range(1, total + 1))
    if spec.startswith("spread:"):
        k = int(spec[7:])
        pts = focus(phases, nchunks)
        for j in range(k):
            pts.add(1 + j * (total - 1) // max(1, k - 1))
        return sorted(p for p in pts if 1 <= p <= total)
    return [int(x) for x in spec.split(",")]


BENCH = None


def main(argv):
    global BENCH
    quiet = "-q" in argv  # only the header, failures and the closing line
    argv = [a for a in argv if a != "-q"]
    start, spec = argv[0], argv[1]
    size = int(argv[2]) if len(argv) > 2 else 6000
    c = int(argv[3]) if len(argv) > 3 else 512
    eventlog.print = lambda *a: None  # the firmware's log lines: not this campaign's output
    BENCH = Bench(start, size, c)
    total, phases, wakes = uncut()
    nchunks = len(BENCH.rel.msgs)
    pts = positions(spec, total, phases, nchunks)
    steps = {}
    for name, a, b in phases:
        key = name.split(":")[0]
        steps[key] = steps.get(key, 0) + b - a + 1
    print("powercut-update start=%s image=%d chunk=%d chunks=%d wakes=%d ops=%d cuts=%d" % (
        start, len(BENCH.rel.img), c, nchunks, wakes, total, len(pts)))
    print("ops by step: " + " ".join("%s=%d" % (k, steps[k]) for k in sorted(steps)))
    passed = failed = 0
    for n in pts:
        try:
            why = one_cut(n)
        except Exception as e:  # a crash in recovery is a failure, not the end of the campaign
            why = "raised %r" % e
        os.chdir("/")
        if why is None:
            passed += 1
            if not quiet:
                print("CUT %d ok" % n)
        else:
            failed += 1
            print("CUT %d FAIL %s" % (n, why))
    print("powercut-update: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
