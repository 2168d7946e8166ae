"""The node's stores, made in one place for the wake cycle and safe mode.

    node = stores.make(rtc)                     # clock, sequence counter, outbox
    node = stores.make(rtc, with_outbox=False)  # safe mode: the outbox may be what crashes

The clock is told the outbox's next sequence number (Clock.begin) so that a
reading's number says which power-on its relative stamp belongs to.

Each keeps its fast part in RTC memory (app.state's layout) and what must
survive a power cut on flash, in one folder: a folder named like a module at
the root would shadow the module (/ is on sys.path).
"""

import os

import clock
import eventlog as log
import outbox
import rtcmem
import seqcounter

from app import state, version

DATA = "data"
OUTBOX_PATH = DATA + "/outbox"
SEQ_PATH = DATA + "/seq"
CLOCK_PATH = DATA + "/clock"
DRIFT_PATH = DATA + "/drift"
DRIFT_STEP = 1000  # ppm: rewrite the kept drift only when it moved this much


class Stores:
    def __init__(self, clk, counter, ob):
        self.clk = clk  # clock.Clock
        self.counter = counter  # seqcounter.SeqCounter: COSE sequence numbers, never repeated
        self.ob = ob  # outbox.Outbox, or None


def make(rtc, with_outbox=True):
    try:
        os.mkdir(DATA)
    except OSError:
        pass  # there already
    clk = clock.Clock(version.BUILD_UNIX, rtcmem.Region(rtc, *state.CLOCK), CLOCK_PATH)
    # once the clock is known a sequence number is never below the seconds
    # since the build: a node whose counter was lost still never repeats one
    counter = seqcounter.SeqCounter(
        SEQ_PATH, rtcmem.Region(rtc, *state.SEQ), k=64,
        floor=lambda: max(1, clk.unix() - version.BUILD_UNIX) if clk.known() else 1)
    ob = None
    if with_outbox:
        ob = outbox.Outbox(OUTBOX_PATH, rtc=rtcmem.Region(rtc, *state.OUTBOX))
        # a new outbox (first boot, or the flash erased) numbers from a random
        # point below 2**30: the collector stores a reading once per number,
        # so numbers an earlier outbox used must not come back
        ob.start_at(2 + (int.from_bytes(os.urandom(4), "little") & 0x3FFFFFFF))
        # which power-on the relative stamps from here on belong to (on flash
        # at a power-on's first wake only): clock.senml_time dates by it
        clk.begin(ob.next_seq)
    return Stores(clk, counter, ob)


def load_drift():
    """The sleep clock's drift kept on flash (ppm), 0 when unknown."""
    try:
        with open(DRIFT_PATH) as f:
            v = int(f.read())
        return v if -100000 < v < 100000 else 0
    except (OSError, ValueError):
        return 0


def keep_drift(ppm):
    """The learnt drift is the chip's, not the wake's: kept on flash when it
    moved by more than DRIFT_STEP, so a power cut does not lose it."""
    if not ppm or abs(ppm - load_drift()) <= DRIFT_STEP:
        return
    try:
        with open(DRIFT_PATH + ".tmp", "w") as f:
            f.write("%d" % ppm)
        os.rename(DRIFT_PATH + ".tmp", DRIFT_PATH)
    except OSError as e:
        log.warn("schedule", "drift not kept: %s", e)
