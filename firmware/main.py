# Runs after boot.py on every boot and wake: one wake cycle, then deep sleep.
# After a power-on or hard reset (never on a timer or pin wake) it first
# listens for a Ctrl-C: the break-in window (app/breakin.py), the way back to
# the REPL on a node that deep-sleeps. If the application cannot even be
# imported (a bad deploy), sleep anyway: a node left at the REPL on battery
# is dead in days.
import machine

_stay = False
if machine.reset_cause() in (machine.PWRON_RESET, machine.HARD_RESET):
    try:
        from app import breakin

        _stay = breakin.window()
    except ImportError as e:  # a bad deploy: no window, the wake below says why
        print("W 000000 main: no break-in window: %s" % e)
if not _stay:
    try:
        from app import ladder
    except Exception as e:  # noqa: BLE001
        import sys

        sys.print_exception(e)
        print("E 000000 main: application not importable, sleeping 1 h")
        machine.deepsleep(3600000)
    ladder.run()
