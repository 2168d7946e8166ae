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
