# lib/seqcounter: numbers never repeat across deep sleep, reset and power loss.
# On the VM the file lives on littlefs over the NOR flash model (power cuts too).
import os

import machine
import rtcmem
import seqcounter
import simstate
from ptest import scratch_dir, remount, sleep_and_wake


def region():
    return rtcmem.Region(machine.RTC(), 1792, 256)


class Counting(seqcounter.SeqCounter):
    """Counts flash writes."""

    writes = 0

    def _persist(self, limit):
        Counting.writes += 1
        seqcounter.SeqCounter._persist(self, limit)


def power_loss(path, flash):
    simstate.board.power_on()  # RTC memory is gone
    remount(path, flash)


def test_new_device_counts_from_1():
    path, _ = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region())
    assert c.resumed == "new" and not c.damaged
    assert [c.next() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert c.peek() == 6
    assert "seq" in os.listdir(path) and "seq.tmp" not in os.listdir(path)


def test_flash_is_written_once_per_block():
    path, _ = scratch_dir()
    Counting.writes = 0
    c = Counting(path + "/seq", region(), k=256)
    for _ in range(1000):
        c.next()
    assert Counting.writes == 4  # at 1, 257, 513, 769


def test_deep_sleep_and_reset_continue_exactly():
    path, flash = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region())
    last = [c.next() for _ in range(10)][-1]
    sleep_and_wake(machine.deepsleep, 1000)
    remount(path, flash)
    Counting.writes = 0
    c = Counting(path + "/seq", region())
    assert c.resumed == "rtc" and c.next() == last + 1
    assert Counting.writes == 0  # a wake does not touch flash
    sleep_and_wake(machine.reset)
    remount(path, flash)
    c = seqcounter.SeqCounter(path + "/seq", region())
    assert c.next() == last + 2


def test_power_loss_resumes_past_every_number_handed_out():
    path, flash = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region(), k=16)
    seen = [c.next() for _ in range(20)]  # 1..20: the limit on flash is 33
    power_loss(path, flash)
    c = seqcounter.SeqCounter(path + "/seq", region(), k=16)
    assert c.resumed == "flash"
    n = c.next()
    assert n == 33 and n > max(seen)


def test_many_power_losses_and_sleeps_never_repeat():
    path, flash = scratch_dir()
    seen = []
    x = 7
    for cycle in range(40):
        c = seqcounter.SeqCounter(path + "/seq", region(), k=8)
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        for _ in range(x % 20):
            n = c.next()
            assert not seen or n > seen[-1], (cycle, n, seen[-1])
            seen.append(n)
        if x & 0x100:
            power_loss(path, flash)
        else:
            sleep_and_wake(machine.deepsleep, 100)
            remount(path, flash)
    assert len(seen) == len(set(seen))


def test_missing_file_with_rtc_kept_goes_on_from_rtc():
    path, flash = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region(), k=4)
    last = [c.next() for _ in range(3)][-1]
    os.remove(path + "/seq")
    c = seqcounter.SeqCounter(path + "/seq", region(), k=4)
    assert c.resumed == "rtc" and c.next() == last + 1
    c.next()  # a new block: the file is back
    power_loss(path, flash)
    c = seqcounter.SeqCounter(path + "/seq", region(), k=4)
    assert c.next() > last + 2


def test_damaged_file_and_lost_rtc_restart_and_say_so():
    path, flash = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region())
    c.next()
    with open(path + "/seq", "r+b") as f:
        f.seek(5)
        f.write(b"\xff")
    power_loss(path, flash)
    c = seqcounter.SeqCounter(path + "/seq", region())
    assert c.damaged and c.resumed == "damaged"
    assert c.next() == 1  # nothing known: the receiver drops the repeats as replays
    c = seqcounter.SeqCounter(path + "/seq", region())
    assert not c.damaged and c.next() == 2  # the next block rewrote the file


def test_damaged_file_with_rtc_kept_is_not_a_problem():
    path, flash = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region(), k=4)
    c.next()
    with open(path + "/seq", "wb") as f:
        f.write(b"garbage")
    c = seqcounter.SeqCounter(path + "/seq", region(), k=4)
    assert not c.damaged and [c.next() for _ in range(5)] == [2, 3, 4, 5, 6]
    power_loss(path, flash)
    assert seqcounter.SeqCounter(path + "/seq", region(), k=4).next() > 6


def test_leftover_tmp_file_counts_when_larger():
    path, flash = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region(), k=10)
    c.next()  # the file says 11
    # a crash between writing seq.tmp and renaming it: nothing of its block left yet
    c2 = seqcounter.SeqCounter(path + "/other", None, k=10)
    c2._persist(500)
    os.rename(path + "/other", path + "/seq.tmp")
    power_loss(path, flash)
    assert seqcounter.SeqCounter(path + "/seq", region(), k=10).next() == 500
    with open(path + "/seq.tmp", "wb") as f:
        f.write(b"torn")
    power_loss(path, flash)
    assert seqcounter.SeqCounter(path + "/seq", region(), k=10).next() == 510


def test_foreign_or_damaged_rtc_record_falls_back_to_flash():
    path, _ = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", region(), k=10)
    c.next()
    region().save(b"someone else's")
    assert seqcounter.SeqCounter(path + "/seq", region(), k=10).next() == 11
    rtc = machine.RTC()
    mem = bytearray(rtc.memory())
    mem[1792 + 8] ^= 1
    rtc.memory(bytes(mem))
    c = seqcounter.SeqCounter(path + "/seq", region(), k=10)
    assert c.resumed == "flash" and c.next() == 21


def test_without_rtc_each_boot_starts_a_new_block():
    path, flash = scratch_dir()
    seen = []
    for _ in range(5):
        c = seqcounter.SeqCounter(path + "/seq", None, k=4)
        seen += [c.next(), c.next()]
        remount(path, flash)
    assert seen == [1, 2, 5, 6, 9, 10, 13, 14, 17, 18]


def test_power_cut_during_the_flash_write():
    path, flash = scratch_dir()
    if flash is None:
        return  # CPython has no flash model; the VM cuts littlefs mid-write
    for warm in (4, 64):  # a first rewrite, and one after the metadata grew
        cut = 1
        while True:
            simstate.reset_world()
            path, flash = scratch_dir()
            c = seqcounter.SeqCounter(path + "/seq", region(), k=4)
            seen = [c.next() for _ in range(warm)]  # the next call writes a new block
            flash.cut_power_at(cut)
            try:
                seen.append(c.next())
                done = not flash.dead
            except OSError:
                done = False
            power_loss(path, flash)
            n = seqcounter.SeqCounter(path + "/seq", region(), k=4).next()
            assert n > max(seen), (warm, cut, n, seen[-1])
            if done:
                break
            cut += 1
        assert cut > 3  # every program/erase of the write was cut once


def test_a_counter_with_nothing_to_trust_starts_at_its_floor():
    path, flash = scratch_dir()
    c = seqcounter.SeqCounter(path + "/seq", floor=lambda: 50000)
    assert c.next() == 50000 and c.next() == 50001  # a board erased and provisioned again
    c = seqcounter.SeqCounter(path + "/seq", floor=lambda: 7)
    assert c.next() > 50001  # the file is trusted over the floor


def counter_file(limit):
    """The counter's file as it writes it (CRC-valid), with a chosen limit."""
    import struct
    from binascii import crc32

    body = seqcounter.MAGIC + struct.pack("<Q", limit)
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def test_the_last_number_is_2_pow_63_minus_1_then_it_refuses_and_never_wraps():
    path, flash = scratch_dir()
    with open(path + "/seq", "wb") as f:
        f.write(counter_file(seqcounter.MAX - 1))  # crafted: a counter near its end
    c = seqcounter.SeqCounter(path + "/seq", region(), k=64)
    assert [c.next(), c.next()] == [seqcounter.MAX - 1, seqcounter.MAX]
    e = None
    try:
        c.next()
    except seqcounter.Exhausted as x:
        e = x
    assert isinstance(e, ValueError)  # what a drain takes as a failed session
    c = seqcounter.SeqCounter(path + "/seq", region(), k=64)  # a wake: from RTC memory
    assert c.resumed == "rtc" and c.peek() == seqcounter.MAX + 1
    power_loss(path, flash)
    c = seqcounter.SeqCounter(path + "/seq", region(), k=64)  # from flash: the limit did not wrap
    assert c.resumed == "flash" and c.peek() > seqcounter.MAX
    for _ in range(2):
        try:
            c.next()
            raise AssertionError("a number past MAX was handed out")
        except seqcounter.Exhausted:
            pass


def test_a_crafted_limit_at_u64_max_is_refused_not_wrapped():
    path, flash = scratch_dir()
    with open(path + "/seq", "wb") as f:
        f.write(counter_file((1 << 64) - 1))
    for _ in range(2):
        c = seqcounter.SeqCounter(path + "/seq", region())
        try:
            c.next()
            raise AssertionError("a number past MAX was handed out")
        except seqcounter.Exhausted:
            pass
        power_loss(path, flash)
