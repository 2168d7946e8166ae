# Runs after boot.py on every boot and wake: one wake cycle, then deep sleep.
# First appslot chooses the application (the factory one, or an update in a
# slot folder: switched in on trial, rolled back when its trial fails) and
# puts its folders on sys.path; if appslot itself is missing or broken, the
# factory app runs as deployed. After a power-on or hard reset (never on a
# timer or pin wake) it then listens for a Ctrl-C: the break-in window
# (app/breakin.py), the way back to the REPL on a node that deep-sleeps.
# What goes wrong is rescue.py's: an app that cannot be imported sleeps
# (an update on trial is rolled back, a new MicroPython on trial is reset
# into the bootloader's rollback), an exception out of the wake is counted
# and slept on, never the REPL. Source, never .mpy, and small: it is
# compiled at every wake.
import machine

try:
    import appslot

    appslot.choose()
    _trial = appslot.on_trial()
except Exception as e:  # noqa: BLE001
    print("E 000000 main: appslot: %s" % e)
    _trial = False


def _rescue():
    import sys

    sys.path.append("")  # the root (appslot takes it off sys.path while a slot runs)
    import rescue

    return rescue


_stay = False
if machine.reset_cause() in (machine.PWRON_RESET, machine.HARD_RESET):
    try:
        from app import breakin

        _stay = breakin.window()
    except Exception as e:  # noqa: BLE001  the wake below says why, or sleeps
        _rescue().import_failed(e, _trial)
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
        _rescue().not_importable(e, _trial)  # never returns
    try:
        ladder.run()  # returns only to stay awake (maintenance pin, hold)
    except Exception as e:  # noqa: BLE001  never the REPL on battery
        _rescue().wake_crashed(e, _trial)  # never returns
