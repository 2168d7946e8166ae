# Runs after boot.py on every boot and wake: one wake cycle, then deep sleep.
# If the application cannot even be imported (a bad deploy), sleep anyway:
# a node left at the REPL on battery is dead in days.
try:
    from app import ladder
except Exception as e:  # noqa: BLE001
    import sys

    import machine

    sys.print_exception(e)
    print("E 000000 main: application not importable, sleeping 1 h")
    machine.deepsleep(3600000)
ladder.run()
