"""`petrel deploy`: put the firmware on a board with mpremote, changing only what
changed.

- firmware/ goes to the board's root, lib/ to /lib, except the host-only
  modules (HOST_ONLY: a node never imports them); every module except boot.py
  and main.py is precompiled by mpy-cross for the board's arch (board profile
  mpy_arch: xtensawin for the ESP32, x64 for the virtual board), so the node
  neither compiles at boot nor keeps source it does not need. The MQTT
  client's modules (lib/mqtt*.py) are compiled with -O3: no line numbers in
  their bytecode, which is heap for as long as they are loaded (bench/uplink.py,
  lib/mqtt's code: 192 B less on the 64-bit VM). The cost: a traceback through
  them names the function but not the line. Their expected errors (MQTTError,
  OSError, ValueError) are caught by app/session.py and logged as messages,
  which -O3 leaves as they are; only an unexpected one (a bug, MemoryError)
  reaches the crash log without a line number there. -O3 also drops asserts
  (lib/ has none).
- The board's files are hashed on the board (SHA-256) and only those whose
  content differs are copied; folders are made first; a stale .py beside its
  new .mpy is removed (MicroPython would import the .py), and so is a
  host-only module an older deploy put there.
- --config DIR installs the node's configuration and secrets (the output of
  `petrel provision`) at the root.
- --dry-run lists what would change and touches nothing.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import boards, paths

KEEP_SOURCE = ("boot.py", "main.py", "rescue.py")  # run by name; rescue.py: main.py's failure paths, loadable by any MicroPython

# lib/ modules a node never imports, left off its flash (host_tests/host/
# test_lib_imports.py checks that nothing in firmware/ reaches them):
HOST_ONLY = {
    "senml": "the generic SenML pack and its decoder: a node writes its batch with uplink.encoder",
    "cbordec": "the CBOR decoder: a node only encodes",
    "cosecheck": "COSE_Mac0 parsing and verification: the collector's side",
}


def host_only(rel):
    """Whether a board path (lib/senml.mpy, lib/senml.py) is a HOST_ONLY module's."""
    return rel.startswith("lib/") and rel[4:].rsplit(".", 1)[0] in HOST_ONLY


class DeployError(RuntimeError):
    """What stopped a deploy, in one line; code: the exit code."""

    def __init__(self, msg, code=1):
        super().__init__(msg)
        self.code = code


def mpy_cross():
    exe = Path(sys.executable).parent / "mpy-cross"
    return str(exe) if exe.exists() else "mpy-cross"


# Board paths whose modules mpy-cross compiles with more than -march (see the
# docstring): the MQTT client's, loaded beside the TLS handshake at the heap's peak.
OPTIMIZED = ("lib/mqtt",)


def mpy_cross_args(rel, optimize=None):
    """mpy-cross's options beyond -march for the module at board path rel
    (lib/mqtt.py): what a node runs, for the bench to compile the same way.
    Its source name is the board path (-s), not this machine's: a qstr on the
    node's heap while it is loaded (a long checkout path, tens of bytes a
    module), the name its tracebacks give, and the same .mpy from any checkout.
    optimize: -O3 or not, whatever OPTIMIZED says (the bench compares both)."""
    if optimize is None:
        optimize = rel.startswith(OPTIMIZED)
    return ["-s", rel] + (["-O3"] if optimize else [])


def build(out, arch, firmware=paths.FIRMWARE, lib=paths.LIB, config=None, hardware=None):
    """The board's files, as they must be on its flash, under out/. -> {board path: local file}.
    hardware: the profile's "hardware" section, written as /board.json (the
    firmware's wiring: buses, sensors, rails, pins)."""
    out = Path(out)
    files = {}
    if hardware is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "board.json").write_text(json.dumps({"hardware": hardware}, sort_keys=True))
        files["board.json"] = out / "board.json"
    for src_root, dest in ((Path(firmware), ""), (Path(lib), "lib/")):
        for src in sorted(src_root.rglob("*.py")):
            if "__pycache__" in src.parts:
                continue
            rel = src.relative_to(src_root).as_posix()
            if host_only(dest + rel):
                continue
            if dest == "" and rel in KEEP_SOURCE:
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                files[rel] = target
                continue
            rel_mpy = dest + rel[:-3] + ".mpy"
            target = out / rel_mpy
            target.parent.mkdir(parents=True, exist_ok=True)
            p = subprocess.run([mpy_cross(), "-march=%s" % arch] + mpy_cross_args(dest + rel)
                               + ["-o", str(target), str(src)],
                               capture_output=True, text=True)
            if p.returncode:
                raise DeployError("mpy-cross failed on %s: %s" % (src, p.stderr.strip()))
            files[rel_mpy] = target
    if config is not None:
        for src in sorted(Path(config).rglob("*")):
            if src.is_file():
                rel = src.relative_to(config).as_posix()
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                files[rel] = target
    return files


# What the board runs to say what it has: {path: sha256 hex} for every file.
_LIST = r"""
import os, hashlib, binascii
def walk(d):
    for e in os.ilistdir(d):
        p = d + "/" + e[0] if d != "/" else "/" + e[0]
        if e[1] & 0x4000:
            yield from walk(p)
        else:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while True:
                    b = f.read(512)
                    if not b:
                        break
                    h.update(b)
            yield p, binascii.hexlify(h.digest()).decode()
print("PETREL-FILES", "{" + ",".join('"%s":"%s"' % x for x in walk("/")) + "}")
"""


# What the board says it runs: sys.implementation's .mpy format and arch
# (_mpy: version, sub-version and native arch, py/persistentcode.h).
_IMPL = r"""
import sys
i = sys.implementation
print("PETREL-IMPL", i.name, ".".join(str(v) for v in i.version[:3]), getattr(i, "_mpy", 0))
"""

# Native arch numbers in .mpy headers and sys.implementation._mpy (MP_NATIVE_ARCH_*).
ARCHS = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")


def mpy_header(data):
    """(version, sub-version, arch name) of a compiled .mpy's header."""
    arch = (data[2] >> 2) & 0x2F
    return data[1], data[2] & 3, ARCHS[arch] if arch < len(ARCHS) else "arch %d" % arch


def board_mpy(value):
    """(version, sub-version, arch name) from sys.implementation._mpy."""
    b1 = (value >> 8) & 0xFF
    arch = (b1 >> 2) & 0x2F
    return value & 0xFF, b1 & 3, ARCHS[arch] if arch < len(ARCHS) else "arch %d" % arch


def check_arch(local_mpys, impl, prof):
    """DeployError unless the board loads every .mpy built (MicroPython's own
    check at import, persistentcode.c: the version always; sub-version and
    arch for a file with native code, the only ones that carry an arch)."""
    name, version, mpy = impl
    if not mpy:
        raise DeployError("the board (%s %s) does not load .mpy files: flash a MicroPython "
                          "build with .mpy support (petrel flash)" % (name, version))
    bver, bsub, barch = board_mpy(mpy)
    headers = sorted(set(mpy_header(data) for data in local_mpys),
                     key=lambda h: h[2] == "none")  # one with native code first: it names the arch
    for fver, fsub, farch in headers:
        if fver == bver and (farch == "none" or (fsub == bsub and farch == barch)):
            continue
        farch = farch if farch != "none" else prof["mpy_arch"]
        fits = [n for n in boards.names() if _arch_of(n) == barch]
        raise DeployError(
            "the board runs %s %s (.mpy v%d.%d, %s) but profile %s builds .mpy v%d.%d for %s: "
            "nothing was written; %s" % (
                name, version, bver, bsub, barch, prof["name"], fver, fsub, farch,
                ("use --board " + " or --board ".join(fits)) if fits else
                "flash the MicroPython release matching mpy-cross (petrel flash)"), code=2)
    return bver, bsub, barch


def _arch_of(name):
    try:
        return boards.load(name)["mpy_arch"]
    except boards.ProfileError:
        return None


class Board:
    """A board reached through mpremote (a serial port or the virtual board's pty)."""

    def __init__(self, port):
        self.port = port

    def mpremote(self, *args, what="mpremote", timeout=120):
        """Run mpremote; DeployError naming `what` (never the script sent) on failure."""
        cmd = [str(Path(sys.executable).parent / "mpremote"), "connect", self.port] + list(args)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError("%s: the board did not answer within %d s (is another program "
                              "using %s? reset the board and try again)" % (what, timeout, self.port))
        if p.returncode:
            tail = (p.stderr or p.stdout).strip().splitlines()
            raise DeployError("%s failed: %s" % (what, tail[-1][:300] if tail else "no output"))
        return p.stdout

    def files(self):
        """-> ({path: sha256}, (implementation name, version, _mpy))."""
        out = self.mpremote("exec", _IMPL + _LIST, what="listing the board's files")
        impl = files = None
        for line in out.splitlines():
            if line.startswith("PETREL-IMPL "):
                name, version, mpy = line.split()[1:4]
                impl = (name, version, int(mpy))
            if line.startswith("PETREL-FILES "):
                files = dict((k.lstrip("/"), v) for k, v in json.loads(line[13:]).items())
        if files is None or impl is None:
            raise DeployError("the board did not list its files: %s" % out.strip()[-300:])
        return files, impl


def over_the_air(rel):
    """An over-the-air update's file on the node: its slots, the slot choice
    (firmware/appslot.py), the download in progress (app/update.py:
    data/update, its image data/update.img, a queued manifest)."""
    return rel == "data/appslot" or rel.startswith("slots/") or rel == "data/update" \
        or rel.startswith("data/update.")


def why_removed(rel):
    if host_only(rel):
        return "host-only"
    if rel == "data/update" or rel.startswith("data/update."):
        return "an over-the-air update's download: it would install over what is deployed now"
    if over_the_air(rel):
        return "an over-the-air update's: the app deployed now runs"
    return "stale source beside its .mpy"


DOWNLOAD_NOTE = ("note: an update's download was removed. The update's manifest stays retained on the "
                 "broker: a node whose broker session is lost takes it again and downloads the update "
                 "again while its chunks are there (`petrel update clear IMG` removes them; a download "
                 "without chunks is given up)")


def plan(local, remote):
    """-> (folders to make, files to copy, files to remove)."""
    copy = []
    for rel, path in sorted(local.items()):
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if remote.get(rel) != digest:
            copy.append(rel)
    remove = []
    for rel in sorted(remote):
        if rel.endswith(".py") and rel[:-3] + ".mpy" in local and rel not in local:
            remove.append(rel)  # a .py beside its .mpy wins at import: it must go
        elif host_only(rel) and rel not in local:
            remove.append(rel)  # an older deploy's copy: flash the node never reads
        elif over_the_air(rel):
            # an update the node took over the air (firmware/appslot.py) would
            # keep running instead of what is deployed now, and one still
            # downloading would be installed over it later: the app deployed
            # over USB is the one that runs, and the slots' flash is freed
            remove.append(rel)
    have = set()
    for rel in remote:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            have.add("/".join(parts[:i]))
    folders = []
    for rel in copy:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in have and d not in folders:
                folders.append(d)
    return folders, copy, remove


def deploy(port, board="esp32-devkitc", config=None, dry_run=False, reset=False, say=print,
           break_in=True):
    """Check, build, compare, copy. DeployError (its .code: 1, or 2 for a
    refusal before the board was touched) on anything that stops it; nothing
    is written to the board before every check has passed."""
    from . import nodeconfig, serialport

    prof = boards.load(board)
    if config is not None:
        try:
            problems = nodeconfig.check_dir(config)
        except nodeconfig.FolderMissing as e:
            raise DeployError("--config: %s" % e, code=2)
        if problems:
            raise DeployError("; ".join(problems) + " (nothing was written; petrel config check "
                              "%s lists it)" % config, code=1)
    with tempfile.TemporaryDirectory(prefix="petrel-deploy-") as tmp:
        local = build(tmp, prof["mpy_arch"], config=config, hardware=prof.get("hardware"))
        if break_in:
            serialport.break_in(port, say=say)
        target = Board(port)
        remote, impl = target.files()
        check_arch([Path(local[r]).read_bytes()[:4] for r in sorted(local) if r.endswith(".mpy")],
                   impl, prof)
        folders, copy, remove = plan(local, remote)
        for d in folders:
            say("mkdir  :%s" % d)
        for rel in copy:
            say("copy   :%s" % rel)
        for rel in remove:
            say("remove :%s (%s)" % (rel, why_removed(rel)))
        if "data/update" in remove:
            say(DOWNLOAD_NOTE)
        if not (folders or copy or remove):
            say("up to date: %d files" % len(local))
        if dry_run or not (folders or copy or remove or reset):
            if break_in:
                say("the board is at its REPL (no wake runs): reset it to resume "
                    "(--reset, `petrel run`, or its EN button)")
            return folders, copy, remove
        args = []
        for d in folders:
            args += ["fs", "mkdir", ":" + d, "+"]
        for rel in remove:
            args += ["fs", "rm", ":" + rel, "+"]
        for rel in copy:
            args += ["fs", "cp", str(local[rel]), ":" + rel, "+"]
        if reset:
            args += ["reset", "+"]
        if args:
            target.mpremote(*args[:-1], what="copying to the board", timeout=600)
        say("deployed: %d copied, %d removed, %d unchanged%s"
            % (len(copy), len(remove), len(local) - len(copy), ", board reset" if reset else
               "; the board is at its REPL: reset it to run (--reset)"))
        return folders, copy, remove


def _cmd(args):
    from . import serialport

    try:
        port = serialport.choose(args.port, "deploy")
        with serialport.Lock(port, "deploy"):
            deploy(port, args.board, args.config, args.dry_run, args.reset)
    except boards.ProfileError as e:
        print("petrel deploy: %s" % e, file=sys.stderr)
        return 2
    except (DeployError, serialport.PortError) as e:
        print("petrel deploy: %s" % e, file=sys.stderr)
        return e.code
    return 0


def register(sub):
    p = sub.add_parser(
        "deploy", help="copy the firmware to a board (only what changed)",
        description="Checks the configuration (as `petrel config check`), resets the board into "
                    "its break-in window and takes it (a sleeping node too), checks that the "
                    "board's MicroPython loads the .mpy files the profile builds, then copies "
                    "firmware/ and lib/ (less the modules only the host uses), precompiled with "
                    "mpy-cross, through mpremote: only the files whose SHA-256 differs, folders "
                    "first, a stale .py beside its .mpy removed. Nothing is written before every "
                    "check has passed. The reset is the EN button's: readings a node holds only in RTC "
                    "memory (unsent, not yet on flash) are lost as at a power cut. Example: "
                    "petrel deploy --port /dev/ttyUSB0 --board esp32-devkitc --config nodes/new --reset. "
                    "Exit codes: 0 done, 1 failed or refused, 2 bad usage or nothing tried.")
    p.add_argument("--port", help="serial port, or the path printed by `petrel vboard` "
                                  "(default: the only board found)")
    p.add_argument("--board", default="esp32-devkitc",
                   help="board profile in boards/ (its mpy_arch; `sim` for the virtual board; "
                        "default esp32-devkitc)")
    p.add_argument("--config", help="folder with the node's config.json, secrets.json, certs/")
    p.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    p.add_argument("--reset", action="store_true", help="reset the board afterwards")
    p.set_defaults(func=_cmd)
    register_run(sub)


def _cmd_run(args):
    """Check, deploy what changed, reset (a hardware reset, watched from its
    first line), follow the log."""
    from types import SimpleNamespace

    from . import monitor, serialport

    try:
        port = serialport.choose(args.port, "run")
        with serialport.Lock(port, "run"):
            deploy(port, args.board, args.config)
            say = lambda m: print("petrel run: " + m, flush=True)  # noqa: E731
            say("resetting %s and following its log (Ctrl-C to stop)" % port)
            margs = SimpleNamespace(port=port, baud=115200, level=args.level, tag=args.tag,
                                    timestamps=False, color=args.color, save=args.save,
                                    no_reset=True, exit_after=args.exit_after, reconnect_limit=None)
            return monitor.run(margs, on_open=lambda ser: serialport.hard_reset(port, ser))
    except boards.ProfileError as e:
        print("petrel run: %s" % e, file=sys.stderr)
        return 2
    except (DeployError, serialport.PortError) as e:
        print("petrel run: %s" % e, file=sys.stderr)
        return e.code


def _cmd_repl(args):
    from . import serialport

    try:
        port = serialport.choose(args.port, "repl")
        with serialport.Lock(port, "repl"):
            serialport.break_in(port, say=lambda m: print("petrel repl: " + m, flush=True))
            cmd = [str(Path(sys.executable).parent / "mpremote"), "connect", port, "resume"]
            cmd += ["exec", args.exec] if args.exec else ["repl"]
            return 1 if subprocess.call(cmd) else 0
    except serialport.PortError as e:
        print("petrel repl: %s" % e, file=sys.stderr)
        return e.code


def register_run(sub):
    from . import monitor

    p = sub.add_parser(
        "run", help="check the configuration, deploy what changed, reset and follow the log",
        description="The development loop in one command: `petrel config check` on --config, "
                    "`petrel deploy` (a sleeping node is reached through its break-in window), "
                    "then a hardware reset watched from its first line and the node's log as "
                    "`petrel monitor` shows it, until Ctrl-C or --exit-after. Example: "
                    "petrel run --port /dev/ttyUSB0 --board esp32-devkitc --config nodes/new. "
                    "Exit codes: 0 done, 1 failed or refused, 2 bad usage.")
    p.add_argument("--port", help="serial port or vboard path (default: the only board found)")
    p.add_argument("--board", default="esp32-devkitc", help="board profile (default esp32-devkitc)")
    p.add_argument("--config", help="the node's folder from petrel provision")
    p.add_argument("--level", type=monitor._level, default="D", metavar="E|W|I|D",
                   help="show log lines of this level and more severe (default D: all)")
    p.add_argument("--tag", action="append", metavar="TAG", help="show only these tags")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--save", metavar="FILE", help="also append the raw bytes to FILE")
    p.add_argument("--exit-after", type=monitor._exit_after, metavar="N[s|l]",
                   help="stop after N seconds (30s) or N shown lines (20l)")
    p.set_defaults(func=_cmd_run)
    r = sub.add_parser(
        "repl", help="reset the board into its break-in window and open its REPL",
        description="Resets the board (EN through RTS, or the virtual board's reset), takes the "
                    "firmware's break-in window with Ctrl-C, and hands the REPL to "
                    "`mpremote resume repl` (Ctrl-] leaves it). The board stays at the REPL, no "
                    "wake runs, until it is reset (machine.reset()). Example: "
                    "petrel repl --port /dev/ttyUSB0")
    r.add_argument("--port", help="serial port or vboard path (default: the only board found)")
    r.add_argument("--exec", metavar="CODE", help="run CODE at the REPL instead of opening it")
    r.set_defaults(func=_cmd_repl)
