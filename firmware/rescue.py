# The failure paths of main.py, kept out of it: main.py is compiled from
# source at every wake (4.7 KB with these took 404 us to compile on the VM
# against 66 us for 1 KB), this only when something failed. Source, never
# .mpy, as main.py: a new MicroPython may not load the old one's .mpy files.
import machine

CRASH_SLEEP_MS = 300000  # as the ladder's after a crash with no configuration


def _fw_switching():
    """A firmware switch or trial (app/fwupdate.py's data/fw: magic, phase,
    then texts name and new slot) whose new slot is the one running, and not
    reset for yet -> a reset rolls it back. Read raw: the app cannot be
    imported. Noted in data/fw.reset (slot and version) so that a build that
    does not roll back resets once, not in a loop."""
    try:
        import esp32
        import struct

        with open("data/fw", "rb") as f:
            raw = f.read(400)
        if raw[:4] != b"PFW1" or raw[4] not in (1, 2, 3):  # SWITCH, SWITCHED, TRIAL
            return False
        n = struct.unpack("<H", raw[19:21])[0]  # the name, after the 19-byte head
        m = struct.unpack("<H", raw[21 + n:23 + n])[0]
        new = raw[23 + n:23 + n + m]
        if esp32.Partition(esp32.Partition.RUNNING).info()[4].encode() != new:
            return False  # the old firmware already runs: a reset changes nothing
        mark = new + b" " + raw[9:13]  # the slot and the version tried
        try:
            with open("data/fw.reset", "rb") as f:
                if f.read() == mark:
                    return False  # reset for once already: the bootloader keeps it
        except OSError:
            pass
        with open("data/fw.reset", "wb") as f:
            f.write(mark)
        return True
    except Exception:  # noqa: BLE001  no OTA build, no data/fw: nothing to roll back
        return False


def _show(e):
    import sys

    if hasattr(sys, "print_exception"):  # MicroPython: the traceback
        sys.print_exception(e)
    else:  # the CPython harness
        print("%s: %s" % (type(e).__name__, e))


def import_failed(e, trial):
    print("E 000000 main: app not importable: %s: %s" % (type(e).__name__, e))
    if trial:
        import appslot

        appslot.crashed("import: %s: %s" % (type(e).__name__, e))  # never returns
    if _fw_switching():
        print("E 000000 main: new firmware on trial: reset to roll it back")
        machine.reset()


def not_importable(e, trial):
    """The app cannot be imported: rolled back when on trial, else a 1 h sleep."""
    import_failed(e, trial)
    _show(e)
    print("E 000000 main: application not importable, sleeping 1 h")
    machine.deepsleep(3600000)


def wake_crashed(e, trial):
    """An exception out of the wake: printed, counted against an app on
    trial, then a sleep (never the REPL on battery)."""
    _show(e)
    print("E 000000 main: wake crashed: %s: %s" % (type(e).__name__, e))
    if trial:
        try:
            import appslot

            appslot.crashed(("wake: %s: %s" % (type(e).__name__, e))[:80])
        except Exception as e2:  # noqa: BLE001
            print("E 000000 main: appslot: %s" % e2)
    if _fw_switching():
        machine.reset()
    machine.deepsleep(CRASH_SLEEP_MS)
