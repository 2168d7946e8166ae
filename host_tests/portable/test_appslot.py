# appslot (firmware/appslot.py): which application a boot runs. A slot
# staged by an update switched in on trial at the next boot, confirmed by an
# uplink or rolled back (failed uplinks, crashed or hung wakes, an app that
# cannot be imported); rolled-back versions refused; sys.path holding the
# slot and not the factory's folders; a damaged state file; power cuts at
# each step of every write. In a flash folder of its own, as test_mailbox.
# (Whole boots through main.py: host_tests/host/test_appslot_boot.py.)
import os
import sys

import appslot
import machine
import simstate
from ptest import empty_tree, host_folder, raises, sleep_and_wake



class PowerCut(BaseException):
    """Like the board's Halt: nothing after it runs, no `except Exception` takes it."""


def _folder():
    return host_folder("appslot")


class Node:
    """A flash folder (cwd), sys.path as the node has it, appslot's log."""

    def __init__(self):
        simstate.board.power_on()
        self.dir = _folder()
        self.here = os.getcwd()
        self.orig = list(sys.path)
        self.path = list(sys.path)  # the factory's, at each boot
        os.chdir(self.dir)
        os.mkdir("data")
        self.lines = []
        appslot.print = self.lines.append
        appslot._cur = None

    def slot(self, n, extra=None):
        """An unpacked update in slots/n (what app/update.py leaves)."""
        files = {"app/__init__.py": "", "app/ladder.py": "def run():\n    pass\n"}
        files.update(extra or {})
        for rel, text in files.items():
            parts = ("slots/%d/" % n + rel).split("/")
            for i in range(1, len(parts)):
                try:
                    os.mkdir("/".join(parts[:i]))
                except OSError:
                    pass
            with open("/".join(parts), "w") as f:
                f.write(text)

    def boot(self, cause=machine.DEEPSLEEP_RESET):
        """A new boot: nothing cached, the factory's sys.path, then main.py's choose()."""
        sys.path.clear()
        sys.path.extend(self.path)
        simstate.board.reset_cause = cause
        appslot._cur = None
        appslot.choose()

    def flash(self):
        """What is on flash now, read afresh (nothing cached)."""
        s = appslot._load()
        return (s.active, s.v_active, s.n_active, s.trial, s.prev, s.pending, s.rollbacks, s.err, s.rb_max)

    def close(self):
        del appslot.print
        _uncut()
        appslot._cur = None
        sys.path.clear()
        sys.path.extend(self.orig)
        os.chdir(self.here)


def with_node(fn, *args):
    n = Node()
    try:
        fn(n, *args)
    finally:
        n.close()


def on_trial_in_slot_1(n, version=7):
    n.slot(1)
    appslot.stage(1, version, "0.7.0")
    n.boot()
    assert appslot.running() == (1, version, "0.7.0") and appslot.on_trial()


def test_no_state_file_is_the_factory_quietly():
    def t(n):
        n.boot()
        assert appslot.running() == (0, 0, "") and not appslot.on_trial()
        assert appslot.report() == {"appv": 0, "appt": 0, "aprb": 0, "aperr": ""}
        assert sys.path == n.path and n.lines == []
        appslot.uplink(True)
        appslot.uplink(False)
        appslot.crashed("import: ImportError: x")  # the factory app: nothing to roll back, no reset
        assert "appslot" not in os.listdir("data")  # nothing written for a node as deployed

    with_node(t)


def test_staged_slot_runs_on_trial_then_an_uplink_confirms_it_on_flash():
    def t(n):
        n.slot(1)
        assert appslot.free_slot() == 1
        appslot.stage(1, 7, "0.7.0")
        assert appslot.running() == (0, 0, "")  # the switch is at the next boot
        n.boot()
        assert appslot.running() == (1, 7, "0.7.0") and appslot.on_trial()
        assert appslot.report() == {"appv": 7, "appt": 1, "aprb": 0, "aperr": ""}
        assert n.flash()[:4] == (1, 7, "0.7.0", 1) and n.flash()[4] == 0  # back to the factory if it fails
        appslot.uplink(True)
        assert n.flash()[:4] == (1, 7, "0.7.0", 0)  # confirmed on flash before uplink() returned
        assert not appslot.on_trial() and appslot.report()["appt"] == 0
        n.boot()
        assert appslot.running() == (1, 7, "0.7.0") and not appslot.on_trial()
        assert appslot.free_slot() == 2
        n.slot(2)
        appslot.stage(2, 8, "0.8.0")
        n.boot()
        assert appslot.running() == (2, 8, "0.8.0") and n.flash()[4] == 1  # slot 1 is the way back

    with_node(t)


def test_three_failed_uplinks_roll_back_at_the_next_boot_and_the_version_is_refused():
    def t(n):
        on_trial_in_slot_1(n)
        for _ in range(appslot.TRIAL_UPLINKS):
            assert appslot.running()[0] == 1
            appslot.uplink(False)
            n.boot()
        assert appslot.running() == (0, 0, "") and not appslot.on_trial()
        assert appslot.report() == {"appv": 0, "appt": 0, "aprb": 1, "aperr": "no uplink in 3 tries"}
        assert appslot.refused(7) and appslot.refused(5) and not appslot.refused(8)
        assert any("rolled back" in line for line in n.lines)
        n.boot()
        assert appslot.running() == (0, 0, "") and appslot.report()["aperr"] == "no uplink in 3 tries"

    with_node(t)


def test_two_crashed_wakes_roll_back_to_the_previous_slot():
    def t(n):
        on_trial_in_slot_1(n)
        appslot.uplink(True)
        n.slot(2)
        appslot.stage(2, 9, "0.9.0")
        n.boot()
        assert appslot.running() == (2, 9, "0.9.0")
        appslot.crashed("ValueError: bad reading")
        n.boot()
        assert appslot.running()[0] == 2 and appslot.on_trial()  # one crash: still trying
        appslot.crashed("ValueError: bad reading")
        n.boot()
        assert appslot.running() == (1, 7, "0.7.0") and not appslot.on_trial()
        assert appslot.report()["aperr"] == "crashed 2 wakes" and appslot.refused(9)
        assert sys.path[0].endswith("/slots/1")

    with_node(t)


def test_two_watchdog_resets_on_trial_roll_back_as_hung():
    def t(n):
        n.slot(1)
        appslot.stage(1, 7, "0.7.0")
        n.boot(machine.WDT_RESET)  # the old app hung: not the new one's fault
        assert appslot.on_trial() and appslot._load().crashes == 0
        n.boot(machine.WDT_RESET)
        assert appslot.on_trial()
        n.boot(machine.WDT_RESET)
        assert appslot.running()[0] == 0
        assert appslot.report()["aperr"] == "hung 2 wakes (watchdog)"

    with_node(t)


def test_an_import_crash_rolls_back_and_resets_at_once():
    def t(n):
        on_trial_in_slot_1(n)
        h = sleep_and_wake(appslot.crashed, "import: ImportError: no module named 'app.cycle'")
        assert h.cause == machine.SOFT_RESET
        assert n.flash()[:4] == (0, 0, "", 0)  # on flash before the reset
        n.boot()
        assert appslot.running() == (0, 0, "") and sys.path == n.path
        assert appslot.report()["aperr"] == "import: ImportError: no module named 'app.cycle'"
        assert appslot.refused(7)

    with_node(t)


def test_a_trial_boot_arms_a_watchdog_before_the_slot_runs():
    # the slot's own ladder arms one only once its modules are imported: a
    # hang before that (an import, the break-in) would keep a trial awake
    import time

    def t(n):
        n.boot()
        assert simstate.board.wdt_deadline is None  # the factory app: none armed here
        on_trial_in_slot_1(n)
        assert simstate.board.wdt_timeout_us == appslot.TRIAL_WDT_MS * 1000
        h = sleep_and_wake(time.sleep, appslot.TRIAL_WDT_MS // 1000 + 1)  # the slot hangs
        assert h.cause == machine.WDT_RESET
        n.boot(machine.WDT_RESET)
        assert appslot._load().hung == 1 and appslot.on_trial()  # counted as a hung wake

    with_node(t)


def test_an_app_that_never_tries_an_uplink_goes_back_after_trial_boots():
    def t(n):
        on_trial_in_slot_1(n)
        for _ in range(appslot.TRIAL_BOOTS - 1):
            n.boot()
        assert appslot.on_trial()
        n.boot()
        assert appslot.running()[0] == 0 and "48 boots" in appslot.report()["aperr"]

    with_node(t)


def test_staging_checks_the_slot():
    def t(n):
        n.slot(1)
        raises(ValueError, appslot.stage, 2, 7, "x")  # no app/ there
        raises(ValueError, appslot.stage, 0, 7, "x")  # the factory is never staged
        raises(ValueError, appslot.stage, 1, 0, "x")
        appslot.stage(1, 7, "é" * 40)  # a long name cut whole, never mid-character
        n.boot()
        raises(ValueError, appslot.stage, 1, 8, "x")  # the running slot
        assert appslot.running()[2] == "é" * 16
        raises(ValueError, appslot.slot_dir, 3)
        assert (appslot.slot_dir(0), appslot.slot_dir(2)) == ("", "slots/2")

    with_node(t)


def test_free_slot_never_leaves_a_boot_pointed_at_the_slot_being_written():
    def t(n):
        n.slot(1)
        appslot.stage(1, 7, "a")
        assert appslot.free_slot() == 1 and n.flash()[5] == 0  # the pending switch dropped
        n.boot()
        assert appslot.running()[0] == 0
        appslot.stage(1, 7, "a")
        n.boot()
        appslot.uplink(True)
        n.slot(2)
        appslot.stage(2, 8, "b")
        n.boot()  # slot 2 on trial, slot 1 the way back
        assert appslot.free_slot() == 1 and n.flash()[4] == 0  # the way back is the factory now
        appslot.uplink(False)
        appslot.uplink(False)
        appslot.uplink(False)
        n.boot()
        assert appslot.running()[0] == 0

    with_node(t)


def test_sys_path_holds_the_slot_and_not_the_factory():
    def t(n):
        cwd = os.getcwd().rstrip("/")
        n.path = ["", cwd, cwd + "/lib", "/lib"] + n.path
        with open("only_factory_n1.py", "w") as f:
            f.write("WHERE = 'factory'\n")
        n.slot(1, {"probe_n1.py": "WHERE = 'slot'\n", "lib/probelib_n1.py": "WHERE = 'slot lib'\n"})
        appslot.stage(1, 7, "x")
        n.boot()
        assert sys.path[:2] == [cwd + "/slots/1", cwd + "/slots/1/lib"]
        for p in ("", cwd, cwd + "/lib", "/lib"):
            assert p not in sys.path
        try:
            import probe_n1
            import probelib_n1

            assert probe_n1.WHERE == "slot" and probelib_n1.WHERE == "slot lib"
            raises(ImportError, __import__, "only_factory_n1")
        finally:
            for m in ("probe_n1", "probelib_n1", "only_factory_n1"):
                sys.modules.pop(m, None)

    with_node(t)


def test_a_vanished_slot_is_the_factory():
    def t(n):
        on_trial_in_slot_1(n)
        appslot.uplink(True)
        empty_tree("slots/1")
        os.rmdir("slots/1")
        n.boot()
        assert appslot.running() == (0, 0, "") and sys.path == n.path
        assert "vanished" in appslot.report()["aperr"]

    with_node(t)


def test_a_damaged_state_file_is_the_factory_logged_once():
    def t(n):
        on_trial_in_slot_1(n)
        with open(appslot.PATH, "rb") as f:
            raw = bytearray(f.read())
        bad = appslot.State()
        bad.active = 5  # a CRC that checks, a slot that cannot be
        for damaged in (bytes(raw[:-1]), b"", b"\xff" * 40, bytes(raw[:5]) + b"\x09" + bytes(raw[6:]),
                        appslot._pack(bad)):
            with open(appslot.PATH, "wb") as f:
                f.write(damaged)
            del n.lines[:]
            n.boot()
            assert appslot.running() == (0, 0, "") and sys.path == n.path
            assert len(n.lines) == 1 and "damaged" in n.lines[0]
            n.boot()
            assert len(n.lines) == 1  # once

    with_node(t)


class _CutFile:
    def __init__(self, f, step):
        self.f, self.step = f, step

    def write(self, data):
        if self.step == "write":
            self.f.write(data[:len(data) // 2])
            raise PowerCut()
        return self.f.write(data)

    def close(self):
        if self.step == "close":
            raise PowerCut()
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class _CutOs:
    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):
        return getattr(os, name)

    def rename(self, a, b):
        if self.step == "rename":
            raise PowerCut()
        os.rename(a, b)
        if self.step == "after":
            raise PowerCut()


def _cut_at(step):
    def cut_open(name, mode="r"):
        f = open(name, mode)
        return _CutFile(f, step) if "w" in mode else f

    appslot.open = cut_open
    appslot.os = _CutOs(step)


def _uncut():
    try:
        del appslot.open
    except (AttributeError, KeyError):
        pass
    appslot.os = os


def test_a_power_cut_at_each_write_step_leaves_the_old_state_or_the_new():
    # each write of every operation, cut before, during and after each step
    def stage(n):
        appslot.stage(1, 7, "0.7.0")

    def switch(n):
        n.boot()

    def confirm(n):
        appslot.uplink(True)

    def roll_back(n):
        appslot.crashed("import: ImportError: x")

    ops = ((stage, lambda n: n.slot(1)),
           (switch, lambda n: (n.slot(1), appslot.stage(1, 7, "0.7.0"))),
           (confirm, lambda n: on_trial_in_slot_1(n)),
           (roll_back, lambda n: on_trial_in_slot_1(n)))
    for op, before in ops:
        for step in ("write", "close", "rename", "after"):
            with_node(_cut_case, op, before, step)


def _cut_case(n, op, before, step):
    before(n)
    old = n.flash()
    _cut_at(step)
    try:
        raises(PowerCut, op, n)
    finally:
        _uncut()
    appslot._cur = None  # the power cut: nothing in RAM survives
    simstate.board.power_on()
    got = n.flash()
    # the operation once more, uncut: the state it leaves is "new"
    if got == old:
        try:
            op(n)
        except simstate.Halt as h:
            simstate.board.after_halt(h)
        new = n.flash()
        assert new != old, (op, step)
    else:
        new = got
    assert got in (old, new), (op, step, got)
    assert (got == new) == (step == "after"), (op, step, got)  # the rename is the moment
    n.boot(machine.PWRON_RESET)
    slot = appslot.running()[0]
    assert slot in (0, 1)
    assert (sys.path[0].endswith("/slots/1")) == (slot == 1)
    assert not any("damaged" in line for line in n.lines)
