# Runs after boot.py on every boot and wake: one wake cycle, then deep sleep.
# First appslot chooses the application (the factory one, or an update in a
# slot folder: switched in on trial, rolled back when its trial fails) and
# puts its folders on sys.path; if appslot itself is missing or broken, the
# factory app runs as deployed. After a power-on or hard reset (never on a
# timer or pin wake) it then listens for a Ctrl-C: the break-in window
# (app/breakin.py), the way back to the REPL on a node that deep-sleeps. If
# the application cannot even be imported (a bad deploy), sleep anyway: a
# node left at the REPL on battery is dead in days; an update on trial that
# cannot be imported is rolled back at once (appslot.crashed resets), and so
# is a new MicroPython on its trial that cannot load the app (a reset: the
# bootloader rolls back an unconfirmed image, a deep sleep would keep it).
# An exception out of the wake itself is printed, counted against an app on
# trial, and the node sleeps: never the REPL. This file is source, never
# .mpy: a new MicroPython may not load the old one's .mpy files.
import machine

CRASH_SLEEP_MS = 300000  # as the ladder's after a crash with no configuration

try:
    import appslot

    appslot.choose()
    _trial = appslot.on_trial()
except Exception as e:  # noqa: BLE001
    print("E 000000 main: appslot: %s" % e)
    _trial = False


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


def _import_failed(e):
    print("E 000000 main: app not importable: %s: %s" % (type(e).__name__, e))
    if _trial:
        appslot.crashed("import: %s: %s" % (type(e).__name__, e))  # never returns
    if _fw_switching():
        print("E 000000 main: new firmware on trial: reset to roll it back")
        machine.reset()


_stay = False
if machine.reset_cause() in (machine.PWRON_RESET, machine.HARD_RESET):
    try:
        from app import breakin

        _stay = breakin.window()
    except Exception as e:  # noqa: BLE001  the wake below says why, or sleeps
        _import_failed(e)
        print("W 000000 main: no break-in window: %s" % e)
    if _stay and _trial:
        try:
            appslot.hold_watchdog()  # the REPL asked for: no reset under the technician
        except Exception as e:  # noqa: BLE001
            print("E 000000 main: %s" % e)
if not _stay:
    try:
        from app import ladder
    except Exception as e:  # noqa: BLE001
        _import_failed(e)
        _show(e)
        print("E 000000 main: application not importable, sleeping 1 h")
        machine.deepsleep(3600000)
    try:
        ladder.run()  # returns only to stay awake (maintenance pin, hold)
    except Exception as e:  # noqa: BLE001  never the REPL on battery
        _show(e)
        print("E 000000 main: wake crashed: %s: %s" % (type(e).__name__, e))
        if _trial:
            try:
                appslot.crashed(("wake: %s: %s" % (type(e).__name__, e))[:80])
            except Exception as e2:  # noqa: BLE001
                print("E 000000 main: appslot: %s" % e2)
        if _fw_switching():
            machine.reset()
        machine.deepsleep(CRASH_SLEEP_MS)
