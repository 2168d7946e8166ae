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
"""

import argparse
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
