"""Outbox flash wear and speed on the MicroPython VM (littlefs on the NOR flash model).

    make bench-outbox      (MICROPYPATH=.frozen:lib micropython bench/outbox.py)

For 1000 readings of a 12-byte payload, with and without the RTC fast path, in
two situations: an outage (nothing acknowledged, everything must reach flash)
and normal operation (an uplink acknowledges every 12 readings, i.e. hourly at
one reading per 5 minutes). Prints appends per second (VM wall clock; compare
the rows of one run, not runs), bytes programmed per reading, erases per 1000
readings, and what that means for a 2 MiB partition of 100k-cycle flash at one
reading per minute.
"""

import sys
import time  # the VM's own clock: this script runs without the simulated board

import vfs

_here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
sys.path.pop(0)  # the script's own folder: this file is itself named outbox.py
sys.path.append(_here + "/../boards/sim")

import outbox  # noqa: E402
import rtcmem  # noqa: E402
from norflash import NorFlash  # noqa: E402

READINGS = 1000
PAYLOAD = b"\x01\x00\x00\xc8\x41\x00\x00\x00\x00\x00\x00\x00"  # 12 bytes: channel, float, flags...
PARTITION_BLOCKS = 512  # the 2 MiB vfs partition of the ESP32 default table
CYCLES = 100000  # NOR flash sector endurance (datasheet typical)


class Rtc:
    """RTC user memory: 2048 bytes that survive deep sleep."""

    def __init__(self):
        self.mem = b""

    def memory(self, data=None):
        if data is None:
            return self.mem
        self.mem = bytes(data)


def run(fast_path, ack_every):
    dev = NorFlash(64)
    vfs.VfsLfs2.mkfs(dev.block_device())
    try:
        vfs.umount("/b")
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev.block_device()), "/b")
    rtc = rtcmem.Region(Rtc(), 256, 1536) if fast_path else None
    ob = outbox.Outbox("/b/ob", rtc=rtc)
    base_e, base_b = dev.erases, dev.bytes_programmed
    t0 = time.ticks_us()
    for i in range(READINGS):
        ob.append(PAYLOAD, i)
        if ack_every and (i + 1) % ack_every == 0:
            batch = ob.peek(ack_every)
            ob.ack(batch[-1][0])
    us = time.ticks_diff(time.ticks_us(), t0)
    erases = dev.erases - base_e
    nbytes = dev.bytes_programmed - base_b
    vfs.umount("/b")
    return READINGS * 1000000 // max(us, 1), nbytes / READINGS, erases * 1000 / READINGS


def life_years(erases_per_1000):
    per_day = erases_per_1000 * 1440 / 1000  # one reading a minute
    if per_day == 0:
        return None
    return PARTITION_BLOCKS * CYCLES / per_day / 365


def main():
    print("outbox bench: %d readings of %d bytes, littlefs on NOR flash, MicroPython %s"
          % (READINGS, len(PAYLOAD), sys.version.split(";")[0]))
    print("%-10s %-14s %11s %13s %14s %18s" % ("path", "situation", "appends/s", "bytes/reading",
                                               "erases/1000", "life @1/min (y)"))
    rows = {}
    for fast in (False, True):
        for situation, ack_every in (("outage", 0), ("uplink/12", 12)):
            rate, bpr, epk = run(fast, ack_every)
            rows[(fast, situation)] = epk
            life = life_years(epk)
            print("%-10s %-14s %11d %13.1f %14.1f %18s" % (
                "rtc" if fast else "direct", situation, rate, bpr, epk,
                "no wear" if life is None else "%.0f" % life))
    for situation in ("outage", "uplink/12"):
        d, r = rows[(False, situation)], rows[(True, situation)]
        print("erase reduction with the RTC fast path (%s): %s" % (
            situation, "%.1fx" % (d / r) if r else "all erases avoided (%.1f -> 0)" % d))


main()
