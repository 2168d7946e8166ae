"""Lay out a simulated board's flash as a deploy would: firmware/ at the root,
lib/ under /lib. (`petrel deploy` does the same to a real board over mpremote.)"""

import shutil
from pathlib import Path

from .paths import FIRMWARE, LIB


def _copy_tree(src, dst):
    for f in src.rglob("*.py"):
        if "__pycache__" in f.parts:
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)


def populate(flash, firmware=FIRMWARE, lib=LIB):
    flash = Path(flash)
    flash.mkdir(parents=True, exist_ok=True)
    _copy_tree(Path(firmware), flash)
    _copy_tree(Path(lib), flash / "lib")
    return flash


class Image:
    """A simulated board's NOR flash image with littlefs on it (what the VM
    boot runner mounts as /, boards/sim/simboot.py); files go in and out
    through the VM, which has littlefs, as mpremote reaches a real board's."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def make(cls, folder, path, blocks=512):
        """A fresh littlefs of `blocks` 4 KiB blocks (512: the 2 MiB vfs
        partition of a 4 MiB ESP32) holding the folder's files."""
        _vm("make", str(Path(folder).resolve()), str(Path(path).resolve()), str(blocks))
        return cls(path)

    def read(self, name):
        """The file's bytes, or None when the board has no such file."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "f"
            rc = _vm("get", str(self.path.resolve()), name, str(out), check=False)
            if rc == 3:  # boards/sim/flashimage.py's ABSENT
                return None
            if rc:
                _vm("get", str(self.path.resolve()), name, str(out))  # raises with the VM's why
            return out.read_bytes()

    def write(self, name, data):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "f"
            src.write_bytes(data if isinstance(data, bytes) else data.encode())
            _vm("put", str(self.path.resolve()), name, str(src))

    def files(self):
        return _vm("ls", str(self.path.resolve()), out=True).split()


def _vm(*args, check=True, out=False):
    import os
    import subprocess

    from .paths import SIM, micropython_binary

    env = dict(os.environ, MICROPYPATH=str(SIM))
    # the NOR model keeps every written sector in the VM's heap: the default
    # 2 MB runs out once an update's slot sits beside the factory app
    p = subprocess.run([micropython_binary(), "-X", "heapsize=8M", str(SIM / "flashimage.py")] + list(args), env=env,
                       capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise RuntimeError("flash image %s: %s" % (args[0], (p.stderr or p.stdout).strip()[-500:]))
    return p.stdout if out else p.returncode
