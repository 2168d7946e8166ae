"""Power-cut campaign for lib/outbox on the real filesystem (MicroPython VM only).

    micropython powercut.py [-q] MODE READINGS POSITIONS [CAPACITY]

MODE       direct     every append written to flash (no RTC fast path)
           rtc-reset  RTC fast path; the cut is a reset (RTC memory kept)
           rtc-power  RTC fast path; the cut is a power loss (RTC memory lost)
READINGS   readings appended, with an uplink (peek 25, ack) every 37
POSITIONS  all | spread:K (K cut points over the run, plus every point of one
           full cycle of the fast path) | a,b,c (explicit)
CAPACITY   outbox capacity in bytes (default 64 KiB: nothing is dropped)

littlefs (vfs.VfsLfs2) sits on the NOR flash model; the power dies at the N-th
program or erase, leaving that operation half done. Then the flash is mounted
again, a new Outbox recovers, and the checks run. One line per cut point:
  CUT n ok|FAIL why
and a closing line "powercut: N passed, N failed".
"""

import sys

import vfs

import machine
import outbox
import rtcmem
import simstate
from norflash import NorFlash

MOUNT = "/pc"
UPLINK_EVERY = 37
BATCH = 25


def payload(i):
    return b"reading-%05d" % i


class Model:
    """What the caller saw: which calls returned before the cut."""

    def __init__(self):
        self.returned = {}  # seq -> reading number i
        self.in_flight = None  # ("append", i) | ("ack", upto) at the cut
        self.acked = 0  # last ack that returned
        self.durable_below = 1  # seqs below this were on flash at the last return
        self.drops = 0
        self.floor = 0
        self.max_seq = 0


def run_scenario(ob, readings, dev, m):
    """Drive the outbox until done or the flash dies; returns True if cut."""
    for i in range(1, readings + 1):
        m.in_flight = ("append", i)
        try:
            seq = ob.append(payload(i), i)
        except OSError:
            return True
        m.returned[seq] = i
        m.max_seq = max(m.max_seq, seq)
        m.in_flight = None
        if dev.dead:
            return True  # the append returned (kept in RTC); the chip is gone
        note_stable(ob, m)
        if i % UPLINK_EVERY == 0:
            batch = ob.peek(BATCH)
            if not batch:
                continue
            gone = max(m.acked, ob.floor)  # acknowledged, or dropped (counted) when full
            expect = [s for s in sorted(m.returned) if s > gone][: len(batch)]
            if [r[0] for r in batch] != expect:
                raise AssertionError("peek before the cut: %r != %r" % ([r[0] for r in batch], expect))
            upto = batch[-1][0]
            m.in_flight = ("ack", upto)
            try:
                ob.ack(upto)
            except OSError:
                return True
            m.in_flight = None
            m.acked = upto
            if dev.dead:
                return True
            note_stable(ob, m)
    return False


def note_stable(ob, m):
    m.durable_below = ob.buf[0][0] if ob.buf else ob.next_seq
    m.drops = ob.drops
    m.floor = ob.floor


def new_outbox(mode, capacity):
    rtc = rtcmem.Region(machine.RTC(), 256, 1536) if mode != "direct" else None
    return outbox.Outbox(MOUNT, capacity=capacity, rtc=rtc)


def mount(dev):
    try:
        vfs.umount(MOUNT)
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev.block_device()), MOUNT)


def fresh():
    """A new board with a freshly formatted, mounted flash."""
    simstate.reset_world()
    dev = NorFlash(128)  # 512 KiB
    vfs.VfsLfs2.mkfs(dev.block_device())
    mount(dev)
    return dev


def ops(dev):
    return dev.programs + dev.erases


def check(mode, capacity, dev, m):
    """After the cut: reboot and check the invariants. Returns None or why."""
    if mode == "rtc-power":
        simstate.board.power_on()  # RTC memory is gone with the power
    dev.revive()
    try:
        mount(dev)
    except OSError as e:
        return "filesystem does not mount: %r" % e
    ob = new_outbox(mode, capacity)
    recs = ob.peek(1 << 20)
    seqs = [r[0] for r in recs]
    for a, b in zip(seqs, seqs[1:]):
        if b <= a:
            return "out of order or duplicated: %d after %d" % (b, a)
    inflight_seq = max(m.returned) + 1 if m.returned else 1
    for seq, t, p in recs:
        i = m.returned.get(seq)
        if i is None:
            if m.in_flight and m.in_flight[0] == "append" and seq == inflight_seq:
                i = m.in_flight[1]  # the append in flight at the cut may have landed
            else:
                return "record %d was never appended" % seq
        if p != payload(i) or t != i:
            return "record %d has the wrong content" % seq
        if seq <= m.acked:
            return "acknowledged record %d came back" % seq
    may_be_gone = m.acked
    if m.in_flight and m.in_flight[0] == "ack":
        may_be_gone = m.in_flight[1]
    may_be_gone = max(may_be_gone, ob.floor if ob.drops > m.drops else m.floor)
    present = set(seqs)
    for seq in m.returned:
        if seq <= may_be_gone or seq in present:
            continue
        if mode == "rtc-power" and seq >= m.durable_below:
            continue  # was only in RTC memory, which the power cut erased
        return "accepted record %d is missing" % seq
    if ob.drops < m.drops:
        return "drop counter went back: %d < %d" % (ob.drops, m.drops)
    top = max(seqs + [m.max_seq])  # an append that never returned may give its seq again
    nxt = ob.append(b"after", 0)
    if nxt <= top:
        return "sequence number went back: %d <= %d" % (nxt, top)
    return None


def count_ops(mode, readings, capacity):
    """Program/erase operations of the uncut run, and the drops it makes."""
    dev = fresh()
    base = ops(dev)
    ob = new_outbox(mode, capacity)
    run_scenario(ob, readings, dev, Model())
    return ops(dev) - base, ob.drops


def first_fast_path_cycle(mode, readings, capacity):
    """Op numbers from the start of the first flush to the start of the second:
    one whole cycle of the RTC fast path (for direct mode: the first 100 ops)."""
    if mode == "direct":
        return list(range(1, 101))
    dev = fresh()
    base = ops(dev)
    ob = new_outbox(mode, capacity)
    marks = []
    flushes = [0]
    orig = ob.flush

    def flush():
        marks.append(ops(dev) - base)
        flushes[0] += 1
        orig()

    ob.flush = flush
    run_scenario(ob, readings, dev, Model())
    if len(marks) < 2:
        return list(range(1, ops(dev) - base + 1))
    return list(range(marks[0] + 1, marks[1] + 2))


def positions(spec, total, mode, readings, capacity):
    if spec == "all":
        return range(1, total + 1)
    if spec.startswith("spread:"):
        k = int(spec[7:])
        pts = set(first_fast_path_cycle(mode, readings, capacity))
        for j in range(k):
            pts.add(1 + j * (total - 1) // max(1, k - 1))
        return sorted(p for p in pts if 1 <= p <= total)
    return [int(x) for x in spec.split(",")]


def main(argv):
    quiet = "-q" in argv  # print only the header, failures and the closing line
    argv = [a for a in argv if a != "-q"]
    mode, readings, spec = argv[0], int(argv[1]), argv[2]
    capacity = int(argv[3]) if len(argv) > 3 else 65536
    total, drops = count_ops(mode, readings, capacity)
    pts = positions(spec, total, mode, readings, capacity)
    print("powercut mode=%s readings=%d capacity=%d ops=%d drops=%d cuts=%d"
          % (mode, readings, capacity, total, drops, len(pts)))
    passed = failed = 0
    for n in pts:
        dev = fresh()
        dev.cut_power_at(n)
        m = Model()
        try:
            try:
                ob = new_outbox(mode, capacity)  # a brand-new outbox writes its state
                cut = run_scenario(ob, readings, dev, m)
            except OSError:
                cut = dev.dead
            why = check(mode, capacity, dev, m) if cut else "the cut at op %d never happened" % n
        except Exception as e:  # a crash in recovery is a failure, not the end of the campaign
            why = "raised %r" % e
        if why is None:
            passed += 1
            if not quiet:
                print("CUT %d ok" % n)
        else:
            failed += 1
            print("CUT %d FAIL %s" % (n, why))
    print("powercut: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
