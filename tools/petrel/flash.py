"""`petrel flash`: write a firmware image to a board with esptool, then prove it is there.

esptool runs as a subprocess of this interpreter (`sys.executable -m esptool`), so it is
the venv's esptool and its serial port, logging and exit never mix with petrel's own.
Its output is streamed to the user as it comes and kept to explain a failure.

Exit codes: 2 when nothing was tried (unknown board, missing image, a port that does
not exist), 1 when the board was asked and the operation failed (no answer, wrong
chip, verify or read-back mismatch), 0 when the image is on the board.
"""

import codecs
import filecmp
import os
import re
import subprocess
import sys
from pathlib import Path

from . import boards

HELP = "write a firmware image to a board with esptool and verify it"

DESCRIPTION = """\
Writes IMAGE at the flash offset of the board profile (boards/BOARD.json gives the
chip, the offset and the default baud rate), then checks it with esptool:

  1. write-flash: writes (after erasing the whole flash with --erase) and checks the
     MD5 of the written region; esptool 5 always does this.
  2. verify-flash: a second, independent check in a new session (skip: --no-verify).
  3. with --read-back FILE: reads the written region into FILE and compares it with
     IMAGE byte for byte.

PORT is a serial device (/dev/ttyUSB0, /dev/ttyACM0, COM3) or a pyserial URL such as
socket://127.0.0.1:9876 (an emulator). List the serial ports with:
  python -m serial.tools.list_ports

Before anything is written, IMAGE is checked: an ESP firmware image (magic 0xE9)
built for the profile's chip (the chip id in its header); the profile names where
to download the right MicroPython .bin.

Exit codes: 0 flashed and verified; 1 the board was asked and the operation failed
(no answer, wrong chip, verify or read-back mismatch); 2 bad usage, nothing tried
(unknown board, missing image, an image for another chip or no image at all, a
port that does not exist).
"""

EPILOG = """\
examples:
  petrel flash build/firmware.bin --port /dev/ttyUSB0
  petrel flash firmware.bin --port /dev/ttyACM0 --board esp32-s3-devkitc --erase
  petrel flash firmware.bin --port /dev/ttyUSB0 --read-back /tmp/readback.bin
"""


def register(subparsers):
    import argparse

    p = subparsers.add_parser("flash", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", help="the firmware image (.bin) to write")
    p.add_argument("--port",
                   help="serial port of the board, or a pyserial URL (socket://HOST:PORT); "
                        "default: the only board found")
    p.add_argument("--board", default="esp32-devkitc",
                   help="board profile in boards/ (default: esp32-devkitc; known: %s)"
                        % ", ".join(boards.names()))
    p.add_argument("--erase", action="store_true",
                   help="erase the whole flash first (the filesystem and settings go too)")
    p.add_argument("--baud", type=int, help="baud rate while flashing (default: the profile's)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the separate verify-flash pass (write-flash's MD5 check still runs)")
    p.add_argument("--read-back", metavar="FILE",
                   help="after flashing, read the written region into FILE and compare with IMAGE")
    p.set_defaults(func=run)


def run(args):
    try:
        prof = boards.load(args.board)
    except boards.ProfileError as e:
        return _usage(str(e))
    from esptool.targets import CHIP_LIST

    if prof["chip"] not in CHIP_LIST:
        return _usage("board profile %s is for chip %r, which esptool cannot flash (it knows %s)"
                      % (prof["name"], prof["chip"], ", ".join(CHIP_LIST)))
    image = Path(args.image)
    if not image.is_file():
        return _usage("image %s does not exist (build it first, or check the path)" % image)
    size = image.stat().st_size
    if size == 0:
        return _usage("image %s is empty" % image)
    wrong = check_image(image, prof)
    if wrong:
        return _usage(wrong)
    from . import serialport

    if args.port is None:
        try:
            args.port = serialport.choose(None, "flash")
        except serialport.PortError as e:
            return _usage(str(e))
    # Only device paths can be checked up front; URLs and COM names go to esptool.
    if args.port.startswith("/") and not os.path.exists(args.port):
        return _usage("port %s does not exist.\n%s" % (args.port, _ports_hint()))
    if args.read_back and not Path(args.read_back).resolve().parent.is_dir():
        return _usage("folder of --read-back %s does not exist" % args.read_back)

    offset = "0x%x" % prof["flash_offset"]
    base = ["--chip", prof["chip"], "--port", args.port, "--baud", str(args.baud or prof["baud"])]
    # Stay in the bootloader between sessions; reset into the firmware after the last one.
    steps = [("write", ["write-flash"] + (["--erase-all"] if args.erase else []) + [offset, str(image)])]
    if not args.no_verify:
        steps.append(("verify", ["verify-flash", offset, str(image)]))
    if args.read_back:
        steps.append(("read back", ["read-flash", offset, str(size), args.read_back]))

    _say("%s %s (%d bytes) at %s on %s (%s) via %s" % (
        "erasing the flash, then writing" if args.erase else "writing", image, size, offset,
        prof["name"], prof["chip"], args.port))
    try:
        lock = serialport.Lock(args.port, "flash") if "://" not in args.port else None
        if lock:
            lock.__enter__()
    except serialport.PortError as e:
        return _fail(str(e))
    try:
        for i, (what, cmd) in enumerate(steps):
            after = "hard-reset" if i == len(steps) - 1 else "no-reset"
            _say(what)
            code, out = run_esptool(base + ["--after", after] + cmd)
            if code != 0:
                return _failed(what, out, prof, args, image, offset)
    finally:
        if lock:
            lock.__exit__()
    if args.read_back:
        if not filecmp.cmp(str(image), args.read_back, shallow=False):
            return _fail("read back: %s differs from %s: the flash at %s does not hold the image. "
                         "Flash again with --erase." % (args.read_back, image, offset))
        _say("read back %d bytes into %s: identical to %s" % (size, args.read_back, image))
    _say("done: %s is on the board at %s%s" % (
        image, offset, "" if args.no_verify else " (verified)"))
    return 0


# esp_chip_id_t in an image's extended header (ESP-IDF esp_app_format.h)
CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12, "esp32c6": 13,
            "esp32h2": 16, "esp32p4": 18, "esp32c5": 23, "esp32c61": 20}


def check_image(image, prof):
    """Why IMAGE cannot be right for the profile's chip, or None. The first
    image in a MicroPython .bin (the bootloader at 0x1000 on the ESP32, 0x0
    on S3/C3) starts with the ESP image header: magic 0xE9, and at byte 12
    the chip id it was built for."""
    with open(image, "rb") as f:
        head = f.read(24)
    where = _where(prof)
    if len(head) < 24 or head[0] != 0xE9:
        return ("%s is not an ESP firmware image (it starts with %s, not the image magic 0xE9): "
                "%s" % (image, "0x%02x" % head[0] if head else "nothing", where))
    chip = int.from_bytes(head[12:14], "little")
    want = CHIP_IDS.get(prof["chip"])
    if want is not None and chip != want:
        named = [n for n, c in CHIP_IDS.items() if c == chip]
        fits = [n for n in boards.names() if _chip_of(n) in named]
        return ("%s is built for %s (chip id %d in its header), but board profile %s is for %s: "
                "%s" % (image, named[0] if named else "an unknown chip", chip, prof["name"],
                        prof["chip"], ("use --board " + " or --board ".join(fits) + ", or ")
                        if fits else "") + where)
    return None


def _where(prof):
    mp = prof.get("micropython")
    if not mp:
        return "use the MicroPython firmware .bin for %s from https://micropython.org/download/" % prof["chip"]
    return "download %s from %s" % (mp["file"], mp["download"])


def run_esptool(argv):
    """Run esptool, streaming its output; returns (exit code, output)."""
    proc = subprocess.Popen([sys.executable, "-m", "esptool"] + argv,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    out = []
    while True:
        chunk = os.read(proc.stdout.fileno(), 4096)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            out.append(text)
        if not chunk:
            break
    proc.stdout.close()
    return proc.wait(), "".join(out)


def _failed(what, out, prof, args, image, offset):
    m = re.search(r"This chip is (\S+), not (\S+)\.", out)
    if m:
        answered = m.group(1).lower().replace("-", "")
        fits = [n for n in boards.names() if _chip_of(n) == answered]
        use = ("use --board %s" % " or --board ".join(fits) if fits else
               "no profile in boards/ is for %s: add boards/NAME.json for it" % answered)
        return _fail("wrong chip: %s answered as %s, but board profile %s is for %s; %s." % (
            args.port, answered, prof["name"], prof["chip"], use))
    if "Verification failed" in out or "does not match data in flash" in out:
        return _fail("verify failed: the flash at %s does not hold %s. Flash again with --erase; "
                     "if it fails again, check the power supply and the USB cable." % (offset, image))
    if "No such file or directory" in out:
        return _fail("port %s does not exist.\n%s" % (args.port, _ports_hint()))
    if "Permission denied" in out:
        return _fail("no permission to open %s: on Linux add yourself to the dialout group "
                     "(sudo usermod -aG dialout $USER) and log in again." % args.port)
    if "Connection refused" in out:
        return _fail("nothing listens at %s: start the emulator or serial bridge first." % args.port)
    if "Could not open" in out:
        return _fail("%s is busy: close whatever holds it (petrel monitor, screen, an IDE) "
                     "and try again." % args.port)
    if "Failed to connect" in out or "No serial data received" in out:
        return _fail("no bootloader answered on %s: hold BOOT, press and release EN (RST), "
                     "release BOOT and try again; check the cable carries data." % args.port)
    return _fail("%s failed (esptool's output is above)." % what)


def _chip_of(name):
    try:
        return boards.load(name)["chip"]
    except boards.ProfileError:
        return None


def _ports_hint():
    try:
        from serial.tools import list_ports

        found = ["  %s  %s" % (p.device, "" if p.description == "n/a" else p.description)
                 for p in list_ports.comports()]
    except Exception:  # listing is a courtesy; never mask the real error
        found = []
    now = ("serial ports present now:\n" + "\n".join(found)) if found else \
        "no serial port is present now: is the board plugged in with a data cable?"
    return now + "\nlist them with: python -m serial.tools.list_ports"


def _say(msg):
    print("petrel flash: " + msg, flush=True)


def _fail(msg):
    print("petrel flash: " + msg, file=sys.stderr, flush=True)
    return 1


def _usage(msg):
    print("petrel flash: " + msg, file=sys.stderr, flush=True)
    return 2
