"""The app as a ROMFS image against the same .mpy files in a folder, on the
MicroPython VM (issue 13).

    .venv/bin/python bench/romfs.py [--runs 5]

Prints the image's size for the ESP32 (xtensawin) and the VM (x64), the romfs
partition petrel.partitions would make for it, then, for each set of modules
(the whole app; lib/ alone; firmware/app alone), the heap left allocated after
importing them (gc.mem_alloc() after gc.collect(), the app's share: the board's
modules and the image's own bytes are loaded before the baseline) and the VM's
time for the imports (its own ticks_us, this machine's CPU, the median of the
runs), from the image mounted with vfs.VfsRom and from a folder (the VM's
POSIX filesystem, which the page cache serves: nothing like littlefs on NOR
flash, so the times say little about a chip; the heap figures carry over).
Each run is a fresh VM process with a 2 MiB heap.

Then what a littlefs mount reads (vfs.VfsLfs2 on boards/sim's NOR flash model,
MicroPython's littlefs configuration): read calls and bytes from mkfs'd
partitions holding the node's files as `petrel deploy` lays them out (the
app's .mpy at their real sizes, boot.py, main.py, configuration), only
main.py, or only main.py on a 32 KiB partition. This is the flash I/O of the
mount, not its time on a chip.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from petrel import partitions, paths, romfs  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)

    vm = subprocess.run([paths.micropython_binary(), "-c", "import sys; print(sys.version)"],
                        capture_output=True, text=True).stdout.strip()
    print("conditions: MicroPython VM %s (unix port), -X heapsize=2M, %d runs, median; "
          "mpy-cross -march per image" % (vm, args.runs))
    sizes = {}
    for arch in ("xtensawin", "x64"):
        img = romfs.build(arch)
        sizes[arch] = len(img)
        print("image %-9s %6d bytes, %d files" % (arch, len(img), len(romfs.listing(img))))
    part = partitions.romfs_size(sizes["xtensawin"])
    print("romfs partition for the ESP32 image (x1.5, 64 KiB steps): 0x%x (%d KiB, %.0f%% used)\n"
          % (part, part // 1024, 100.0 * sizes["xtensawin"] / part))

    files = romfs.compile_app("x64")
    mods = romfs.modules_of(files)
    sets = (("whole app", mods),
            ("lib/ alone", [m for m in mods if not m.startswith("app")]),
            ("firmware/app alone", [m for m in mods if m.startswith("app")]))
    print("%-20s %4s %12s %12s %6s %11s %11s" % ("modules", "n", "heap ROMFS", "heap folder", "ratio",
                                                "ms ROMFS", "ms folder"))
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "app.romfs"
        image.write_bytes(romfs.image(files))
        romfs.stage(files, Path(tmp) / "dir")
        for name, subset in sets:
            res = {}
            for mode, src in (("rom", image), ("dir", Path(tmp) / "dir")):
                runs = [romfs.vm_import(mode, src, subset) for _ in range(args.runs)]
                res[mode] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            print("%-20s %4d %12d %12d %6.2f %11.2f %11.2f" % (
                name, len(subset), res["rom"][0], res["dir"][0], res["rom"][0] / res["dir"][0],
                res["rom"][1] / 1000.0, res["dir"][1] / 1000.0))
    mount_reads(files)
    return 0


MOUNT_PROBE = r"""
import os, sys, vfs
from norflash import NorFlash

class Counting(NorFlash):
    nbytes = 0

    def read(self, start, buf):
        self.nbytes += len(buf)
        NorFlash.read(self, start, buf)

def mkdirs(path):
    here = "/m"
    for part in path.split("/")[:-1]:
        here += "/" + part
        try:
            os.mkdir(here)
        except OSError:
            pass

for line in open(sys.argv[1]):
    label, blocks, spec = line.rstrip("\n").split("|")
    f = Counting(int(blocks))
    vfs.VfsLfs2.mkfs(f.block_device())
    vfs.mount(vfs.VfsLfs2(f.block_device()), "/m")
    for item in spec.split(","):
        name, size = item.split(":")
        mkdirs(name)
        with open("/m/" + name, "wb") as g:
            g.write(b"x" * int(size))
    vfs.umount("/m")
    f.reads = 0
    f.nbytes = 0
    vfs.mount(vfs.VfsLfs2(f.block_device()), "/m")
    print("%-52s %6d %8d" % (label, f.reads, f.nbytes))
    vfs.umount("/m")
"""


def mount_reads(files):
    node = ["%s:%d" % (rel, len(data)) for rel, data in sorted(files.items())]
    node += ["boot.py:150", "main.py:1200", "board.json:700", "config.json:900", "secrets.json:300"]
    rows = [("2 MiB vfs: app .mpy + boot, main, configuration", 512, ",".join(node)),
            ("2 MiB vfs: main.py only", 512, "main.py:1200"),
            ("32 KiB vfs: main.py only", 8, "main.py:1200")]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec"
        spec.write_text("".join("%s|%d|%s\n" % r for r in rows))
        probe = Path(tmp) / "probe.py"
        probe.write_text(MOUNT_PROBE)
        env = dict(os.environ, MICROPYPATH=".frozen:%s" % paths.SIM)
        p = subprocess.run([paths.micropython_binary(), str(probe), str(spec)], capture_output=True,
                           text=True, timeout=120, env=env, cwd=tmp)
    print("\nwhat a littlefs mount reads (NOR flash model, VM's littlefs):")
    print("%-52s %6s %8s" % ("partition", "reads", "bytes"))
    print(p.stdout.rstrip() or p.stderr.strip()[-300:])


if __name__ == "__main__":
    sys.exit(main())
