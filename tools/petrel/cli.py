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
    """The firmware on the simulated esp32-node, many wakes, against a real
    Mosquitto with TLS on loopback; the serial log, then what arrived
    (verified by the collector) and what the wakes cost the battery."""
    from . import boards, broker as _broker, collector, energy, simnode

    tmp = tempfile.TemporaryDirectory(prefix="petrel-sim-")
    flash = Path(args.flash) if args.flash else Path(tmp.name) / "flash"
    quiet = args.quiet
    out = sys.stdout
    with _broker.Broker(Path(tmp.name) / "broker") as b:
        received = []
        sub = _subscribe(b, received)
        node = simnode.SimNode(flash, b, args.interpreter, profile=args.board,
                               serial=None if quiet else (lambda t: (out.write(t), out.flush())))
        out.write("# simulated %s on the %s, flash at %s, broker on 127.0.0.1 (%s)\n" % (
            args.board, "MicroPython VM" if args.interpreter == "vm" else "CPython", flash,
            "TLS-PSK" if node.tls == "psk" else "certificate TLS"))
        boots = node.run(args.boots)
        import time

        time.sleep(0.5)  # the last messages on their way to the checker
        sub.loop_stop()
        sub.disconnect()
    v = collector.Verifier({simnode.DEVICE_ID: node.hmac_key})
    readings = health = rejected = 0
    for topic, payload in received:
        kind = topic.rsplit("/", 1)[-1]
        if kind == "status":
            continue
        try:
            got = v.accept(payload, "health" if kind == "health" else "senml")
        except collector.Rejected:
            rejected += 1
            continue
        if kind == "health":
            health += 1
        else:
            readings += len(got)
    import eventlog

    took = uplinks = 0
    for boot in boots:
        for line in boot.output.splitlines():
            e = eventlog.parse(line)
            if e and e[2] == "wake":
                took += int(e[3].get("readings", 0))
                uplinks += e[3].get("uplink") == "ok"
    span = (boots[-1].end_us - boots[0].start_us) / 1e6 if boots else 0
    awake = sorted(bt.awake_ms for bt in boots)
    out.write("\n# summary\n")
    out.write("wakes %d over %s of virtual time; awake median %.0f ms, max %.0f ms\n" % (
        len(boots), _clock(int(span * 1e6)), awake[len(awake) // 2] if awake else 0,
        awake[-1] if awake else 0))
    out.write("readings taken %d, arrived and verified %d (%d messages refused as repeats); "
              "uplinks %d; health records %d\n" % (took, readings, rejected, uplinks, health))
    wear = node.flash_wear()
    if wear is not None:
        out.write("flash (littlefs on a NOR image): %d sector erases, %.1f KiB programmed\n"
                  % (wear[0], wear[1] / 1024.0))
    prof = boards.load(args.board)
    if "energy" in prof and boots:
        energy.simulated_report(prof, node.runner.totals(), out,
                                "battery (%s, phase times from the profile)" % args.board)
    tmp.cleanup()
    ok = all(bt.end == "halt" for bt in boots) and len(boots) == args.boots
    return 0 if ok else 1


def _subscribe(b, received):
    import paho.mqtt.client as paho
    import threading

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="petrel-sim-checker")
    ready = threading.Event()
    c.on_message = lambda cl, u, m: received.append((m.topic, m.payload))
    c.on_subscribe = lambda *a: ready.set()
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("petrel/#", qos=1)
    c.connect("127.0.0.1", b.ports["plain"])
    c.loop_start()
    ready.wait(5)
    return c


def _clock(us):
    s = us // 1000000
    return "%dd%02d:%02d:%02d" % (s // 86400, s // 3600 % 24, s // 60 % 60, s % 60)


TOOL_MODULES = ("vboard", "flash", "deploy", "provision", "monitor", "energy",
                "collect", "readings", "plot", "fleetsim")


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
        description="Lays out the firmware on a simulated board's flash, starts Mosquitto with TLS "
                    "on loopback and plays BOOTS wakes, printing the serial log a technician would "
                    "see, then what arrived (verified) and what it costs the battery. "
                    "Exits 1 if a boot did not end in a clean halt (deep sleep or reset).")
    sim.add_argument("--boots", type=int, default=36, help="number of boots to play (default 36: 3 hours)")
    sim.add_argument("--board", default="esp32-node", help="board profile (default esp32-node)")
    sim.add_argument("--quiet", action="store_true", help="only the summary, not the serial log")
    sim.add_argument("--interpreter", choices=("vm", "cpython"), default="vm",
                     help="run the firmware on the MicroPython VM (default) or in CPython")
    sim.add_argument("--flash", help="folder to use as the board's flash (default: a temporary one)")
    sim.set_defaults(func=_cmd_sim)
    import importlib
    import importlib.util

    # Each tool module adds its own subcommand: register(subparsers). A module
    # not written yet is left out; an error inside one that exists is not hidden.
    for name in TOOL_MODULES:
        if importlib.util.find_spec("petrel." + name) is not None:
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
