"""`petrel deploy`: put the firmware on a board with mpremote, changing only what
changed.

- firmware/ goes to the board's root, lib/ to /lib, except the host-only
  modules (HOST_ONLY: a node never imports them); every module except boot.py
  and main.py is precompiled by mpy-cross for the board's arch (board profile
  mpy_arch: xtensawin for the ESP32, x64 for the virtual board), so the node
  neither compiles at boot nor keeps source it does not need.
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

KEEP_SOURCE = ("boot.py", "main.py")  # MicroPython runs these by name

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
    pass


def mpy_cross():
    exe = Path(sys.executable).parent / "mpy-cross"
    return str(exe) if exe.exists() else "mpy-cross"


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
            p = subprocess.run([mpy_cross(), "-march=%s" % arch, "-o", str(target), str(src)],
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


class Board:
    """A board reached through mpremote (a serial port or the virtual board's pty)."""

    def __init__(self, port):
        self.port = port

    def mpremote(self, *args, timeout=120):
        cmd = [str(Path(sys.executable).parent / "mpremote"), "connect", self.port] + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode:
            raise DeployError("mpremote %s failed: %s" % (" ".join(args[:3]),
                                                           (p.stderr or p.stdout).strip()[-400:]))
        return p.stdout

    def files(self):
        out = self.mpremote("exec", _LIST)
        for line in out.splitlines():
            if line.startswith("PETREL-FILES "):
                return dict((k.lstrip("/"), v) for k, v in json.loads(line[13:]).items())
        raise DeployError("the board did not list its files: %s" % out.strip()[-300:])


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


def deploy(port, board="esp32-devkitc", config=None, dry_run=False, reset=False, say=print):
    prof = boards.load(board)
    with tempfile.TemporaryDirectory(prefix="petrel-deploy-") as tmp:
        local = build(tmp, prof["mpy_arch"], config=config, hardware=prof.get("hardware"))
        target = Board(port)
        remote = target.files()
        folders, copy, remove = plan(local, remote)
        for d in folders:
            say("mkdir  :%s" % d)
        for rel in copy:
            say("copy   :%s" % rel)
        for rel in remove:
            say("remove :%s (%s)" % (rel, "host-only" if host_only(rel) else "stale source beside its .mpy"))
        if not (folders or copy or remove):
            say("up to date: %d files" % len(local))
        if dry_run or not (folders or copy or remove or reset):
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
            target.mpremote(*args[:-1], timeout=600)
        say("deployed: %d copied, %d removed, %d unchanged"
            % (len(copy), len(remove), len(local) - len(copy)))
        return folders, copy, remove


def _cmd(args):
    try:
        deploy(args.port, args.board, args.config, args.dry_run, args.reset)
    except boards.ProfileError as e:
        print("petrel deploy: %s" % e, file=sys.stderr)
        return 2
    except DeployError as e:
        print("petrel deploy: %s" % e, file=sys.stderr)
        print("  is the board connected and at its REPL? try: mpremote connect %s repl" % args.port,
              file=sys.stderr)
        return 1
    return 0


def register(sub):
    p = sub.add_parser(
        "deploy", help="copy the firmware to a board (only what changed)",
        description="Precompiles firmware/ and lib/ (less the modules only the host uses) with "
                    "mpy-cross for the board's arch and copies "
                    "to the board through mpremote only the files whose SHA-256 differs, making "
                    "folders first and removing a stale .py beside its .mpy. Example: "
                    "petrel deploy --port /dev/ttyUSB0 --config provisioned/p-a1b2c3 --reset")
    p.add_argument("--port", required=True, help="serial port, or the path printed by `petrel vboard`")
    p.add_argument("--board", default="esp32-devkitc",
                   help="board profile in boards/ (its mpy_arch; `sim` for the virtual board)")
    p.add_argument("--config", help="folder with the node's config.json, secrets.json, certs/")
    p.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    p.add_argument("--reset", action="store_true", help="reset the board afterwards")
    p.set_defaults(func=_cmd)
