"""`petrel`: the host command for Petrel nodes, real and simulated.

Exit codes: 0 success, 1 the thing ran and failed (a test, a boot), 2 bad usage.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from . import __version__


def _cmd_vm_run(args):
    from . import vm

    script = Path(args.file)
    if not script.exists():
        print("petrel vm run: %s does not exist" % script, file=sys.stderr)
        return 2
    return vm.run_file(script.resolve(), args.args, heapsize=args.heapsize, as_board=True)


def _cmd_vm_test(args):
    from . import vm

    return vm.run_portable_tests(args.tests)


def _cmd_sim(args):
    from . import bootrun, simflash

    tmp = None
    if args.flash:
        flash = Path(args.flash)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="petrel-flash-")
        flash = Path(tmp.name)
    simflash.populate(flash)
    print("# simulated ESP32 on the %s interpreter, flash at %s" % (
        "MicroPython VM" if args.interpreter == "vm" else "CPython", flash))
    runner = bootrun.BootRunner(flash, args.interpreter,
                                serial=lambda t: (sys.stdout.write(t), sys.stdout.flush()))
    boots = runner.run(args.boots)
    print("\n# summary")
    print("%-5s %-10s %-6s %-10s %-9s %s" % ("boot", "cause", "wake", "at", "awake ms", "ended"))
    causes = {1: "poweron", 2: "hard", 3: "watchdog", 4: "deepsleep", 5: "reset"}
    wakes = {0: "-", 2: "ext0", 3: "ext1", 4: "timer"}
    for b in boots:
        print("%-5d %-10s %-6s %-10s %-9.1f %s%s" % (
            b.number, causes.get(b.reset_cause, b.reset_cause), wakes.get(b.wake_reason, b.wake_reason),
            _clock(b.start_us), b.awake_ms, b.end, (": " + b.why) if b.why else ""))
    if tmp is not None:
        tmp.cleanup()
    ok = all(b.end == "halt" for b in boots) and len(boots) == args.boots
    return 0 if ok else 1


def _clock(us):
    s = us // 1000000
    return "%dd%02d:%02d:%02d" % (s // 86400, s // 3600 % 24, s // 60 % 60, s % 60)


TOOL_MODULES = ("vboard", "flash", "deploy", "provision", "monitor", "energy")


def build_parser():
    p = argparse.ArgumentParser(prog="petrel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version="petrel " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    vm = sub.add_parser("vm", help="run code on the MicroPython VM with the simulated board")
    vm_sub = vm.add_subparsers(dest="vm_command", metavar="VM_COMMAND")
    run = vm_sub.add_parser(
        "run", help="run a script on the VM with lib/, firmware/ and the simulated board on its path",
        description="Runs FILE on the real MicroPython VM (unix port) with boards/sim, lib/ and "
                    "firmware/ on MICROPYPATH, so `import machine` is the simulated ESP32. "
                    "A deep sleep or reset ends the script as it ends a board's program "
                    "(reported on stderr). Exits with the script's exit code.")
    run.add_argument("file", help="the script to run")
    run.add_argument("args", nargs="*", help="arguments passed to the script (sys.argv[1:])")
    run.add_argument("--heapsize", help="VM heap size, e.g. 64k (default: the VM's)")
    run.set_defaults(func=_cmd_vm_run)
    test = vm_sub.add_parser(
        "test", help="run the portable tests on the VM",
        description="Runs host_tests/portable on the MicroPython VM. Name a module "
                    "(test_time) or one test (test_time::test_ticks_wrap) to run only those.")
    test.add_argument("tests", nargs="*", help="module or module::test")
    test.set_defaults(func=_cmd_vm_test)

    sim = sub.add_parser(
        "sim", help="run the firmware on the simulated board for several wakes",
        description="Lays out the firmware on a simulated board's flash and plays BOOTS wakes, "
                    "printing the serial log a technician would see and a summary. "
                    "Exits 1 if a boot did not end in a clean halt (deep sleep or reset).")
    sim.add_argument("--boots", type=int, default=6, help="number of boots to play (default 6)")
    sim.add_argument("--interpreter", choices=("vm", "cpython"), default="vm",
                     help="run the firmware on the MicroPython VM (default) or in CPython")
    sim.add_argument("--flash", help="folder to use as the board's flash (default: a temporary one)")
    sim.set_defaults(func=_cmd_sim)
    import importlib

    # Each tool module adds its own subcommand: register(subparsers).
    for name in TOOL_MODULES:
        importlib.import_module("petrel." + name).register(sub)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from . import harness

    harness.install()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
