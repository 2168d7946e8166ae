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

    return vm.run_portable_tests(args.tests, verbose=args.verbose)


def _cmd_sim(args):
    """The firmware on the simulated esp32-node, many wakes, against a real
    Mosquitto with TLS on loopback, the collector beside it storing what
    arrives in SQLite; the serial log, then what was stored, what is still
    queued on the node, what the wakes cost the battery, and a plot."""
    from . import boards, broker as _broker, collect, energy, simnode, store as _store

    try:
        boards.load(args.board)
    except boards.ProfileError as e:
        print("petrel sim: %s" % e, file=sys.stderr)
        return 2
    if args.boots < 1:
        print("petrel sim: --boots must be at least 1", file=sys.stderr)
        return 2
    if args.update_at and args.interpreter != "vm":
        print("petrel sim: --update-at needs --interpreter vm (an app image is .mpy, which CPython "
              "cannot load)", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="petrel-sim-")
    flash = Path(args.flash) if args.flash else Path(tmp.name) / "flash"
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else folder / "readings.sqlite"
    if not args.db:  # the run's own store: a new node (new key, new counter) each run
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    quiet = args.quiet
    out = sys.stdout
    st = _store.open(str(db))
    with _broker.Broker(Path(tmp.name) / "broker") as b:
        arrived = []
        sub = _subscribe(b, arrived)
        config = None
        if args.update_at:  # an update travels with the uplinks: 4 chunks each, so more of them
            config = simnode.node_config(b, "psk", uplink_every=UPDATE_UPLINK_EVERY)
        node = simnode.SimNode(flash, b, args.interpreter, profile=args.board, config=config,
                               serial=None if quiet else (lambda t: (out.write(t), out.flush())))
        # the collector answers the node's time requests with the simulated world's clock
        col = collect.Collector(st, {simnode.DEVICE_ID: node.hmac_key}, "localhost", b.ports["tls"],
                                ca=b.pki["ca"], client_id="petrel-sim-collector",
                                clock=node.world_ms).start()
        if not col.subscribed.wait(10):
            out.write("petrel sim: the collector did not subscribe within 10 s\n")
            return 1
        out.write("# simulated %s on the %s, flash at %s, broker on 127.0.0.1 (%s), "
                  "collector storing into %s\n" % (
                      args.board, "MicroPython VM" if args.interpreter == "vm" else "CPython",
                      flash, "TLS-PSK" if node.tls == "psk" else "certificate TLS", db))
        push = upd = None
        events = sorted(e for e in ((args.push_config_at, "config"), (args.update_at, "update"))
                        if 0 < e[0] < args.boots)
        boots = []
        for at, what in events:
            boots += node.run(at - len(boots))
            if what == "config":
                push = _push_config(b, node, out)
            else:
                upd = _publish_update(b, node, out)
        boots += node.run(args.boots - len(boots))
        import time

        # until the collector has answered every message the broker got (10 s at most)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                col.counts["messages"] + col.counts["refused"] < len(arrived):
            time.sleep(0.05)
        col.stop()
        sub.loop_stop()
        sub.disconnect()
    counts = st.counts()
    st.close()
    import eventlog

    took = uplinks = 0
    queued = None
    for boot in boots:
        for line in boot.output.splitlines():
            e = eventlog.parse(line)
            if e and e[2] == "wake":
                took += int(e[3].get("readings", 0))
                uplinks += e[3].get("uplink") == "ok"
                queued = int(e[3].get("queue", 0))
    refused = sum(counts["refused"].values())
    span = (boots[-1].end_us - boots[0].start_us) / 1e6 if boots else 0
    awake = sorted(bt.awake_ms for bt in boots)
    out.write("\n# summary\n")
    out.write("wakes %d over %s of virtual time; awake median %.0f ms, max %.0f ms\n" % (
        len(boots), _clock(int(span * 1e6)), awake[len(awake) // 2] if awake else 0,
        awake[-1] if awake else 0))
    out.write("readings taken %d; stored %d in %s; still queued on the node %s; uplinks %d, "
              "health records %d, messages refused %d%s\n" % (
                  took, counts["readings"], db, "?" if queued is None else queued, uplinks,
                  counts["health"], refused, "".join(
                      " %s=%d" % kv for kv in sorted(counts["refused"].items()))))
    if push is not None:
        _push_summary(push, boots, args.push_config_at, out)
    if upd is not None:
        _update_summary(upd, boots, args.update_at, out)
    wear = node.flash_wear()
    if wear is not None:
        out.write("flash (littlefs on a NOR image): %d sector erases, %.1f KiB programmed\n"
                  % (wear[0], wear[1] / 1024.0))
    prof = boards.load(args.board)
    if "energy" in prof and boots:
        energy.simulated_report(prof, node.runner.totals(), out,
                                "battery (%s, phase times from the profile)" % args.board)
        out.write("  (this run's own average: a short run carries the power-on wake, its Wi-Fi "
                  "scan with DHCP and its break-in window, which `petrel energy --board %s`'s "
                  "steady state spreads over a day)\n" % args.board)
    tmp.cleanup()
    png = folder / "temperature.png"
    out.write("query: petrel readings --db %s --device %s --channel t --format csv\n"
              % (db, simnode.DEVICE_ID))
    out.write("plot:  petrel plot --db %s --device %s --channel t rh -o %s\n"
              % (db, simnode.DEVICE_ID, folder / "node.png"))
    if counts["readings"]:
        from . import plot

        with _store.open(str(db)) as st:
            plotted = plot.plot(st, simnode.DEVICE_ID, ["t"], str(png))
        if plotted:
            out.write("temperature (%d readings) plotted to %s\n" % (plotted.get("t", 0), png))
    ok = all(bt.end == "halt" for bt in boots) and len(boots) == args.boots and col.failed is None
    return 0 if ok else 1


def _push_config(b, node, out):
    """The fleet side pushing the simulated node a new configuration while it
    sleeps (README, "Managing nodes in the field"): sample_s doubled, sealed
    with the node's downlink key, retained on its mailbox. -> (version, new)."""
    import json
    import time

    from . import downlink

    new = dict(node.config, sample_s=node.config.get("sample_s", 300) * 2)
    k_mac, _ = downlink.keys(node.hmac_key)
    version = int(time.time() * 1000)
    data = downlink.seal("config", node.config["device_id"], version,
                         downlink.config_body(json.dumps(new).encode()), k_mac)
    with downlink.Link("localhost", b.ports["tls"], ca=b.pki["ca"]) as link:
        link.publish(downlink.topic(node.config["device_id"], "config"), data, retain=True)
    out.write("\n# the fleet side pushed config v%d (sample_s %d -> %d) to the sleeping node\n\n"
              % (version, node.config.get("sample_s", 300), new["sample_s"]))
    return version, new


def _push_summary(push, boots, at, out):
    """Where the pushed configuration was taken, switched in and confirmed."""
    import eventlog

    version, new = push
    seen = {}
    for i, boot in enumerate(boots):
        for line in boot.output.splitlines():
            e = eventlog.parse(line)
            if e and e[2] == "down":
                for word in ("staged", "on trial", "confirmed", "refused", "reverted"):
                    if word in e[4] and word not in seen:
                        seen[word] = i + 1
    out.write("pushed config v%d after boot %d: %s\n" % (version, at, ", ".join(
        "%s at boot %d" % (w, n) for w, n in sorted(seen.items(), key=lambda kv: kv[1])) or
        "not taken (no uplink since the push)"))


SIM_UPDATE_VERSION = "-update"  # appended to app/version.py's VERSION in the image
UPDATE_UPLINK_EVERY = 3  # --update-at's node uplinks every 3 samples (15 min), not hourly


def _publish_update(b, node, out):
    """The fleet side publishing an app update to the sleeping simulated node
    (README, "Updating the application"): today's firmware with VERSION
    marked, compiled for the VM as `petrel update build` does, its chunks
    retained for the fleet and a manifest sealed for the node. -> (image
    version, name, bytes, chunks)."""
    import re
    import shutil
    import time

    from . import deploy, downlink, paths, update

    with tempfile.TemporaryDirectory(prefix="petrel-sim-update-") as tmp:
        fw = Path(tmp) / "firmware"
        shutil.copytree(paths.FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
        vfile = fw / "app" / "version.py"
        text = vfile.read_text()
        name = re.search(r'VERSION = "([^"]*)"', text).group(1) + SIM_UPDATE_VERSION
        vfile.write_text(re.sub(r'VERSION = "[^"]*"', 'VERSION = "%s"' % name, text))
        files = deploy.build(Path(tmp) / "out", "x64", firmware=fw)
        taken = dict((rel, Path(src).read_bytes()) for rel, src in files.items()
                     if update.path_problem(rel) is None)
    img = update.pack(taken)
    plan = update.Plan("app", img, update.APP_CHUNK[1], 1, name)  # the largest: fewer uplinks
    device = node.config["device_id"]
    k_mac, _ = downlink.keys(node.hmac_key)
    with downlink.Link("localhost", b.ports["tls"], ca=b.pki["ca"]) as link:
        update.publish_chunks(link, plan, lambda line: None)
        link.publish(downlink.topic(device, "update"),
                     downlink.seal("update", device, int(time.time() * 1000), plan.body, k_mac), retain=True)
    out.write("\n# the fleet side published app update v1 (%s): %d bytes in %d chunks of %d, "
              "and its manifest for the sleeping node (which uplinks every %d samples in this run)\n\n"
              % (name, len(img), len(plan.msgs), plan.chunk, UPDATE_UPLINK_EVERY))
    return 1, name, len(img), len(plan.msgs)


def _update_summary(upd, boots, at, out):
    """Where the update was downloaded, staged, switched in and confirmed."""
    version, name, size, chunks = upd
    seen = {}
    for i, boot in enumerate(boots):
        for line in boot.output.splitlines():
            for word, mark in (("accepted", "update: app v%d" % version), ("staged", "staged in slot"),
                               ("on trial", "switched in: on trial"), ("confirmed", "confirmed by an uplink"),
                               ("rolled back", "rolled back"), ("refused", "update: refused")):
                if mark in line and word not in seen:
                    seen[word] = i + 1
        if "fw=%s" % name in boot.output and "running" not in seen:
            seen["running"] = i + 1
    out.write("app update v%d (%s, %d bytes, %d chunks) after boot %d: %s\n" % (
        version, name, size, chunks, at, ", ".join(
            "%s at boot %d" % (w, n) for w, n in sorted(seen.items(), key=lambda kv: kv[1])) or
        "not taken (no uplink since it was published)"))


def _subscribe(b, arrived):
    """A plain subscriber that only counts what the broker delivers on up and
    health, so the sim knows when the collector has seen all of it."""
    import paho.mqtt.client as paho
    import threading

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="petrel-sim-checker")
    ready = threading.Event()
    c.on_message = lambda cl, u, m: m.retain or arrived.append(m.topic)
    c.on_subscribe = lambda *a: ready.set()
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe([("petrel/+/up", 1), ("petrel/+/health", 1)])
    c.connect("127.0.0.1", b.ports["plain"])
    c.loop_start()
    ready.wait(5)
    return c


def _clock(us):
    s = us // 1000000
    return "%dd%02d:%02d:%02d" % (s // 86400, s // 3600 % 24, s // 60 % 60, s % 60)


TOOL_MODULES = ("vboard", "flash", "deploy", "provision", "monitor", "energy", "nodeconfig",
                "collect", "readings", "plot", "fleetsim", "fleet", "update")


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
    test.add_argument("-v", "--verbose", action="store_true",
                      help="show the log lines the firmware under test prints (counted otherwise)")
    test.set_defaults(func=_cmd_vm_test)

    sim = sub.add_parser(
        "sim", help="run the firmware on the simulated board for several wakes",
        description="Lays out the firmware on a simulated board's flash, starts Mosquitto with TLS "
                    "on loopback and plays BOOTS wakes with the collector storing what arrives in "
                    "SQLite, printing the serial log a technician would see, then what was stored, "
                    "what is still queued on the node, what it costs the battery, how to query "
                    "and plot the readings, and a plot of the temperature. "
                    "Exits 1 if a boot did not end in a clean halt (deep sleep or reset).")
    sim.add_argument("--boots", type=int, default=48,
                     help="number of boots to play (default 48: 4 hours of 5-minute wakes, as make sim)")
    sim.add_argument("--board", default="esp32-node", help="board profile (default esp32-node)")
    sim.add_argument("--quiet", action="store_true", help="only the summary, not the serial log")
    sim.add_argument("--interpreter", choices=("vm", "cpython"), default="vm",
                     help="run the firmware on the MicroPython VM (default) or in CPython")
    sim.add_argument("--flash", help="folder to use as the board's flash (default: a temporary one)")
    sim.add_argument("--dir", default="build/sim",
                     help="the run's folder: readings.sqlite (replaced at each run) and "
                          "temperature.png (default build/sim)")
    sim.add_argument("--db", help="store the readings here instead (a SQLite file or "
                                  "postgresql:// URL, kept and added to)")
    sim.add_argument("--update-at", type=int, default=0, metavar="BOOT",
                     help="after this many boots, publish an app update (this firmware, its version "
                          "marked '%s') and let the node download it over its uplinks, switch to it "
                          "on trial and confirm it (make sim UPDATE=6; the VM only)" % SIM_UPDATE_VERSION)
    sim.add_argument("--push-config-at", type=int, default=0, metavar="BOOT",
                     help="after BOOT boots, the fleet side pushes a new configuration (sample_s "
                          "doubled) over the downlink: the log shows the node take it at its next "
                          "uplink, switch it in and confirm it (make sim PUSH=24)")
    sim.set_defaults(func=_cmd_sim)
    import importlib
    import importlib.util

    # Each tool module adds its own subcommand: register(subparsers). A module
    # not written yet is left out; an error inside one that exists is not hidden.
    for name in TOOL_MODULES:
        if importlib.util.find_spec("petrel." + name) is not None:
            importlib.import_module("petrel." + name).register(sub)
    return p


def _subparser(parser, argv):
    """The deepest subcommand's parser named in argv (petrel vm test -> its own)."""
    for tok in argv:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and tok in action.choices:
                return _subparser(action.choices[tok], argv[argv.index(tok) + 1:])
    return parser


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's own usage, not the top level's
        _subparser(parser, argv).error("unrecognized arguments: %s" % " ".join(extra))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from . import harness

    harness.install()
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: the user's stop, not a crash to show
        print("\npetrel %s: interrupted" % args.command, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
