"""Outbox flash wear and speed on the MicroPython VM (littlefs on the NOR flash model).

    make bench-outbox      (MICROPYPATH=.frozen:lib micropython bench/outbox.py)

What a node does, at the firmware's sizes: at least READINGS readings per row
(a row that erased fewer than MIN_ERASES sectors goes on until it has), each the
node's real payload (uplink.pack_reading: channel, value, flags, 6 bytes), with
distinct sequence numbers from a fresh outbox numbered as stores.make numbers
one (start_at), timestamps a sample interval apart, the outbox opened as
stores.make opens it (default capacity and segment size; the RTC fast path in
the firmware's own region, app.state.OUTBOX, read here so the two cannot
drift apart). Two situations: an outage (nothing acknowledged: everything
must reach flash, and past the outbox's capacity the oldest segment goes) and
a link that is up (an uplink every UPLINK_EVERY samples peeks and acks in
batches of config's `batch` until the outbox is empty), with the fast path and
without.

Per row: appends per second (VM wall clock; compare the rows of one run, not
runs), bytes programmed per reading, erases per 1000 readings, the most-erased
sector's erases, and flash life at the firmware's default rate (CHANNELS
readings every sample_s) on the device the bench runs on (its real block
count): first if littlefs spread the erases evenly over it, then if its
most-erased sector went on at this run's rate. The ESP32 vfs partitions' projections follow, labelled, with
the rated erase cycles assumed and where the figure comes from.
"""

import sys
import time  # the VM's own clock: this script runs without the simulated board

import vfs

_here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
sys.path.pop(0)  # the script's own folder: this file is itself named outbox.py
sys.path.append(_here + "/../boards/sim")
sys.path.append(_here + "/../firmware")

import eventlog  # noqa: E402
import outbox  # noqa: E402
import rtcmem  # noqa: E402
import simota  # noqa: E402  the simulated ESP32's partition tables (MicroPython's CSVs)
import uplink  # noqa: E402
from app import config, state  # noqa: E402  the firmware's RTC layout and defaults
from norflash import SECTOR, NorFlash  # noqa: E402

eventlog.level = eventlog.ERROR  # an outage's "outbox: full" warnings are counted in the rows

READINGS = 10000  # per row at least: long enough that the fast path's flushes and erases show
MIN_ERASES = 10  # a row that erased fewer goes on until it has (a state rewrite is rare)
MAX_READINGS = 1000000  # ...up to this
DEVICE_BLOCKS = 64  # the NOR flash model the bench mounts littlefs on (256 KiB)
CHANNELS = 3  # readings per sample: boards/esp32-node.json's t, rh, bat
SAMPLE_S = config.Config.sample_s  # firmware default: a sample every 300 s
UPLINK_EVERY = config.Config.uplink_every  # firmware default: samples per uplink (12)
BATCH = config.Config.batch  # firmware default: readings per message (36)
START_SEQ = 0x1234567  # a fresh outbox numbers from a random point below 2**30 (stores.make)
T0 = 1700000000
READINGS_PER_DAY = CHANNELS * 86400 // SAMPLE_S  # the life columns: the firmware's default rate
CYCLES = 100000
CYCLES_SOURCE = ("100,000 erase cycles per sector: Espressif's FAQ on NVS ('Typical flash "
                 "lifetime is 100 k erase cycles', docs.espressif.com/projects/esp-faq, "
                 "software-framework/storage/nvs); a module's flash chip may differ")


class Rtc:
    """RTC user memory: up to 2048 bytes that survive deep sleep."""

    def __init__(self):
        self.mem = b""

    def memory(self, data=None):
        if data is None:
            return self.mem
        self.mem = bytes(data)


class CountingFlash(NorFlash):
    """The NOR model, counting erases per sector: littlefs's wear levelling is
    only as good as its most-erased sector."""

    def __init__(self, blocks):
        super().__init__(blocks)
        self.per_sector = {}

    def erase(self, sector):
        self.per_sector[sector] = self.per_sector.get(sector, 0) + 1
        super().erase(sector)


def reading(i):
    """The node's i-th reading as the wake packs it: channel i % CHANNELS of
    sample i // CHANNELS, a value that moves (hundredths of a degree, tenths of
    %RH, mV), stamped a sample interval after the one before."""
    ch = i % CHANNELS
    n = i // CHANNELS
    value = (2150 + n % 97, 455 + n % 31, 3012 - n % 17)[ch]
    return uplink.pack_reading(ch, value, 0), T0 + n * SAMPLE_S


def run(fast_path, link_up):
    dev = CountingFlash(DEVICE_BLOCKS)
    vfs.VfsLfs2.mkfs(dev.block_device())
    try:
        vfs.umount("/b")
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev.block_device()), "/b")
    rtc = rtcmem.Region(Rtc(), *state.OUTBOX) if fast_path else None
    ob = outbox.Outbox("/b/ob", rtc=rtc)
    ob.start_at(START_SEQ)
    base_e, base_b = dev.erases, dev.bytes_programmed
    base_sector = dict(dev.per_sector)
    per_uplink = UPLINK_EVERY * CHANNELS
    in_order = True
    delivered = 0
    n = 0  # readings appended
    t0 = time.ticks_us()
    # READINGS at least; a row that erases rarely goes on, uplink by uplink,
    # until MIN_ERASES show (or MAX_READINGS): "no erase" is then a measurement
    while n < READINGS or (dev.erases - base_e < MIN_ERASES and n < MAX_READINGS) \
            or (link_up and n % per_uplink):
        payload, t = reading(n)
        in_order = ob.append(payload, t) == START_SEQ + n and in_order
        n += 1
        if link_up and n % per_uplink == 0:
            while True:  # an uplink: peek and ack in batches until the outbox is empty
                batch = ob.peek(BATCH)
                if not batch:
                    break
                delivered += len(batch)
                ob.ack(batch[-1][0])
    us = time.ticks_diff(time.ticks_us(), t0)
    # the run did what a node does: every reading got its own number, in order,
    # and each was delivered (link up) or is still held, or counted dropped (outage)
    if not in_order:
        raise SystemExit("outbox bench: sequence numbers not distinct and consecutive")
    held = len(ob)
    if link_up and (delivered != n or held):
        raise SystemExit("outbox bench: %d of %d delivered, %d held" % (delivered, n, held))
    if not link_up and held + ob.drops != n:
        raise SystemExit("outbox bench: %d held + %d dropped != %d" % (held, ob.drops, n))
    erases = dev.erases - base_e
    worst = 0
    for sector, count in dev.per_sector.items():
        worst = max(worst, count - base_sector.get(sector, 0))
    row = {
        "readings": n,
        "rate": n * 1000000 // max(us, 1),
        "bpr": (dev.bytes_programmed - base_b) / n,
        "epk": erases * 1000 / n,
        "worst": worst,
        "held": held,
        "drops": ob.drops,
        "sizes": (ob.capacity, ob.segment_bytes),
    }
    vfs.umount("/b")
    return row


def years(blocks_or_one, erases_per_reading):
    """Years until blocks_or_one sectors' worth of rated cycles are used up at
    READINGS_PER_DAY readings a day; None when the run erased nothing."""
    per_day = erases_per_reading * READINGS_PER_DAY
    if per_day == 0:
        return None
    return blocks_or_one * CYCLES / per_day / 365.25


def fmt_years(y):
    if y is None:
        return "no erase"
    return "%.0f" % y if y >= 10 else "%.1f" % y


def vfs_blocks(table):
    for label, _type, _sub, _off, size in simota.TABLES[table]:
        if label == "vfs":
            return size // SECTOR
    raise SystemExit("no vfs partition in simota.TABLES[%r]" % table)


def main():
    print("outbox bench: MicroPython %s, littlefs (VfsLfs2) on the NOR flash model"
          % sys.version.split(";")[0])
    print("conditions: %d+ readings a row of %d bytes (uplink.pack_reading), %d channels a sample,"
          " %d s apart, seq from %d"
          % (READINGS, len(uplink.pack_reading(0, 0)), CHANNELS, SAMPLE_S, START_SEQ))
    print("  RTC fast path region: %d+%d B (app.state.OUTBOX, the firmware's)" % state.OUTBOX)
    print("  link up: an uplink every %d samples (%d readings), peek(%d) + ack until empty"
          % (UPLINK_EVERY, UPLINK_EVERY * CHANNELS, BATCH))
    print("  device: %d blocks x %d B; life at %d readings/day, %d cycles a sector"
          % (DEVICE_BLOCKS, SECTOR, READINGS_PER_DAY, CYCLES))
    head = ("path", "situation", "readings", "appends/s", "B prog/rdg", "erases/1000", "worst sect",
            "held", "dropped", "life even (y)", "life worst (y)")
    print("%-6s %-9s %8s %9s %10s %11s %10s %6s %7s %13s %14s" % head)
    rows = {}
    for fast in (False, True):
        for situation, link_up in (("outage", False), ("link up", True)):
            r = run(fast, link_up)
            rows[(fast, situation)] = r
            print("%-6s %-9s %8d %9d %10.2f %11.2f %10d %6d %7d %13s %14s" % (
                "rtc" if fast else "direct", situation, r["readings"], r["rate"], r["bpr"], r["epk"],
                r["worst"], r["held"], r["drops"],
                fmt_years(years(DEVICE_BLOCKS, r["epk"] / 1000)),
                fmt_years(years(1, r["worst"] / r["readings"]))))
    print("  outbox opened as stores.make opens it: capacity %d B, segments %d B"
          % rows[(False, "outage")]["sizes"])
    for situation in ("outage", "link up"):
        d, r = rows[(False, situation)]["epk"], rows[(True, situation)]["epk"]
        print("erase reduction with the RTC fast path (%s): %s" % (
            situation, "%.1fx (%.1f -> %.1f per 1000)" % (d / r, d, r) if r
            else "all erases avoided (%.1f -> 0)" % d))
    print("projection, not measured: the ESP32's vfs partition (simota.TABLES, MicroPython's"
          " partition CSVs), erases spread evenly by littlefs, %d readings/day" % READINGS_PER_DAY)
    print("  rated cycles: " + CYCLES_SOURCE)
    for table, build in (("factory", "ESP32_GENERIC"), ("ota", "ESP32_GENERIC-OTA")):
        blocks = vfs_blocks(table)
        print("  %-17s vfs %3d blocks: %s" % (build, blocks, ", ".join(
            "%s %s %s y" % ("rtc" if fast else "direct", situation,
                            fmt_years(years(blocks, rows[(fast, situation)]["epk"] / 1000)))
            for fast in (False, True) for situation in ("outage", "link up"))))


main()
