"""Which application a boot runs: the factory one (/app, /lib, as `petrel
deploy` put them) or an update app/update.py unpacked into a slot folder
(/slots/1, /slots/2). This module lives at the root, is deployed over USB
only and is never part of an update; main.py calls choose() first thing.

    choose()          a staged slot switched in, on trial; a trial past its
                      limits rolled back; the active slot's folders first on
                      sys.path (the factory's "" and /lib taken off, so
                      nothing mixes); on a trial boot a watchdog armed
                      (TRIAL_WDT_MS). Never raises: any error -> factory.
    hold_watchdog()   awake at the REPL on purpose on a trial boot: its
                      watchdog fed by a timer
    on_trial()        the running slot is on trial (cached by choose())
    uplink(ok)        after a wake's uplink attempt: ok confirms the trial
                      (on flash before it returns); TRIAL_UPLINKS failures
                      -> rolled back at the next boot
    crashed(why)      the trial crashed: why "import: ..." (the app cannot
                      even be imported) -> rolled back now and machine.reset();
                      any other crashed wake counts, REVERT_CRASHES -> rolled
                      back at the next boot (a watchdog reset counts the same)
    stage(slot, v, name)   a verified slot switched in at the next boot
    free_slot()       -> 1 or 2, the slot an update may be written into
    slot_dir(n)       -> "" (factory) or "slots/1", relative to cwd
    running()         -> (slot, version, name); the factory's version is 0
    refused(v)        -> True for a version at or below one rolled back
    report()          -> the health record's appv, appt, aprb, aperr

State: data/appslot, one small binary record + CRC32, written whole (a
temporary file renamed over it), so a power cut leaves the old state or the
new one. A missing file is the factory, silently (a node as deployed); a
damaged one is the factory too, logged and removed (logged once).

The trial's judge is a completed wake: the ladder calls uplink(ok) after
the wake's state is saved, so a wake that crashes after its uplink is a
crash, not a confirmation; main.py counts an exception out of the ladder
itself, and the watchdog armed here covers a hang before the ladder's own.
Known limits, not handled: a node on low battery makes no uplink, yet its
trial boots count toward TRIAL_BOOTS (a long low-battery spell rolls a good
app back); a version rolled back because the network was out through its
trial is never tried again (a new version has to be published); a panic
(HARD_RESET on the ESP32: a crash in C) is not counted as a trial crash, only
exceptions, import failures and watchdog resets are.

Nothing from /lib is imported here: a module loaded before the switch would
stay the factory's copy for the slot's app.
"""

import os
import struct
import sys
import time
from binascii import crc32

import machine

PATH = "data/appslot"
REVERT_CRASHES = 2  # crashed (or hung) wakes on trial before the previous app is back
TRIAL_UPLINKS = 3  # failed uplinks on trial before the same
TRIAL_BOOTS = 48  # an app that never even tries an uplink: back after this many boots
# armed by choose() on a trial boot, before any of the slot's code runs: a hang
# anywhere in it (an import, before the ladder arms its own) resets, counted
# as a hung wake. The ladder's WDT() calls reconfigure this one watchdog (the
# ESP32 port: esp_task_wdt_reconfigure; the simulated board alike).
TRIAL_WDT_MS = 60000
NAME_MAX = 32
ERR_MAX = 80
# format, active, previous, pending slot, trial, trial boots, crashes, of them
# hung (watchdog), failed uplinks; rollbacks; versions: active, previous,
# pending, highest rolled back. Then four texts (1-byte length each): names
# of the active, previous, pending app, and the last rollback's why.
_FMT = "<BBBBBBBBBHIIII"
_FORMAT = 1


class State:
    def __init__(self):
        self.active = self.prev = self.pending = 0
        self.trial = self.boots = self.crashes = self.hung = self.fails = 0
        self.rollbacks = 0
        self.v_active = self.v_prev = self.v_pending = self.rb_max = 0
        self.n_active = self.n_prev = self.n_pending = self.err = ""


_cur = None  # the state choose() settled on for this boot
_wdt = None  # the trial's watchdog, once choose() armed it


def _log(letter, msg):
    print("%s %06d appslot: %s" % (letter, time.ticks_ms(), msg))


def _text(s, n):
    b = s.encode()[:n]
    while True:  # never a UTF-8 sequence cut in half
        try:
            return b, b.decode()
        except UnicodeError:
            b = b[:-1]


def _pack(s):
    body = struct.pack(_FMT, _FORMAT, s.active, s.prev, s.pending, s.trial, min(255, s.boots),
                       min(255, s.crashes), min(255, s.hung), min(255, s.fails), min(65535, s.rollbacks),
                       s.v_active, s.v_prev, s.v_pending, s.rb_max)
    for t, n in ((s.n_active, NAME_MAX), (s.n_prev, NAME_MAX), (s.n_pending, NAME_MAX), (s.err, ERR_MAX)):
        b = _text(t, n)[0]
        body += bytes((len(b),)) + b
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def _parse(raw):
    """-> State, or None for a damaged record."""
    n = struct.calcsize(_FMT)
    if len(raw) < n + 8 or struct.unpack("<I", raw[-4:])[0] != crc32(raw[:-4]) & 0xFFFFFFFF:
        return None
    v = struct.unpack(_FMT, raw[:n])
    if v[0] != _FORMAT or v[1] > 2 or v[2] > 2 or v[3] > 2 or v[4] > 1:
        return None
    s = State()
    (_, s.active, s.prev, s.pending, s.trial, s.boots, s.crashes, s.hung, s.fails, s.rollbacks,
     s.v_active, s.v_prev, s.v_pending, s.rb_max) = v
    texts = []
    i, end = n, len(raw) - 4
    for _ in range(4):
        if i >= end or i + 1 + raw[i] > end:
            return None
        texts.append(str(raw[i + 1:i + 1 + raw[i]], "utf-8"))
        i += 1 + raw[i]
    if i != end:
        return None
    s.n_active, s.n_prev, s.n_pending, s.err = texts
    return s


def _load():
    try:
        with open(PATH, "rb") as f:
            raw = f.read(512)
    except OSError:
        return State()  # none yet: the factory app, as deployed
    try:
        s = _parse(raw)
    except Exception:  # noqa: BLE001  a record that does not even parse
        s = None
    if s is None:
        _log("E", "%s damaged: the factory app runs" % PATH)
        try:
            os.remove(PATH)  # logged once: from now on the factory, silently
        except OSError:
            pass
        return State()
    return s


def _save(s):
    """Whole or not at all: a temporary file renamed over the old one."""
    global _cur
    data = _pack(s)
    try:
        f = open(PATH + ".tmp", "wb")
    except OSError:
        os.mkdir("data")  # a node that never wrote data/ before
        f = open(PATH + ".tmp", "wb")
    try:
        f.write(data)
    finally:
        f.close()
    os.rename(PATH + ".tmp", PATH)
    _cur = s


def _state():
    global _cur
    if _cur is None:
        _cur = _load()
    return _cur


def slot_dir(n):
    if n == 0:
        return ""
    if n in (1, 2):
        return "slots/%d" % n
    raise ValueError("no slot %r" % (n,))


def _has_app(n):
    try:
        os.stat(slot_dir(n) + "/app")
        return True
    except OSError:
        return False


def _rollback(s, why):
    """Back to the previous app (the factory if its slot has vanished); the
    version tried is never tried again."""
    back, v, name = s.prev, s.v_prev, s.n_prev
    if back and not _has_app(back):
        back, v, name = 0, 0, ""
    _log("E", "slot %d v%d rolled back to slot %d v%d: %s" % (s.active, s.v_active, back, v, why))
    if s.v_active > s.rb_max:
        s.rb_max = s.v_active
    s.rollbacks += 1
    s.err = _text(why, ERR_MAX)[1]
    s.active, s.v_active, s.n_active = back, v, name
    s.prev, s.v_prev, s.n_prev = 0, 0, ""
    s.trial = s.boots = s.crashes = s.hung = s.fails = 0


def _paths(n):
    """The slot's folders first on sys.path, the factory's own entries
    off: a module the slot lacks is an ImportError, not the factory's copy."""
    cwd = os.getcwd().rstrip("/")
    base = cwd + "/" + slot_dir(n)
    factory = ("", ".", "/", "/lib", "lib", cwd, cwd + "/lib")
    keep = [p for p in sys.path if p not in factory]
    sys.path.clear()
    sys.path.extend([base, base + "/lib"] + keep)


def choose():
    global _cur
    saved = list(sys.path)
    try:
        s = _load()
        changed = False
        if s.pending:
            if not s.trial:  # on trial, the way back stays the last app that was confirmed
                s.prev, s.v_prev, s.n_prev = s.active, s.v_active, s.n_active
            s.active, s.v_active, s.n_active = s.pending, s.v_pending, s.n_pending
            s.pending, s.v_pending, s.n_pending = 0, 0, ""
            s.trial, s.boots, s.crashes, s.hung, s.fails = 1, 0, 0, 0, 0
            changed = True
            _log("I", "slot %d v%d (%s) switched in: on trial" % (s.active, s.v_active, s.n_active))
        elif s.trial and machine.reset_cause() == machine.WDT_RESET:
            s.crashes += 1  # the last wake on trial hung
            s.hung += 1
            changed = True
        if s.trial:
            why = None
            if s.crashes >= REVERT_CRASHES:
                if s.hung >= s.crashes:
                    why = "hung %d wakes (watchdog)" % s.crashes
                else:
                    why = "crashed %d wakes" % s.crashes
            elif s.fails >= TRIAL_UPLINKS:
                why = "no uplink in %d tries" % s.fails
            elif s.boots >= TRIAL_BOOTS:
                why = "no uplink tried in %d boots" % s.boots
            if why:
                _rollback(s, why)
            else:
                s.boots += 1
            changed = True
        if s.active and not _has_app(s.active):
            if s.trial:
                _rollback(s, "slot %d vanished" % s.active)
            else:
                _log("E", "slot %d has no app/: the factory app runs" % s.active)
                s.err = "slot %d vanished" % s.active
                s.active, s.v_active, s.n_active = 0, 0, ""
            changed = True
        if changed:
            _save(s)
        _cur = s
        if s.active:
            _paths(s.active)
    except Exception as e:  # noqa: BLE001  whatever it is, the factory app runs
        _log("E", "choose: %s: %s: the factory app runs" % (type(e).__name__, e))
        _cur = State()
        sys.path.clear()
        sys.path.extend(saved)
    if _cur.trial:
        _arm()


def _arm():
    global _wdt
    try:
        _wdt = machine.WDT(timeout=TRIAL_WDT_MS)
    except Exception as e:  # noqa: BLE001  the ladder arms its own; the trial goes on
        _log("E", "trial watchdog: %s: %s" % (type(e).__name__, e))


def hold_watchdog():
    """Awake at the REPL on purpose (the break-in window taken, the
    maintenance pin held) on a trial boot: its watchdog, which cannot be
    stopped, fed by a timer. Nothing when none was armed."""
    if _wdt is None:
        return
    w = _wdt
    machine.Timer(0).init(mode=machine.Timer.PERIODIC, period=1000, callback=lambda t: w.feed())


def on_trial():
    return bool(_state().trial)


def running():
    s = _state()
    return s.active, s.v_active, s.n_active


def refused(version):
    s = _state()
    return bool(s.rb_max) and version <= s.rb_max


def report():
    s = _state()
    return {"appv": s.v_active, "appt": 1 if s.trial else 0, "aprb": s.rollbacks, "aperr": s.err}


def uplink(ok):
    """After each uplink attempt of a wake. Off trial: nothing, no flash."""
    if not on_trial():
        return
    s = _load()
    if not s.trial:
        return
    if ok:
        s.trial = s.boots = s.crashes = s.hung = s.fails = 0
        _save(s)
        _log("I", "slot %d v%d confirmed by an uplink" % (s.active, s.v_active))
    else:
        s.fails += 1
        _save(s)
        _log("W", "slot %d v%d on trial: uplink failed (%d of %d)" % (s.active, s.v_active, s.fails,
                                                                      TRIAL_UPLINKS))


def crashed(why):
    """The trial crashed. why "import: ...": rolled back and reset now."""
    if not on_trial():
        return
    s = _load()
    if not s.trial:
        return
    if why.startswith("import"):
        _rollback(s, why)
        _save(s)
        machine.reset()
    s.crashes += 1
    _save(s)
    _log("W", "slot %d v%d on trial: crashed wake %d of %d" % (s.active, s.v_active, s.crashes,
                                                              REVERT_CRASHES))


def stage(slot, version, name):
    """A verified slot switched in at the next boot (one atomic write)."""
    s = _load()
    if slot not in (1, 2) or slot == s.active or (s.trial and slot == s.prev):
        raise ValueError("slot %r cannot be staged (active %d, trial back to %d)"
                         % (slot, s.active, s.prev if s.trial else -1))
    if not isinstance(version, int) or version < 1:
        raise ValueError("version %r" % (version,))
    if not _has_app(slot):
        raise ValueError("slot %d has no app/" % slot)
    s.pending, s.v_pending, s.n_pending = slot, version, _text(name, NAME_MAX)[1]
    _save(s)
    _log("I", "slot %d v%d (%s) staged: switched in at the next boot" % (slot, version, s.n_pending))


def free_slot():
    """-> 1 or 2: the slot that is not active. Call it before writing into
    the slot: a pending switch to it, or a trial's way back to it, is
    dropped first (saved), so no boot ever chooses a half-written slot (a
    trial then rolls back to the factory)."""
    s = _load()
    n = 2 if s.active == 1 else 1
    changed = False
    if s.pending == n:
        s.pending, s.v_pending, s.n_pending = 0, 0, ""
        changed = True
    if s.trial and s.prev == n:
        s.prev, s.v_prev, s.n_prev = 0, 0, ""
        changed = True
    if changed:
        _save(s)
    return n
