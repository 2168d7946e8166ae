# Runs after boot.py on every boot and wake: one wake cycle, then deep sleep.
# First appslot chooses the application (the factory one, or an update in a
# slot folder: switched in on trial, rolled back when its trial fails) and
# puts its folders on sys.path; if appslot itself is missing or broken, the
# factory app runs as deployed. After a power-on or hard reset (never on a
# timer or pin wake) it then listens for a Ctrl-C: the break-in window
# (app/breakin.py), the way back to the REPL on a node that deep-sleeps. If
# the application cannot even be imported (a bad deploy), sleep anyway: a
# node left at the REPL on battery is dead in days; an update on trial that
# cannot be imported is rolled back at once (appslot.crashed resets).
import machine

try:
    import appslot

    appslot.choose()
    _trial = appslot.on_trial()
except Exception as e:  # noqa: BLE001
    print("E 000000 main: appslot: %s" % e)
    _trial = False


def _import_failed(e):
    if _trial:
        appslot.crashed("import: %s: %s" % (type(e).__name__, e))  # never returns


_stay = False
if machine.reset_cause() in (machine.PWRON_RESET, machine.HARD_RESET):
    try:
        from app import breakin

        _stay = breakin.window()
    except Exception as e:  # noqa: BLE001
        _import_failed(e)
        if not isinstance(e, ImportError):
            raise
        print("W 000000 main: no break-in window: %s" % e)  # a bad deploy: the wake below says why
if not _stay:
    try:
        from app import ladder
    except Exception as e:  # noqa: BLE001
        _import_failed(e)
        import sys

        sys.print_exception(e)
        print("E 000000 main: application not importable, sleeping 1 h")
        machine.deepsleep(3600000)
    ladder.run()
