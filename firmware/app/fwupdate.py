"""MicroPython firmware updates through esp32.Partition (issue 17, target "fw").

app/update.py downloads the image and hands it over here:
    sink = Sink(size, chunk); sink.write(i * chunk, data) ...; sink.digest()
    finish(version, name)      # set_boot() on the written slot, then machine.reset()
The wake that follows runs the new firmware on trial; cycle calls uplink(ok)
after its uplink attempt; on_trial(), refused(v) and report() answer the rest.

The trial rule: for firmware the trial is ONE wake, the wake right after the
switch (finish() resets into it). That wake always makes an uplink (update
forces it when on_trial()); a successful one confirms the image at once
(Partition.mark_app_valid_cancel_rollback(), then data/fw), before the wake
sleeps. Anything else rolls back: a hang (watchdog) or a power cut is a full
boot, where the bootloader marks the unconfirmed (PENDING_VERIFY) image
ABORTED and boots the previous one. A failed uplink or a crashed wake is NOT
rolled back by a deep sleep: the port builds with
CONFIG_BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP (ports/esp32/boards/sdkconfig.base),
so a deep-sleep wake starts the app that ran before the sleep without looking
at otadata, and the unconfirmed image would run on until some later reset
rolled it back (esphome#17699's trap, the other way round). So the ladder
calls before_sleep() right before machine.deepsleep(): on an unconfirmed
trial it resets instead, and the bootloader rolls back now.

State in data/fw (small binary + CRC32, written whole: tmp + rename): the
running firmware's version as the node knows it (the last confirmed manifest
v; 0 = as flashed), the switch in progress (phase, version, name, the slot
switched to and the one before), the highest version rolled back or refused,
the rollback count and the last why. Phases: SWITCH (finish(): set_boot()
about to run), SWITCHED (set_boot() done, reset next), TRIAL (the new firmware
booted: its one wake). At a boot after a reset, which slot runs tells:
    SWITCH   + new slot -> trial (the cut came after set_boot)
    SWITCH   + old slot -> the switch was cut short: nothing refused
    SWITCHED + new slot -> trial
    SWITCHED + old slot -> did not start (rolled back before this code ran)
    TRIAL    + new slot -> confirmed (marked valid, the note was cut short)
    TRIAL    + old slot -> rolled back: why from before_sleep() or the reset cause

Cheap when no update is under way: a deep-sleep wake cannot have changed the
running slot (the bootloader did not choose), so boot() reads nothing then;
after a reset it opens data/fw once (absent: nothing else is read). on_trial(),
uplink() and before_sleep() use what boot() found (they call it lazily once per
wake). report() and refused() read data/fw (once per wake) when asked.
"""

import errno
import hashlib
import os
import struct
from binascii import crc32

import esp32
import machine

import eventlog as log

PATH = "data/fw"
_TMP = "data/fw.tmp"
_MAGIC = b"PFW1"
_HEAD = "<4sBIIIH"  # magic, phase, fwv, ver, rbv (highest refused), rbs (rollbacks)
_TEXTS = ("name", "new", "prev", "err")  # each: u16 LE length, UTF-8
BLOCK = 4096  # the flash's erase sector: esp32.Partition's native block
ERR_MAX = 80
_EBUSY = 16  # MicroPython's errno module has no EBUSY
INVALID_IMAGE = -0x1503  # ESP_ERR_OTA_VALIDATE_FAILED, as set_boot() raises it

IDLE = 0
SWITCH = 1
SWITCHED = 2
TRIAL = 3


def _forget():
    """What one boot knows (a new boot imports this module afresh)."""
    global _mem
    _mem = {"booted": False, "read": False, "st": None, "trial": False, "tried": False}


_forget()


# ------------------------------------------------------------------ data/fw
def _fresh():
    return {"phase": IDLE, "fwv": 0, "ver": 0, "rbv": 0, "rbs": 0,
            "name": "", "new": "", "prev": "", "err": ""}


def _encode(s):
    out = bytearray(struct.pack(_HEAD, _MAGIC, s["phase"], s["fwv"], s["ver"], s["rbv"], s["rbs"]))
    for k in _TEXTS:
        b = s[k][:ERR_MAX].encode()
        out += struct.pack("<H", len(b)) + b
    return out + struct.pack("<I", crc32(out) & 0xFFFFFFFF)


def _decode(data):
    """The state, or None for anything damaged (a bad CRC, cut short, not ours)."""
    n = struct.calcsize(_HEAD)
    if len(data) < n + 4 or struct.unpack("<I", data[-4:])[0] != crc32(data[:-4]) & 0xFFFFFFFF:
        return None
    magic, phase, fwv, ver, rbv, rbs = struct.unpack(_HEAD, data[:n])
    if magic != _MAGIC or phase > TRIAL:
        return None
    s = {"phase": phase, "fwv": fwv, "ver": ver, "rbv": rbv, "rbs": rbs}
    pos = n
    try:
        for k in _TEXTS:
            m = struct.unpack("<H", data[pos : pos + 2])[0]
            if pos + 2 + m > len(data) - 4:
                return None
            s[k] = bytes(data[pos + 2 : pos + 2 + m]).decode()
            pos += 2 + m
    except (ValueError, UnicodeError):
        return None
    return s if pos == len(data) - 4 else None


def _state():
    """data/fw as read once this wake: None when there is none (never updated)."""
    if not _mem["read"]:
        _mem["read"] = True
        try:
            with open(PATH, "rb") as f:
                data = f.read()
        except OSError:
            return None
        s = _decode(data)
        if s is None:
            # forgotten, not fatal: an unconfirmed trial still rolls back by itself
            log.error("fw", "data/fw damaged (%d bytes): update state forgotten", len(data))
            s = _fresh()
        _mem["st"] = s
    return _mem["st"]


def _save(s):
    try:
        os.mkdir("data")
    except OSError:
        pass  # already there
    with open(_TMP, "wb") as f:
        f.write(_encode(s))
    os.rename(_TMP, PATH)  # whole or not at all: a cut before this keeps the old file
    _mem["st"] = s
    _mem["read"] = True


def _running():
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


# ------------------------------------------------------------------ at boot
def boot():
    """Once per wake, first thing (later calls return at once): after a reset,
    tells from the running slot what became of a switch or trial (see the
    module's table) and records it. A deep-sleep wake reads nothing."""
    if _mem["booted"]:
        return
    _mem["booted"] = True
    if machine.reset_cause() == machine.DEEPSLEEP_RESET:
        return  # the bootloader started the same app without choosing
    s = _state()
    if s is None or s["phase"] == IDLE:
        return
    run = _running()
    phase = s["phase"]
    if run == s["new"]:
        if phase == TRIAL:
            _confirmed(s, "kept by the bootloader")
        else:
            s["phase"] = TRIAL
            s["err"] = ""
            _save(s)
            _mem["trial"] = True
            log.warn("fw", "v%d (%s) on trial in %s: this wake's uplink confirms it",
                     s["ver"], s["name"], run)
    elif phase == SWITCH:
        s["phase"] = IDLE
        s["err"] = "v%d not started: the switch was cut short" % s["ver"]
        _save(s)
        log.warn("fw", "%s, still running %s", s["err"], run)
    elif phase == SWITCHED:
        _rolled_back(s, "did not start", run)
    else:
        why = s["err"]
        if not why:
            cause = machine.reset_cause()
            why = {machine.WDT_RESET: "hung (watchdog) in its trial wake",
                   machine.PWRON_RESET: "power lost in its trial wake"}.get(
                cause, "reset in its trial wake (crash?)")
        _rolled_back(s, why, run)


def _confirmed(s, how):
    s["fwv"] = s["ver"]
    s["phase"] = IDLE
    s["err"] = ""
    _save(s)
    _mem["trial"] = False
    log.info("fw", "v%d (%s) confirmed: %s", s["ver"], s["name"], how)


def _rolled_back(s, why, run):
    s["rbv"] = max(s["rbv"], s["ver"])
    s["rbs"] = min(s["rbs"] + 1, 0xFFFF)
    s["err"] = ("v%d rolled back: %s" % (s["ver"], why))[:ERR_MAX]
    s["phase"] = IDLE
    _save(s)
    log.error("fw", "%s; running %s again", s["err"], run)


def on_trial():
    """True in the wake that runs a new firmware not yet confirmed."""
    boot()
    return _mem["trial"]


def trial_version():
    """The version on its trial wake now, or 0."""
    return _state()["ver"] if on_trial() else 0


def uplink(ok):
    """After an uplink attempt: on a trial, a success confirms the new firmware
    now (the bootloader's mark first, then data/fw); a failure only notes it
    (before_sleep() ends the wake in a reset, which rolls back)."""
    if not on_trial():
        return
    if not ok:
        _mem["tried"] = True
        return
    try:
        esp32.Partition.mark_app_valid_cancel_rollback()
    except OSError as e:
        if e.args[0] != -261:  # -261: a build without rollback: the image stays anyway
            log.error("fw", "confirming v%d failed: %s", _mem["st"]["ver"], e)
            _mem["st"]["err"] = "not confirmed: %s" % e
            return
    _confirmed(_mem["st"], "uplink in its trial wake")


def before_sleep():
    """Right before machine.deepsleep(), after the wake's state is saved: an
    unconfirmed trial resets instead (a deep-sleep wake would start it again
    unchecked), and the bootloader rolls it back at this reset."""
    s = _mem["st"]
    if not _mem["trial"]:
        if s is not None and s["phase"] in (SWITCH, SWITCHED):
            # finish() failed after its note (a flash error in set_boot):
            # otadata may have changed, and a wake never sleeps after
            # set_boot(); the next boot tells what runs (boot())
            log.error("fw", "v%d switch not finished: reset", s["ver"])
            machine.reset()
        return
    if not s["err"]:
        s["err"] = "no uplink in its trial wake" if _mem["tried"] else "its trial wake made no uplink"
    try:
        _save(s)
    except OSError as e:  # the why is lost, not the rollback
        log.error("fw", "data/fw: %s", e)
    log.error("fw", "v%d unconfirmed (%s): reset to roll back", s["ver"], s["err"])
    machine.reset()


# ------------------------------------------------------------------ the download's sink
def _update_partition():
    if on_trial():
        # the next update slot is the one a rollback needs: never overwrite it now
        raise OSError(_EBUSY, "a firmware trial is on: no update until it is confirmed")
    try:
        return esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    except OSError as e:
        raise OSError(e.args[0] if e.args else errno.ENOENT,
                      "no OTA app partition: this firmware's table has a factory app only "
                      "(flash an OTA build, e.g. ESP32_GENERIC-OTA, over USB first)")


class Sink:
    """The next update partition, written chunk by chunk in order. A chunk
    written again (a power cut before the download's state was saved) gives
    the same bytes: NOR programming only clears bits, and a chunk that starts
    a block erases it again."""

    def __init__(self, size, chunk):
        self.part = _update_partition()
        s = _state()
        if s is not None and s["phase"] != IDLE:
            # a switch or trial not settled (the next reset's boot() settles
            # it): the partition written may be the one a rollback needs
            raise OSError(_EBUSY, "firmware v%d switch or trial not settled: no update yet" % s["ver"])
        cap = self.part.info()[3]
        if chunk <= 0 or BLOCK % chunk:
            raise ValueError("chunk of %d bytes does not divide %d" % (chunk, BLOCK))
        if size <= 0 or size > cap:
            raise ValueError("image of %d bytes: %s holds %d" % (size, self.part.info()[4], cap))
        self.size = size
        self.chunk = chunk
        self.next = None  # the offset the next write must have, once one was made

    def write(self, offset, data):
        n = len(data)
        if offset < 0 or offset % self.chunk or offset >= self.size \
                or n != min(self.chunk, self.size - offset):
            raise ValueError("chunk at %d of %d bytes: not one of this image" % (offset, n))
        if self.next is not None and offset != self.next:
            raise ValueError("chunk at %d: %d expected (in order)" % (offset, self.next))
        block, inside = divmod(offset, BLOCK)
        if inside == 0:  # the block first reached: erased before its first program
            r = self.part.ioctl(6, block)
            if r:
                raise OSError(-r, "erase of block %d failed" % block)
        self.part.writeblocks(block, data, inside)
        self.next = offset + n

    def digest(self):
        """SHA-256 of the image's bytes as read back from the flash."""
        h = hashlib.sha256()
        buf = bytearray(BLOCK)
        mv = memoryview(buf)
        pos = 0
        while pos < self.size:
            n = min(BLOCK, self.size - pos)
            self.part.readblocks(pos // BLOCK, mv[:n])
            h.update(mv[:n])
            pos += n
        return h.digest()


def finish(version, name):
    """The written (and verified: digest()) image becomes the boot slot, the
    switch is noted, and the board resets into the trial wake (the port's
    docs: never deep sleep after set_boot()). set_boot() refusing the image
    (not a valid ESP app) raises OSError(-0x1503): the version is then refused."""
    part = _update_partition()
    s = _state() or _fresh()
    s["phase"] = SWITCH
    s["ver"] = version
    s["name"] = name[:32]
    s["new"] = part.info()[4]
    s["prev"] = _running()
    s["err"] = ""
    _save(s)  # first: a switch that happens is always known at the next boot
    try:
        part.set_boot()
    except OSError as e:
        if e.args[0] == INVALID_IMAGE:  # not a bootable ESP app: never this version again
            s["phase"] = IDLE
            s["rbv"] = max(s["rbv"], version)
            s["err"] = ("v%d refused by set_boot: %s" % (version, e))[:ERR_MAX]
            _save(s)
            log.error("fw", "%s", s["err"])
        # else a flash error: otadata may or may not have changed; SWITCH tells
        # at the next boot from the slot that runs
        raise
    s["phase"] = SWITCHED
    try:
        _save(s)
    except OSError as e:  # SWITCH + the new slot running reads as the trial too
        log.error("fw", "data/fw: %s", e)
    log.warn("fw", "v%d (%s) set to boot from %s: reset into its trial", version, name, s["new"])
    machine.reset()


# ------------------------------------------------------------------ asked by update/health
def refused(version):
    """True for a version rolled back or refused before: never tried again."""
    s = _state()
    return s is not None and version <= s["rbv"]


def report():
    """The health record's firmware fields: fwv (running version as the node
    knows it, 0 = as flashed), fwt (1 in the trial wake), fwerr (last why)."""
    s = _state() or _fresh()
    return {"fwv": s["fwv"], "fwt": 1 if on_trial() else 0, "fwerr": s["err"]}
