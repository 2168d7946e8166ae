"""What every boot of the simulated board on the VM does before the firmware
runs (vmboot.py for the boot runner, vboardboot.py for the virtual board):
take the board's state from the host, mount the flash folder as /, and run
boot.py / main.py as the ESP32 port does. Environment:
  PETREL_SIM_STATE   JSON file with the board snapshot to boot from
  PETREL_SIM_EVENTS  file the boot appends its events to (JSON lines)
  PETREL_SIM_FLASH   folder that is the board's flash, or
  PETREL_SIM_FLASH_IMAGE  a NOR flash image (norflash.save) with littlefs on it,
                     mounted as / the way the ESP32 port mounts its vfs
                     partition; saved back when the chip halts, after which
                     nothing reaches it (an unclosed file stays unwritten)
"""

import json
import os
import sys

from simstate import board

# Everything the firmware may import from the board must be loaded before the
# flash folder replaces / (the sim's own folder is unreachable after that).
import machine  # noqa: F401
import time  # noqa: F401
import network  # noqa: F401
import esp32  # noqa: F401
import ntptime  # noqa: F401
import simdev  # noqa: F401
import onewire  # noqa: F401
import socket  # noqa: F401  the board's lwip over host sockets
import norflash

_image = os.getenv("PETREL_SIM_FLASH_IMAGE")
_image_file = None  # opened before / is replaced: the host file stays reachable
_chip = None

_events = open(os.getenv("PETREL_SIM_EVENTS"), "a")


def event(kind, data):
    _events.write(json.dumps([kind, data]))
    _events.write("\n")
    _events.flush()


class Host:
    """Where the board reports NVS commits and halts (with its state on a halt,
    so that whoever ends this process can carry the board on)."""

    def event(self, kind, data):
        if kind == "halt":
            data["state"] = board.snapshot()
            keep_flash()
        event(kind, data)


def keep_flash():
    """The chip stops: its contents go back to the host file, and the
    filesystem mounted on it can never write to it again."""
    global _chip
    if _chip is not None:
        _chip.save(_image_file)
        _chip.dead = True
        _chip = None


def start():
    with open(os.getenv("PETREL_SIM_STATE")) as f:
        board.restore(json.load(f))
    board.host = Host()
    setup = os.getenv("PETREL_SIM_SETUP")
    if setup:  # wire the device models (and faults) for this boot, as the CPython runner does
        __import__(setup).setup(board)
    global _chip, _image_file
    if _image:
        _image_file = open(_image, "r+b")
        _chip = norflash.NorFlash.load(_image_file)
    os.umount("/")
    if _chip is not None:
        import vfs

        vfs.mount(vfs.VfsLfs2(_chip.block_device()), "/")
    else:
        os.mount(os.VfsPosix(os.getenv("PETREL_SIM_FLASH")), "/")
    os.chdir("/")
    sys.path.clear()
    sys.path.append("")
    sys.path.append(".frozen")
    sys.path.append("/lib")


def run(name):
    """Execute a file from the flash as __main__, if it is there."""
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return
    exec(compile(src, name, "exec"), {"__name__": "__main__", "__file__": name})
