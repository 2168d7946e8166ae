"""The node's application as a ROMFS image (MicroPython's read-only filesystem,
mounted at /rom at start-up when the board has a partition labelled "romfs").

What goes in: firmware/app and the node's part of lib/, chosen as `petrel
deploy` chooses them (deploy.host_only, deploy.KEEP_SOURCE), compiled by
mpy-cross for the board's arch. boot.py and main.py stay out: MicroPython runs
them by name from the root filesystem only, never from /rom (see README, "The
app from ROMFS"). In the image app/ sits at the top and lib/ under lib/, so
that with /rom and /rom/lib on sys.path (py/vfs.c mp_vfs_mount_romfs_protected)
`from app import ladder` and `import wifi` resolve as they do from plain files.

The bytes are the format `mpremote romfs build` writes (mpremote/romfs.py
VfsRomWriter: records of kind, length, payload, base-128 lengths; entries in
sorted order; the header padded to an even total), and each .mpy embeds its
board path (mpy-cross -s), not this machine's, so the same sources give the
same image on any checkout.

    python -m petrel.romfs build --arch xtensawin -o app.romfs   # prints its size
    python -m petrel.romfs ls app.romfs
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import deploy, paths

HEADER = b"\xd2\xcd\x31"  # ROMFS_RECORD_KIND_FILESYSTEM (0x14a6b1) encoded (extmod/vfs_rom.c)
KIND_PADDING = 1
KIND_DATA_VERBATIM = 2
KIND_DATA_POINTER = 3
KIND_DIRECTORY = 4
KIND_FILE = 5


class RomfsError(ValueError):
    """A damaged or foreign image, in one line."""


def _uint(value):
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.insert(0, 0x80 | (value & 0x7F))
        value >>= 7
    return bytes(out)


def _record(kind, payload):
    return _uint(kind) + _uint(len(payload)) + payload


def image(files):
    """The image of {path: bytes} ("app/ladder.mpy", "lib/wifi.mpy", ...)."""
    tree = {}
    for path, data in files.items():
        parts = path.strip("/").split("/")
        node = tree
        for d in parts[:-1]:
            node = node.setdefault(d, {})
            if not isinstance(node, dict):
                raise RomfsError("%s is both a file and a folder" % d)
        node[parts[-1]] = bytes(data)

    def encode(node):
        out = b""
        for name in sorted(node):  # mpremote: sorted(os.listdir(...))
            name_b = name.encode("ascii")
            entry = _uint(len(name_b)) + name_b
            if isinstance(node[name], dict):
                out += _record(KIND_DIRECTORY, entry + encode(node[name]))
            else:
                out += _record(KIND_FILE, entry + _record(KIND_DATA_VERBATIM, node[name]))
        return out

    body = encode(tree)
    length = _uint(len(body))
    if (len(HEADER) + len(length) + len(body)) % 2:
        length = b"\x80" + length  # a redundant leading 0 digit keeps the image even-sized
    return HEADER + length + body


def _read_uint(data, pos, end):
    value = 0
    while True:
        if pos >= end:
            raise RomfsError("damaged ROMFS image: a length runs past its record")
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos


def image_size(data):
    """Bytes the image occupies (header included), or RomfsError."""
    data = bytes(data[:16])
    if not data.startswith(HEADER):
        raise RomfsError("not a ROMFS image (no d2 cd 31 header)")
    size, pos = _read_uint(data, 3, len(data))
    return pos + size


def listing(data):
    """[(path, bytes)] of every file in an image, in image order; RomfsError
    when the image is damaged (a record running past its parent, a file
    without data)."""
    data = bytes(data)
    end = image_size(data)
    if end > len(data):
        raise RomfsError("damaged ROMFS image: says %d bytes, has %d" % (end, len(data)))
    out = []

    def walk(pos, end, prefix):
        while pos < end:
            kind, pos = _read_uint(data, pos, end)
            size, pos = _read_uint(data, pos, end)
            if pos + size > end:
                raise RomfsError("damaged ROMFS image: a record runs past its folder")
            rec_end = pos + size
            if kind in (KIND_DIRECTORY, KIND_FILE):
                n, p = _read_uint(data, pos, rec_end)
                name = data[p : p + n].decode("ascii", "replace")
                p += n
                if kind == KIND_DIRECTORY:
                    walk(p, rec_end, prefix + name + "/")
                else:
                    out.append((prefix + name, _file_data(p, rec_end, prefix + name)))
            pos = rec_end

    def _file_data(pos, end, name):
        while pos < end:
            kind, pos = _read_uint(data, pos, end)
            size, pos = _read_uint(data, pos, end)
            if kind == KIND_DATA_VERBATIM:
                return data[pos : pos + size]
            if kind == KIND_DATA_POINTER:
                off, p = _read_uint(data, pos, pos + size)
                n, _ = _read_uint(data, p, pos + size)
                return data[off : off + n]
            pos += size
        raise RomfsError("damaged ROMFS image: %s has no data" % name)

    walk(_read_uint(data, 3, 16)[1], end, "")
    return out


def check_arch(data, arch):
    """Every .mpy in the image runs on arch (deploy.ARCHS name): compiled for it,
    or bytecode only (arch "none": mpy-cross tags a file with the arch only when
    it holds native code, lib/filterprog's @micropython.native); -> the
    offenders [(path, their arch)]."""
    bad = []
    for path, body in listing(data):
        if path.endswith(".mpy"):
            got = deploy.mpy_header(body)[2] if len(body) >= 4 and body[:1] == b"M" else "not an .mpy"
            if got not in (arch, "none"):
                bad.append((path, got))
    return bad


def app_files(firmware=paths.FIRMWARE, lib=paths.LIB):
    """{image path: source file}: what `petrel deploy` puts on the board, minus
    boot.py and main.py (run by name from / only) and the host-only modules."""
    out = {}
    for src_root, dest in ((Path(firmware), ""), (Path(lib), "lib/")):
        for src in sorted(Path(src_root).rglob("*.py")):
            if "__pycache__" in src.parts:
                continue
            rel = src.relative_to(src_root).as_posix()
            if deploy.host_only(dest + rel) or (dest == "" and rel in deploy.KEEP_SOURCE):
                continue
            out[dest + rel[:-3] + ".mpy"] = src
    return out


def compile_app(arch, firmware=paths.FIRMWARE, lib=paths.LIB):
    """{image path: .mpy bytes} for arch; DeployError when mpy-cross fails."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel, src in app_files(firmware, lib).items():
            target = Path(tmp) / "m.mpy"
            p = subprocess.run([deploy.mpy_cross(), "-march=%s" % arch, "-s", rel[:-4] + ".py",
                                "-o", str(target), str(src)], capture_output=True, text=True)
            if p.returncode:
                raise deploy.DeployError("mpy-cross failed on %s: %s" % (src, p.stderr.strip()))
            out[rel] = target.read_bytes()
    return out


def build(arch, firmware=paths.FIRMWARE, lib=paths.LIB):
    """The app's ROMFS image for arch (bytes)."""
    return image(compile_app(arch, firmware, lib))


def stage(files, folder):
    """Write {path: bytes} under folder (what `mpremote romfs build --no-mpy` reads)."""
    for rel, data in files.items():
        p = Path(folder) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


# Run on the VM: mount the app (a ROMFS image, or the same .mpy files in a
# folder), import modules, report heap and time. The clock is the VM's own
# (imported before boards/sim goes on the path, whose time is virtual); the
# board's modules the app imports are loaded before the baseline, so the heap
# figure is the app's alone. The image itself is read into a bytes object
# before the baseline: on the ESP32 it is mapped flash, not heap.
VM_PROBE = r"""
import gc, sys, vfs
import time as realtime
mode, src, sim, mods, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
with open(mods) as f:  # a file: an argument past ~256 bytes ends this VM build at start-up
    mods = f.read().split(",")
sys.path.append(sim)
for m in ("machine", "time", "network", "esp32", "socket", "micropython", "ntptime", "cryptolib"):
    try:
        __import__(m)
    except ImportError:
        pass
if mode == "rom":
    with open(src, "rb") as f:
        img = f.read()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path[:0] = ["/rom", "/rom/lib"]
else:
    sys.path[:0] = [src, src + "/lib"]
gc.collect()
base = gc.mem_alloc()
t0 = realtime.ticks_us()
for m in mods:
    __import__(m)
us = realtime.ticks_diff(realtime.ticks_us(), t0)
gc.collect()
with open(out, "w") as f:  # a file: the simulated board's teardown may end the VM hard
    f.write("PROBE %d %d %s" % (gc.mem_alloc() - base, us, ",".join(sys.modules[m].__file__ for m in mods)))
"""


def vm_import(mode, src, modules, heapsize="2M", timeout=120):
    """Import modules on the VM from a ROMFS image file (mode "rom") or a folder
    of the same files ("dir"). -> (heap bytes, import us, [each module's file])."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text(VM_PROBE)
        (Path(tmp) / "mods").write_text(",".join(modules))
        env = dict(os.environ, MICROPYPATH=".frozen")
        p = subprocess.run([paths.micropython_binary(), "-X", "heapsize=%s" % heapsize, str(probe),
                            mode, str(src), str(paths.SIM), str(Path(tmp) / "mods"), str(Path(tmp) / "out")],
                           capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
        result = Path(tmp) / "out"
        line = [result.read_text()] if result.exists() else []
    if not line:
        raise RuntimeError("VM import failed: %s" % (p.stdout + p.stderr).strip()[-400:])
    _, heap, us, files = line[0].split(" ", 3)
    return int(heap), int(us), files.split(",")


def modules_of(files):
    """Importable module names of {image path: ...} ("app.cycle", "wifi")."""
    out = []
    for rel in sorted(files):
        name = rel[:-4]
        if name.startswith("lib/"):
            name = name[4:]
        if name.endswith("/__init__"):
            name = name[: -len("/__init__")]
        out.append(name.replace("/", "."))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m petrel.romfs", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the app's image and print its size")
    b.add_argument("--arch", default="xtensawin", choices=deploy.ARCHS[1:])
    b.add_argument("-o", "--out", required=True)
    s = sub.add_parser("ls", help="list an image's files")
    s.add_argument("image")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            data = build(args.arch)
            Path(args.out).write_bytes(data)
            print("%s: %d bytes, %d files, arch %s" % (args.out, len(data), len(listing(data)), args.arch))
        else:
            for path, body in listing(Path(args.image).read_bytes()):
                print("%7d %s" % (len(body), path))
    except (RomfsError, deploy.DeployError, OSError) as e:
        print("romfs: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
