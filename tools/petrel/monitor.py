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
import unicodedata

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
# Bytes of one line kept and shown; the rest of a longer line is counted, not
# kept: memory stays bounded and time linear whatever the port sends (a stream
# with no newline at all, a wrong baud rate). Petrel's own lines are < 200 bytes.
MAX_LINE = 1024

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
# What the ROM bootloader prints at every reset (and the blank lines between):
# the "boot" tag's, so --tag wifi does not show three of them per wake.
_ROM_LINE = re.compile(r"^(ets |rst:0x|configsip:|clk_drv:|mode:|load:0x|entry 0x|ESP-ROM:|"
                       r"SPIWP:|Build:|\s*$)")
_TB_FILE = re.compile(r'File "([^"]+)", line (\d+)')
# Characters that may act on the terminal instead of being shown: every one but
# printable ASCII and tab is looked at (see _escape_char).
_SUSPECT = re.compile(r"[^\t\x20-\x7e]")
# Unicode categories shown escaped: controls (C0, DEL, C1 such as U+009B CSI),
# format characters (bidi overrides and isolates U+202A-U+202E, U+2066-U+2069,
# zero-width characters), surrogates, private use, unassigned (a newer terminal
# may know them as controls), and the line/paragraph separators.
_ESCAPED_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")

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
only log lines with those tags; the ROM's lines at a reset (banner, reset line)
count as tag boot. Other lines that are not Petrel log lines (tracebacks, the
REPL) are always shown. Nothing from the port reaches the
terminal raw: bytes that are not UTF-8 text and control characters (ESC, C0 but
tab, DEL) are shown as \\xNN, and other characters that can steer a terminal
(C1 controls such as U+009B, bidi overrides such as U+202E, zero-width and other
format characters) as \\uNNNN. A line longer than 1024 bytes is shown cut: its
first 1024 bytes and "[... N more bytes not shown]". A line without its end
(a prompt) is shown after 0.5 s of silence.

--save FILE appends the raw bytes as received (unfiltered, unescaped, lines not
cut), for a technician's tools or a bug report: it may hold control sequences,
so read it with `less` (which shows them escaped) rather than `cat`.

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
    p.add_argument("port", nargs="?",
                   help="serial port (/dev/ttyUSB0, COM3) or pyserial URL "
                        "(socket://host:port, rfc2217://host:port, loop://); "
                        "default: the only board found")
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
                   help="also append everything received to FILE: the raw bytes, unfiltered, "
                        "unescaped and not cut (read it with less, not cat)")
    p.add_argument("--no-reset", action="store_true",
                   help="keep DTR and RTS released when opening, so the board is not reset")
    p.add_argument("--exit-after", type=_exit_after, metavar="N[s|l]",
                   help="stop after N seconds (30, 30s) or N shown lines (20l)")
    p.add_argument("--reconnect-limit", type=float, metavar="SECONDS",
                   help="give up (exit 1) when the port is gone or absent this long "
                        "(default: wait forever)")
    p.set_defaults(func=_cmd)
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


def _escape_char(m):
    ch = m.group()
    code = ord(ch)
    if code < 0x80:  # C0 controls (ESC among them) and DEL
        return "\\x%02x" % code
    if unicodedata.category(ch) in _ESCAPED_CATEGORIES:
        # \u, not \x: U+009B sent as UTF-8 (c2 9b) is told apart from a lone byte 0x9b
        return "\\u%04x" % code if code <= 0xFFFF else "\\U%08x" % code
    return ch


def decode(raw):
    """Bytes of one line (terminator removed) -> text safe to write to a terminal:
    only tab, printable ASCII and printable non-ASCII characters are left as they
    are, everything else is escaped. Never raises; time linear in len(raw)."""
    text = raw.decode("utf-8", "backslashreplace")
    return _SUSPECT.sub(_escape_char, text)


def _utf8_tail(head):
    """How many bytes at the end of head are an unfinished UTF-8 character
    (cut by the line limit), 0 if none: they are dropped, not shown as \\xNN."""
    for back in range(1, min(4, len(head)) + 1):
        b = head[-back]
        if b & 0xC0 != 0x80:  # not a continuation byte: a lead byte or ASCII
            need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
            return back if need > back else 0
    return 0


class LineSplitter:
    """Splits a byte stream into lines of at most max_line bytes, in linear time
    and bounded memory, however the bytes arrive. A pure object (no port, no
    terminal): feed(bytes) -> [(line, dropped)]; flush() -> (line, dropped) or None.
    line: the line's first bytes without its terminator (\\n or \\r\\n), cut at a
    UTF-8 character boundary; dropped: how many bytes of it were not kept."""

    def __init__(self, max_line=MAX_LINE):
        self.max_line = max_line
        self.part = bytearray()  # the kept start of the unfinished line
        self.dropped = 0  # bytes of the unfinished line beyond max_line
        self.trailing_cr = 0  # \r bytes at its end so far (a \r\n may be cut between reads)

    @property
    def pending(self):
        """Whether an unfinished line is held."""
        return bool(self.part) or self.dropped > 0

    def _take(self, data, start, end):
        if end <= start:
            return
        room = self.max_line - len(self.part)
        if room > 0:
            self.part += data[start:min(end, start + room)]
        self.dropped += max(0, end - start - max(room, 0))
        run = end
        while run > start and data[run - 1] == 0x0D:  # each byte looked at once: linear
            run -= 1
        self.trailing_cr = self.trailing_cr + end - start if run == start else end - run

    def _finish(self):
        line, dropped = bytes(self.part), self.dropped
        # \r before the \n belong to the terminator (\r\n, or \r\r\n from a
        # print that already ended in \r\n): not shown, not counted as dropped
        dropped -= min(dropped, self.trailing_cr)
        if not dropped:
            line = line.rstrip(b"\r")
        if dropped:
            tail = _utf8_tail(line)
            if tail:
                line, dropped = line[:-tail], dropped + tail
        self.part, self.dropped, self.trailing_cr = bytearray(), 0, 0
        return line, dropped

    def feed(self, data):
        lines = []
        start, n = 0, len(data)
        while start < n:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._take(data, start, n)
                break
            self._take(data, start, nl)
            lines.append(self._finish())
            start = nl + 1
        return lines

    def flush(self):
        return self._finish() if self.pending else None


def reset_annotation(text):
    """'rst:0x5 (DEEPSLEEP_RESET),boot:0x13 ...' -> '[boot] reset: deep-sleep wake (rst 0x5)'."""
    m = _RST.search(text)
    if not m:
        return None
    code = int(m.group(1), 16)
    return "[boot] reset: %s (rst 0x%x)" % (RESETS.get(code, "unknown reason"), code)


class Monitor:
    """Turns the port's bytes into shown lines. Feed it bytes; it writes to out
    (any object with write() and flush(), e.g. io.StringIO: no port needed)."""

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
        self.lines = LineSplitter()
        self.traceback = None  # lines of a traceback being collected

    @property
    def done(self):
        return self.max_lines is not None and self.shown >= self.max_lines

    @property
    def pending(self):
        """Whether a partial line is held back."""
        return self.lines.pending

    def feed(self, data):
        if self.save:  # as received, before any splitting, cutting or escaping
            self.save.write(data)
            self.save.flush()
        for raw, dropped in self.lines.feed(data):
            if self.done:
                break
            self._line(raw, dropped)

    def flush(self):
        """Show what is held back: a partial line, an unfinished traceback."""
        held = self.lines.flush()
        if held and not self.done:
            self._line(*held)
        if self.traceback:
            self._end_traceback()

    def _line(self, raw, dropped=0):
        text = decode(raw)
        if dropped:
            text += " [... %d more bytes not shown]" % dropped
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
        if self.tags and "boot" not in self.tags and _ROM_LINE.match(text):
            return  # the ROM's boot lines belong to the "boot" tag
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


def _cmd(args):
    """The command: the port chosen and held (a second petrel tool on it is told
    who holds it instead of fighting over the bytes), then run()."""
    from . import serialport

    try:
        if not args.port:
            args.port = serialport.choose(None, "monitor")
        if "://" in args.port:
            return run(args)
        with serialport.Lock(args.port, "monitor"):
            return run(args)
    except serialport.PortError as e:
        _say(str(e))
        return e.code


def run(args, on_open=None):
    """on_open(port): called once, right after the port first opens (petrel run's reset)."""
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
                        from . import serialport

                        _say("cannot open %s (%s), waiting for it; %s" % (
                            args.port, e, serialport._listing()))
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
                if on_open is not None and not ever_opened:
                    on_open(port)
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
