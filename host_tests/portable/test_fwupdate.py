# app.fwupdate: MicroPython firmware updates through esp32.Partition on the
# simulated board's flash model (boards/sim/simota.py: otadata and the
# bootloader's choice, rollback included). Resets, watchdog resets, deep
# sleeps and power cuts are crossed with the board's own halts; a new boot
# forgets the module's memory as a fresh import would (fwupdate._forget()).
# data/fw lives in a host folder (see _folder).
import hashlib
import os

import eventlog
import esp32
import espimage
import machine
import simota
import simstate

from app import fwupdate
from ptest import raises, scratch_dir, sleep_and_wake

_DIR = []


class PowerCut(Exception):
    pass


def _folder():
    """One folder for the module, emptied for each node. On the VM a host
    folder, as test_mailbox does (its littlefs on the Python NorFlash made the
    unix VM segfault); data/fw is two small files written whole."""
    import sys

    if not _DIR:
        if sys.implementation.name == "micropython":
            _DIR.append("/tmp/petrel-fwupdate-test")
            try:
                os.mkdir(_DIR[0])
            except OSError:
                pass
        else:
            _DIR.append(scratch_dir()[0])
    d = _DIR[0]
    try:
        for name in os.listdir(d + "/data"):
            os.remove(d + "/data/" + name)
    except OSError:
        pass
    return d


class Node:
    """An OTA-build board (ESP32_GENERIC-OTA, ota_0 flashed) and its flash folder."""

    def __init__(self, table="ota"):
        b = simstate.reset_world(power=False)
        b.partition_table = table
        b.power_on()
        self.here = os.getcwd()
        os.chdir(_folder())
        self.lines = []
        eventlog.print = self.lines.append
        fwupdate._forget()

    def close(self):
        del eventlog.print
        os.chdir(self.here)

    def reboot(self, fn, *args):
        """fn halts the board; the next boot starts (the bootloader chooses)."""
        h = sleep_and_wake(fn, *args)
        fwupdate._forget()
        return h

    def power_cut(self):
        """Power lost (after a flash op was cut short): every chip answers
        again at power-on, with what it holds."""
        for f in simstate.board.partitions.values():
            f.revive()
        simstate.board.after_halt(simstate.Halt(machine.PWRON_RESET))
        fwupdate._forget()

    def log(self):
        return "\n".join(self.lines)


def with_node(fn, table="ota"):
    n = Node(table)
    try:
        fn(n)
    finally:
        n.close()


def image(version="2.0.0", size=13000):
    """A valid ESP app image of about `size` bytes (espimage: what set_boot accepts)."""
    blob = bytes((i * 7 + len(version)) & 0xFF for i in range(size))
    return espimage.build([(0x3F400020, espimage.app_desc(version)), (0x3FFB0000, blob),
                           (0x40080000, b"\x36\x41\x00\x1d\xf0\x00\x00\x00")], version=version)


def download(img, chunk=1024, start=0):
    sink = fwupdate.Sink(len(img), chunk)
    for off in range(start, len(img), chunk):
        sink.write(off, img[off : off + chunk])
    return sink


def running():
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


def ota_state(label):
    slot = 0 if label == "ota_0" else 1
    for seq, st, crc in simota.read_otadata(simstate.board):
        if crc == simota.crc(seq) and (seq - 1) % 2 == slot:
            return st
    return None


def on_trial(n, img=None, version=7, name="1.30.0"):
    """Download img, finish, reset into the trial wake; -> the image."""
    img = img or image()
    sink = download(img)
    assert sink.digest() == hashlib.sha256(img).digest()
    h = n.reboot(fwupdate.finish, version, name)
    assert h.cause == machine.SOFT_RESET  # a reset, never a deep sleep after set_boot
    fwupdate.boot()
    return img


# ---------------------------------------------------------------- the happy path
def test_an_image_written_in_chunks_boots_on_trial_after_finish():
    def run(n):
        assert running() == "ota_0"
        img = image()
        sink = download(img, 512)
        assert sink.part.info()[4] == "ota_1"
        assert sink.digest() == hashlib.sha256(img).digest()
        buf = bytearray(len(img))
        esp32.Partition("ota_1").readblocks(0, buf)
        assert bytes(buf) == img
        n.reboot(fwupdate.finish, 7, "1.30.0")
        assert running() == "ota_1"
        assert ota_state("ota_1") == simota.PENDING_VERIFY
        assert fwupdate.on_trial() and fwupdate.trial_version() == 7
        assert fwupdate.report() == {"fwv": 0, "fwt": 1, "fwerr": ""}
        assert "v7 (1.30.0) on trial in ota_1" in n.log()

    with_node(run)


def test_confirmed_by_an_uplink_survives_sleep_reset_and_power_cut():
    def run(n):
        on_trial(n)
        fwupdate.uplink(True)
        assert ota_state("ota_1") == simota.VALID  # the bootloader's mark, before the wake sleeps
        assert not fwupdate.on_trial() and fwupdate.trial_version() == 0
        assert fwupdate.report() == {"fwv": 7, "fwt": 0, "fwerr": ""}
        fwupdate.before_sleep()  # confirmed: returns, the ladder deep-sleeps
        n.reboot(machine.deepsleep, 5000)
        fwupdate.boot()
        assert running() == "ota_1"
        n.reboot(machine.reset)
        fwupdate.boot()
        assert running() == "ota_1" and not fwupdate.on_trial()
        n.power_cut()
        fwupdate.boot()
        assert running() == "ota_1"
        assert fwupdate.report() == {"fwv": 7, "fwt": 0, "fwerr": ""}
        assert not fwupdate.refused(7)

    with_node(run)


def test_a_power_cut_between_the_mark_and_the_note_still_confirms():
    def run(n):
        on_trial(n)
        real_save = fwupdate._save
        fwupdate._save = _cut_save(real_save, 1)
        try:
            raises(PowerCut, fwupdate.uplink, True)  # marked valid, data/fw not written
        finally:
            fwupdate._save = real_save
        n.power_cut()
        assert running() == "ota_1"  # the bootloader kept it
        fwupdate.boot()
        assert fwupdate.report() == {"fwv": 7, "fwt": 0, "fwerr": ""}
        assert "v7 (1.30.0) confirmed: kept by the bootloader" in n.log()

    with_node(run)


def test_a_second_update_goes_to_the_other_slot():
    def run(n):
        on_trial(n)
        fwupdate.uplink(True)
        n.reboot(machine.deepsleep, 1000)
        img = image("3.0.0", 9000)
        assert fwupdate.Sink(len(img), 1024).part.info()[4] == "ota_0"
        on_trial(n, img, 8, "1.31.0")
        assert running() == "ota_0" and fwupdate.on_trial()
        fwupdate.uplink(True)
        assert fwupdate.report()["fwv"] == 8

    with_node(run)


# ---------------------------------------------------------------- rollbacks
def test_an_unconfirmed_trial_resets_before_sleeping_and_rolls_back():
    def run(n):
        on_trial(n)
        fwupdate.uplink(False)
        assert fwupdate.on_trial()  # nothing yet: the wake goes on
        h = n.reboot(fwupdate.before_sleep)  # instead of the deep sleep
        assert h.cause == machine.SOFT_RESET
        assert running() == "ota_0"  # the bootloader gave the unconfirmed image up
        assert ota_state("ota_1") == simota.ABORTED
        fwupdate.boot()
        r = fwupdate.report()
        assert r["fwv"] == 0 and r["fwt"] == 0
        assert r["fwerr"] == "v7 rolled back: no uplink in its trial wake"
        assert fwupdate.refused(7) and fwupdate.refused(6) and not fwupdate.refused(8)
        assert "v7 rolled back: no uplink in its trial wake; running ota_0 again" in n.log()
        # the next update may use ota_1 again
        assert fwupdate.Sink(1000, 1024).part.info()[4] == "ota_1"
        n.reboot(machine.deepsleep, 1000)
        assert running() == "ota_0"

    with_node(run)


def test_a_deep_sleep_after_an_unconfirmed_trial_keeps_it_running():
    # why before_sleep(): the port skips the bootloader's choice at deep-sleep wakes
    def run(n):
        on_trial(n)
        fwupdate.uplink(False)
        n.reboot(machine.deepsleep, 1000)
        assert running() == "ota_1" and ota_state("ota_1") == simota.PENDING_VERIFY
        fwupdate.boot()
        assert not fwupdate._mem["read"]  # a deep-sleep wake reads nothing
        assert not fwupdate.on_trial()
        n.reboot(machine.reset)  # the next full boot rolls back and boot() tells why
        assert running() == "ota_0"
        fwupdate.boot()
        assert fwupdate.report()["fwerr"] == "v7 rolled back: reset in its trial wake (crash?)"
        assert fwupdate.refused(7)

    with_node(run)


def test_a_trial_that_hangs_is_rolled_back_by_the_watchdog():
    def run(n):
        on_trial(n)
        machine.WDT(timeout=1000)
        import time

        n.reboot(time.sleep, 2)
        assert machine.reset_cause() == machine.WDT_RESET
        assert running() == "ota_0"
        fwupdate.boot()
        assert fwupdate.report()["fwerr"] == "v7 rolled back: hung (watchdog) in its trial wake"
        assert fwupdate.refused(7)

    with_node(run)


def test_a_power_cut_in_the_trial_wake_rolls_back():
    def run(n):
        on_trial(n)
        n.power_cut()
        assert running() == "ota_0"
        fwupdate.boot()
        assert fwupdate.report()["fwerr"] == "v7 rolled back: power lost in its trial wake"

    with_node(run)


# ---------------------------------------------------------------- power cuts
def test_a_power_cut_at_every_flash_operation_of_the_download_is_resumed():
    img = image(size=9000)  # 3 blocks: 3 erases and 10 programs of 1024-byte chunks
    want = hashlib.sha256(img).digest()
    n_ops = 3 + (len(img) + 1023) // 1024
    for op in range(1, n_ops + 1):
        n = Node()
        try:
            esp32.Partition("ota_1").flash().cut_power_at(op)
            sink = fwupdate.Sink(len(img), 1024)
            cut = None
            for off in range(0, len(img), 1024):
                try:
                    sink.write(off, img[off : off + 1024])
                except OSError:
                    cut = off  # the download's state still says this chunk is next
                    break
            assert cut is not None, op
            n.power_cut()
            assert running() == "ota_0", op  # the running firmware still boots
            fwupdate.boot()
            assert not fwupdate.on_trial()
            sink = download(img, 1024, cut)
            assert sink.digest() == want, op
            n.reboot(fwupdate.finish, 7, "1.30.0")
            assert running() == "ota_1", op
            fwupdate.boot()
            assert fwupdate.on_trial()
        finally:
            n.close()


def _cut_save(real_save, at):
    """fwupdate._save, the power lost at its at-th call (None: never)."""
    calls = []

    def save(s):
        calls.append(s["phase"])
        if len(calls) == at:
            raise PowerCut()
        real_save(s)

    return save


def test_a_power_cut_before_and_during_the_switch():
    img = image(size=5000)
    # the cut: at data/fw's first note (before set_boot), in otadata's erase or
    # program (inside set_boot), at data/fw's second note (after set_boot)
    for where in ("note", 1, 2, "noted"):
        n = Node()
        try:
            download(img)
            real_save = fwupdate._save
            fwupdate._save = _cut_save(real_save, {"note": 1, "noted": 2}.get(where))
            if where in (1, 2):
                esp32.Partition("otadata").flash().cut_power_at(where)
            try:
                raises(Exception, fwupdate.finish, 7, "1.30.0")
            finally:
                fwupdate._save = real_save
            n.power_cut()
            fwupdate.boot()
            if where == "noted":  # set_boot was done: the new one runs, on trial
                assert running() == "ota_1" and fwupdate.on_trial(), where
            else:
                assert running() == "ota_0", where
                assert not fwupdate.on_trial()
                assert not fwupdate.refused(7), where  # the image is fine: not refused
                if where != "note":
                    assert fwupdate.report()["fwerr"] == "v7 not started: the switch was cut short"
        finally:
            n.close()


def test_the_digest_reads_the_flash_back():
    def run(n):
        img = image()
        sink = download(img)
        esp32.Partition("ota_1").writeblocks(1, b"\x00", 100)  # a bit flipped after the write
        assert sink.digest() != hashlib.sha256(img).digest()

    with_node(run)


def test_an_image_set_boot_refuses_is_refused_and_nothing_switches():
    def run(n):
        img = bytearray(image())
        img[-40] ^= 0xFF  # the SHA-256 the bootloader checks no longer matches
        sink = download(bytes(img))
        assert sink.digest() == hashlib.sha256(bytes(img)).digest()
        e = raises(OSError, fwupdate.finish, 7, "1.30.0")  # returns: no reset
        assert e.args[0] == fwupdate.INVALID_IMAGE
        assert fwupdate.refused(7)
        assert fwupdate.report()["fwerr"].startswith("v7 refused by set_boot")
        assert esp32.Partition(esp32.Partition.BOOT).info()[4] == "ota_0"
        n.reboot(machine.reset)
        assert running() == "ota_0"

    with_node(run)


# ---------------------------------------------------------------- refusals and damage
def test_a_build_without_ota_partitions_has_no_sink():
    def run(n):
        e = raises(OSError, fwupdate.Sink, 1000, 1024)
        assert e.args[0] == 2  # ENOENT, what get_next_update() raises there
        assert "factory app only" in str(e)
        raises(OSError, fwupdate.finish, 7, "1.30.0")
        assert running() == "factory"
        assert fwupdate.report() == {"fwv": 0, "fwt": 0, "fwerr": ""}

    with_node(run, "factory")


def test_sizes_chunks_and_order_are_checked():
    def run(n):
        raises(ValueError, fwupdate.Sink, 0x180000 + 1, 1024)  # past the partition
        raises(ValueError, fwupdate.Sink, 1000, 3000)  # does not divide 4096
        sink = fwupdate.Sink(5000, 1024)
        raises(ValueError, sink.write, 0, b"x" * 1000)  # short, not the last
        raises(ValueError, sink.write, 512, b"x" * 1024)  # not a chunk's offset
        raises(ValueError, sink.write, 5120, b"x" * 1024)  # past the image
        sink.write(0, b"x" * 1024)
        raises(ValueError, sink.write, 2048, b"x" * 1024)  # out of order
        sink.write(1024, b"x" * 1024)
        sink.write(2048, b"x" * 1024)
        sink.write(3072, b"x" * 1024)
        sink.write(4096, b"x" * 904)  # the last one, short

    with_node(run)


def test_no_sink_while_a_trial_is_on():
    # the next update slot is the rollback's: it must not be written during a trial
    def run(n):
        on_trial(n)
        e = raises(OSError, fwupdate.Sink, 1000, 1024)
        assert "trial" in str(e)

    with_node(run)


def test_a_damaged_state_file_is_forgotten_not_fatal():
    def run(n):
        try:
            os.mkdir("data")
        except OSError:
            pass  # left by an earlier node
        with open(fwupdate.PATH, "wb") as f:
            f.write(b"PFW1 not really")
        n.reboot(machine.reset)
        fwupdate.boot()
        assert fwupdate.report() == {"fwv": 0, "fwt": 0, "fwerr": ""}
        assert "data/fw damaged" in n.log()
        on_trial(n)  # an update works over it
        assert fwupdate.on_trial()

    with_node(run)


def test_the_state_file_round_trips_and_refuses_any_flipped_byte():
    s = fwupdate._fresh()
    s.update({"phase": fwupdate.TRIAL, "fwv": 3, "ver": 7, "rbv": 5, "rbs": 2,
              "name": "1.30.0", "new": "ota_1", "prev": "ota_0", "err": "x"})
    data = fwupdate._encode(s)
    assert fwupdate._decode(data) == s
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x40
        assert fwupdate._decode(bytes(bad)) is None, i
    assert fwupdate._decode(data[:-1]) is None


# ---------------------------------------------------------------- the ladder's part
def _ladder_wake(n, crash_streak=0, cycle_raises=False):
    """One whole wake through app.ladder.run() in the trial wake (no
    configuration: no radio), the state in RTC memory as given -> the Halt."""
    from app import cycle, ladder, state

    st = state.State()
    st.crash_streak = crash_streak  # at the safe-mode threshold: the app does not run
    st.save()
    real = cycle.Wake.run

    def boom(self):
        raise RuntimeError("the new firmware's wake crashed")

    if cycle_raises:
        cycle.Wake.run = boom
    try:
        return n.reboot(ladder.run)
    finally:
        cycle.Wake.run = real


def test_a_trial_wake_that_never_reaches_its_uplink_resets_into_the_rollback():
    # the trial is decided first thing in the wake (ladder: fwupdate.boot()),
    # not where the uplink would start: a crash before it, or safe mode,
    # ends in a reset and the bootloader rolls back; a deep sleep would keep
    # the unconfirmed image running (SKIP_VALIDATE_IN_DEEP_SLEEP)
    from app import config

    for case in ("crash", "safe mode"):
        def run(n, case=case):
            img = image()
            sink = download(img)
            assert sink.digest() == hashlib.sha256(img).digest()
            n.reboot(fwupdate.finish, 7, "1.30.0")  # into the trial wake; nothing has looked at it yet
            assert running() == "ota_1"
            if case == "crash":
                h = _ladder_wake(n, cycle_raises=True)
            else:
                h = _ladder_wake(n, crash_streak=config.SafeMode().after_crashes)
                assert "safe mode" in n.log()
            assert h.cause == machine.SOFT_RESET, (case, h)  # reset, not deep sleep
            assert running() == "ota_0" and ota_state("ota_1") == simota.ABORTED
            fwupdate.boot()
            assert not fwupdate.on_trial() and fwupdate.refused(7)
            assert "its trial wake made no uplink" in fwupdate.report()["fwerr"], fwupdate.report()

        with_node(run)
