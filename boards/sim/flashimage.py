"""Host-side work on a simulated board's flash image, run on the VM (which has
littlefs): what `petrel` does to a board's filesystem over mpremote, done to
the image between boots.

    micropython flashimage.py make FOLDER IMAGE [BLOCKS]   littlefs with FOLDER's files
    micropython flashimage.py get IMAGE PATH OUT           copy a file out (exit 3: absent)
    micropython flashimage.py put IMAGE PATH IN            copy a file in (folders made)
    micropython flashimage.py ls IMAGE                     every file, a line each
"""

import os
import sys

import vfs
from norflash import NorFlash

MOUNT = "/_flash"


def _mount(chip):
    vfs.mount(vfs.VfsLfs2(chip.block_device()), MOUNT)


def _makedirs(path):
    here = ""
    for part in path.split("/")[:-1]:
        here += "/" + part if here or part else part
        if here and here != MOUNT:
            try:
                os.mkdir(here)
            except OSError:
                pass


def _copy_in(src, dst):
    _makedirs(dst)
    with open(src, "rb") as f, open(dst, "wb") as g:
        while True:
            b = f.read(4096)
            if not b:
                break
            g.write(b)


def _walk(top):
    for name, kind, *_ in os.ilistdir(top):
        p = top + "/" + name
        if kind == 0x4000:
            yield from _walk(p)
        else:
            yield p


def main(argv):
    cmd = argv[1]
    if cmd == "make":
        folder, image = argv[2], argv[3]
        chip = NorFlash(int(argv[4]) if len(argv) > 4 else 512)
        vfs.VfsLfs2.mkfs(chip.block_device())
        _mount(chip)
        for src in _walk(folder):
            _copy_in(src, MOUNT + src[len(folder):])
        vfs.umount(MOUNT)
        chip.save(image)
        return 0
    image = argv[2]
    chip = NorFlash.load(image)
    _mount(chip)
    if cmd == "get":
        try:
            _copy_in(MOUNT + "/" + argv[3].lstrip("/"), argv[4])
        except OSError:
            return ABSENT
    elif cmd == "put":
        _copy_in(argv[4], MOUNT + "/" + argv[3].lstrip("/"))
    elif cmd == "ls":
        for p in _walk(MOUNT):
            print(p[len(MOUNT):])
    vfs.umount(MOUNT)
    if cmd == "put":
        chip.save(image)
    return 0


ABSENT = 3  # not 1: what the VM exits with on an uncaught error (a MemoryError)
sys.exit(main(sys.argv))
