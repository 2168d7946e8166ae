"""`petrel monitor PORT`: a technician's serial monitor for Petrel nodes.

Reads a serial port (or any pyserial URL), shows Petrel's log lines filtered and
coloured by level, explains the ESP32 ROM's reset line, keeps a MicroPython
traceback together as one block, and survives the port going away (a USB-UART
unplugged): it waits for the port and carries on when it is back.

Exit codes: 0 normal end (--exit-after reached, Ctrl-C), 1 the port did not come
back within --reconnect-limit, 2 bad usage.
"""

import argparse
import datetime
import importlib.util
import os
import re
import sys
import time

from . import paths

# One definition of the log line format: lib/eventlog.py, loaded by path under a
# private name so that nothing else in lib/ lands on the host's sys.path and the
# firmware's own `import eventlog` (simulated board) is left untouched.
_spec = importlib.util.spec_from_file_location("petrel._eventlog", paths.LIB / "eventlog.py")
eventlog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eventlog)

LEVELS = "EWID"  # most severe first, as in eventlog
RETRY_S = 0.5  # how often a gone port is tried again
IDLE_FLUSH_S = 0.5  # a partial line (a prompt, a cut-off line) is shown after this much silence
MAX_TRACEBACK = 200  # lines; a block that never ends is shown anyway

# ESP32 ROM reset reasons (the `rst:0x..` line printed at every boot).
RESETS = {
    0x1: "power-on",
    0x3: "software reset",
    0x5: "deep-sleep wake",
    0x7: "timer-group 0 watchdog",
    0x8: "timer-group 1 watchdog",
    0xC: "software CPU reset: machine.reset()",
    0xF: "brownout: supply voltage dropped",
    0x10: "RTC watchdog",
}
_RST = re.compile(r"rst:0x([0-9a-fA-F]+) \(")
_TB_FILE = re.compile(r'File "([^"]+)", line (\d+)')
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # everything but tab

RESET, RED, YELLOW, GREEN, DIM, CYAN, BOLD_RED = (
    "\x1b[0m", "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[2m", "\x1b[36m", "\x1b[1;31m")
LEVEL_COLOR = {"E": RED, "W": YELLOW, "I": GREEN, "D": DIM}

EPILOG = """\
examples:
  petrel monitor /dev/ttyUSB0
  petrel monitor /dev/ttyUSB0 --level W --timestamps --save node17.log
  petrel monitor /dev/ttyACM0 --no-reset --tag boot --tag outbox
  petrel monitor socket://127.0.0.1:4000 --color never --exit-after 30s
  petrel monitor rfc2217://bench-pi:2217 --exit-after 1l --tag boot   # wait for the next boot

--level L shows log lines of level L and more severe (E < W < I < D); --tag keeps
only log lines with those tags. Lines that are not Petrel log lines (ROM banner,
reset line, tracebacks, REPL) are always shown. Bytes that are not UTF-8 text and
control characters are shown escaped (\\xNN). A line without its end (a prompt)
is shown after 0.5 s of silence.

--exit-after takes seconds ("30", "30s", "1.5s") or shown lines ("20l", "20lines").

If the port goes away, the monitor says so on stderr, tries to open it again every
0.5 s and carries on reading when it is back (give the stable /dev/serial/by-id/...
name, not ttyUSBn, which may change when a board is plugged in again).

exit codes: 0 --exit-after reached or Ctrl-C, 1 the port did not come back within
--reconnect-limit, 2 bad usage."""


def register(subparsers):
    p = subparsers.add_parser(
        "monitor", help="show a node's serial log: filtered, coloured, reset reasons explained",
        description=__doc__.split("\n\n")[1], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", help="serial port (/dev/ttyUSB0, COM3) or pyserial URL "
                                "(socket://host:port, rfc2217://host:port, loop://)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--level", type=_level, default="D", metavar="E|W|I|D",
                   help="show log lines of this level and more severe (default D: all)")
    p.add_argument("--tag", action="append", metavar="TAG",
                   help="show only log lines with this tag (repeat for several)")
    p.add_argument("--timestamps", action="store_true",
                   help="prefix each line with the host's wall-clock time")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour by level with ANSI codes (auto: only on a terminal)")
    p.add_argument("--save", metavar="FILE",
                   help="also append everything received, raw and unfiltered, to FILE")
    p.add_argument("--no-reset", action="store_true",
                   help="keep DTR and RTS released when opening, so the board is not reset")
    p.add_argument("--exit-after", type=_exit_after, metavar="N[s|l]",
                   help="stop after N seconds (30, 30s) or N shown lines (20l)")
    p.add_argument("--reconnect-limit", type=float, metavar="SECONDS",
                   help="give up (exit 1) when the port is gone or absent this long "
                        "(default: wait forever)")
    p.set_defaults(func=run)
    return p


def _level(text):
    if text.upper() not in ("E", "W", "I", "D"):
        raise argparse.ArgumentTypeError("level must be one of E, W, I, D")
    return text.upper()


def _exit_after(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|l|lines?)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError("expected seconds (30, 30s) or lines (20l)")
    n = float(m.group(1))
    if m.group(2) and m.group(2).startswith("l"):
        if n != int(n) or n < 1:
            raise argparse.ArgumentTypeError("a line count is a whole number >= 1")
        return ("lines", int(n))
    return ("seconds", n)


def decode(raw):
    """Bytes of one line (terminator removed) -> printable text; never raises."""
    text = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), text)


def reset_annotation(text):
    """'rst:0x5 (DEEPSLEEP_RESET),boot:0x13 ...' -> '[boot] reset: deep-sleep wake (rst 0x5)'."""
    m = _RST.search(text)
    if not m:
        return None
    code = int(m.group(1), 16)
    return "[boot] reset: %s (rst 0x%x)" % (RESETS.get(code, "unknown reason"), code)


class Monitor:
    """Turns the port's bytes into shown lines. Feed it bytes; it writes to out."""

    def __init__(self, level="D", tags=None, timestamps=False, color=False,
                 save=None, max_lines=None, out=None):
        self.level = LEVELS.index(level)
        self.tags = set(tags) if tags else None
        self.timestamps = timestamps
        self.color = color
        self.save = save  # binary file or None
        self.max_lines = max_lines
        self.out = out or sys.stdout
        self.shown = 0
        self.pending = b""  # an unfinished line
        self.traceback = None  # lines of a traceback being collected

    @property
    def done(self):
        return self.max_lines is not None and self.shown >= self.max_lines

    def feed(self, data):
        self.pending += data
        while not self.done:
            nl = self.pending.find(b"\n")
            if nl < 0:
                break
            raw, self.pending = self.pending[:nl + 1], self.pending[nl + 1:]
            self._line(raw)

    def flush(self):
        """Show what is held back: a partial line, an unfinished traceback."""
        if self.pending and not self.done:
            raw, self.pending = self.pending, b""
            self._line(raw)
        if self.traceback:
            self._end_traceback()

    def _line(self, raw):
        if self.save:
            self.save.write(raw)
            self.save.flush()
        text = decode(raw.rstrip(b"\n").rstrip(b"\r"))
        record = eventlog.parse(text)
        if self.traceback is not None:
            if text[:1] in (" ", "\t"):
                self.traceback.append(text)
                if len(self.traceback) >= MAX_TRACEBACK:
                    self._end_traceback()
                return
            if text.strip() and record is None:  # the exception line closes the block
                self.traceback.append(text)
                self._end_traceback()
                return
            self._end_traceback()
        if text.startswith("Traceback (most recent call last):"):
            self.traceback = [text]
            return
        if record is not None:
            letter, _ms, tag, _fields, _msg = record
            if LEVELS.index(letter) > self.level or (self.tags and tag not in self.tags):
                return
            self._show(text, LEVEL_COLOR[letter])
            return
        self._show(text, None)
        note = reset_annotation(text)
        if note:
            self._show(note, CYAN, count=False)

    def _end_traceback(self):
        lines, self.traceback = self.traceback, None
        for text in lines:
            self._show(text, RED)
        last = lines[-1] if len(lines) > 1 and not lines[-1][:1].isspace() else "(no exception line)"
        where = _TB_FILE.findall("\n".join(lines))
        at = " at %s line %s" % where[-1] if where else ""
        self._show("[traceback] %s%s" % (last, at), BOLD_RED, count=False)

    def _show(self, text, color, count=True):
        if self.color and color:
            text = color + text + RESET
        if self.timestamps:
            text = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3] + " " + text
        self.out.write(text + "\n")
        self.out.flush()
        if count:
            self.shown += 1


def open_port(url, baud, no_reset):
    """The port, opened. With no_reset, DTR and RTS are set released before the
    open, and pyserial applies the stored states as part of open(): the board's
    auto-reset circuit (RTS -> EN, DTR -> IO0) is never driven. Set after open(),
    they would first be asserted (pyserial's default) and then released: a pulse."""
    import serial

    port = serial.serial_for_url(url, baudrate=baud, timeout=0.1, do_not_open=True)
    if no_reset:
        port.dtr = False
        port.rts = False
    port.open()
    return port


def read_some(port):
    """Up to 4 KiB, waiting at most the port's timeout for the first byte.
    One byte first, then only what is waiting: a pyserial read that meets the
    end of the device raises and drops what it had read in that same call."""
    import serial

    data = port.read(1)
    try:
        while data and len(data) < 4096 and port.in_waiting:
            data += port.read(min(port.in_waiting, 4096 - len(data)))
    except (serial.SerialException, OSError):
        pass  # show what came before the loss; the next read raises again
    return data


def _say(text):
    print("petrel monitor: " + text, file=sys.stderr, flush=True)


def run(args):
    import serial

    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    try:
        sys.stdout.reconfigure(errors="backslashreplace")  # a non-UTF-8 terminal must not crash us
    except (AttributeError, ValueError):
        pass
    kind, amount = args.exit_after or (None, None)
    deadline = time.monotonic() + amount if kind == "seconds" else None
    save = open(args.save, "ab") if args.save else None
    mon = Monitor(args.level, args.tag, args.timestamps, color, save,
                  amount if kind == "lines" else None)

    def expired():
        return mon.done or (deadline is not None and time.monotonic() >= deadline)

    port, gone_since, ever_opened, waiting_said = None, time.monotonic(), False, False
    try:
        while not expired():
            if port is None:
                try:
                    port = open_port(args.port, args.baud, args.no_reset)
                except ValueError as e:  # a malformed URL or setting: no use waiting
                    _say("%s: %s" % (args.port, e))
                    return 2
                except (serial.SerialException, OSError) as e:
                    if not waiting_said:
                        _say("cannot open %s (%s), waiting for it" % (args.port, e))
                        waiting_said = True
                    if (args.reconnect_limit is not None
                            and time.monotonic() - gone_since >= args.reconnect_limit):
                        _say("%s did not %s within %g s" % (
                            args.port, "come back" if ever_opened else "appear", args.reconnect_limit))
                        return 1
                    time.sleep(RETRY_S)
                    continue
                _say("%s %s at %d baud%s" % (
                    "port back, reading" if ever_opened else "reading", args.port, args.baud,
                    ", DTR/RTS released" if args.no_reset else ""))
                ever_opened, waiting_said = True, False
                last_data = time.monotonic()
            try:
                data = read_some(port)
            except (serial.SerialException, OSError) as e:
                mon.flush()
                _say("port gone (%s), waiting for it to come back" % e)
                _close(port)
                port, gone_since, waiting_said = None, time.monotonic(), True
                continue
            if data:
                mon.feed(data)
                last_data = time.monotonic()
            elif (mon.pending or mon.traceback) and time.monotonic() - last_data >= IDLE_FLUSH_S:
                mon.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if not mon.done:
            mon.flush()
        if port is not None:
            _close(port)
        if save:
            save.close()
    return 0


def _close(port):
    try:
        port.close()
    except Exception:  # closing a vanished device can fail in many ways; it is gone anyway
        pass


def main(argv=None):
    """`python -m petrel.monitor PORT ...`: the same command without the rest of petrel."""
    p = argparse.ArgumentParser(prog="petrel")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["monitor"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
