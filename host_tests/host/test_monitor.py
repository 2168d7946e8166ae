"""`petrel monitor`: recorded serial logs replayed over socket:// against golden
outputs, filters, colour, --save, --no-reset, and a port that goes away and comes back.

Regenerate the golden outputs after an intended change with
PETREL_REGEN_GOLDEN=1 pytest host_tests/host/test_monitor.py (and read the diff).
"""

import io
import os
import queue
import random
import re
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import unicodedata
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

from petrel import monitor, paths

GOLDEN = Path(__file__).parent / "monitor_golden"
ODD_CHUNKS = (1, 7, 3, 64, 2, 13, 5, 29)  # cut lines, \r\n pairs and UTF-8 sequences apart


@contextmanager
def replay(data, chunks=ODD_CHUNKS, keep_open=False):
    """A one-connection TCP server on 127.0.0.1 that sends `data` in chunks of the
    given sizes, then closes (the port is gone) or stays open until the test ends.
    Yields its socket:// URL."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve():
        conn, _ = srv.accept()
        srv.close()  # no second connection: a reconnect is refused
        # pyserial's socket:// open() discards whatever has already arrived (as its
        # serial ports flush their input on open): let it finish opening first.
        time.sleep(0.15)
        with conn:
            i = pos = 0
            try:
                while pos < len(data):
                    n = chunks[i % len(chunks)] if chunks else len(data)
                    conn.sendall(data[pos:pos + n])
                    pos, i = pos + n, i + 1
                    time.sleep(0.001)
            except OSError:  # the monitor had seen enough (--exit-after) and left
                return
            if keep_open:
                done.wait(10)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield "socket://127.0.0.1:%d" % srv.getsockname()[1]
    finally:
        done.set()
        t.join(5)
        srv.close()


def run_monitor(capsys, url, *args):
    rc = monitor.main([url, *args])
    out, err = capsys.readouterr()
    return rc, out, err


def check_golden(name, out):
    path = GOLDEN / name
    if os.environ.get("PETREL_REGEN_GOLDEN"):
        path.write_bytes(out.encode("utf-8"))
    assert out == path.read_bytes().decode("utf-8")


def strip_ansi(text):
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# ---------------------------------------------------------------------------
@pytest.mark.parametrize("recording, args, golden", [
    ("boots.log", [], "boots.out"),            # `petrel sim --boots 3`, with the UART's \r\n
    ("crash.log", [], "crash.out"),            # tracebacks, REPL, every kind of reset
    ("garbage.log", [], "garbage.out"),        # noise, bad UTF-8, control codes, cut lines
    ("crash.log", ["--level", "W"], "crash.level-W.out"),
    ("crash.log", ["--tag", "boot"], "crash.tag-boot.out"),
    ("boots.log", ["--tag", "boot", "--tag", "sleep", "--level", "i"], "boots.out"),
])
def test_replayed_log_matches_golden(capsys, recording, args, golden):
    with replay((GOLDEN / recording).read_bytes()) as url:
        rc, out, err = run_monitor(capsys, url, "--color", "never", "--reconnect-limit", "0", *args)
    check_golden(golden, out)
    assert rc == 1  # the replay server went away and, with a limit of 0, that is the end
    assert "port gone" in err and "did not come back within 0 s" in err


@pytest.mark.parametrize("chunks", [None, (1,)], ids=["whole", "bytewise"])
def test_output_does_not_depend_on_how_bytes_arrive(capsys, chunks):
    with replay((GOLDEN / "garbage.log").read_bytes(), chunks=chunks) as url:
        _, out, _ = run_monitor(capsys, url, "--color", "never", "--reconnect-limit", "0")
    check_golden("garbage.out", out)


def test_colour_always_marks_levels_and_tracebacks(capsys):
    with replay((GOLDEN / "crash.log").read_bytes()) as url:
        _, out, _ = run_monitor(capsys, url, "--color", "always", "--reconnect-limit", "0")
    lines = out.splitlines()
    assert "\x1b[31mE 000406 sht4x: read failed addr=0x44 err=ENODEV\x1b[0m" in lines
    assert "\x1b[33mW 000318 clock: ntp time 12 refused: below floor 836870400\x1b[0m" in lines
    assert "\x1b[32mI 000000 boot: cause=poweron wake=none boot=1 rtc=empty\x1b[0m" in lines
    assert "\x1b[2mD 000152 bme280: t=2153 p=25866752 rh=49357\x1b[0m" in lines
    assert "\x1b[31mOSError: [Errno 19] ENODEV\x1b[0m" in lines
    assert "\x1b[36m[boot] reset: deep-sleep wake (rst 0x5)\x1b[0m" not in lines  # none in this log
    assert "\x1b[36m[boot] reset: timer-group 0 watchdog (rst 0x7)\x1b[0m" in lines
    assert strip_ansi(out) == (GOLDEN / "crash.out").read_text()


def test_colour_auto_is_off_when_not_a_terminal(capsys):
    with replay((GOLDEN / "crash.log").read_bytes()) as url:
        _, out, _ = run_monitor(capsys, url, "--reconnect-limit", "0")
    assert "\x1b[" not in out


def test_timestamps_prefix_each_line(capsys):
    with replay((GOLDEN / "boots.log").read_bytes()) as url:
        _, out, _ = run_monitor(capsys, url, "--color", "never", "--timestamps", "--reconnect-limit", "0")
    stamp = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d ", re.M)
    assert len(stamp.findall(out)) == len(out.splitlines())
    assert stamp.sub("", out) == (GOLDEN / "boots.out").read_text()


def test_save_appends_everything_raw_and_unfiltered(capsys, tmp_path):
    data = (GOLDEN / "garbage.log").read_bytes()
    save = tmp_path / "node.log"
    save.write_bytes(b"earlier session\n")
    with replay(data) as url:
        _, out, _ = run_monitor(capsys, url, "--level", "E", "--save", str(save), "--reconnect-limit", "0")
    assert save.read_bytes() == b"earlier session\n" + data
    assert "wifi" not in out  # the screen was filtered, the file is not


def test_exit_after_lines_ends_with_0_while_the_port_is_still_open(capsys):
    with replay((GOLDEN / "crash.log").read_bytes(), keep_open=True) as url:
        t0 = time.monotonic()
        rc, out, _ = run_monitor(capsys, url, "--color", "never", "--tag", "boot", "--exit-after", "11l")
    assert rc == 0 and time.monotonic() - t0 < 3
    lines = out.splitlines()
    assert lines[-1] == "I 000000 boot: cause=poweron wake=none boot=1 rtc=empty"
    assert len([x for x in lines if not x.startswith("[")]) == 11  # annotations are not counted


def test_exit_after_seconds_shows_a_partial_line_after_a_silence(capsys):
    with replay(b"I 000001 boot: cause=poweron\r\n>>> ", keep_open=True) as url:
        t0 = time.monotonic()
        rc, out, _ = run_monitor(capsys, url, "--color", "never", "--exit-after", "1s")
        elapsed = time.monotonic() - t0
    assert rc == 0 and 1 <= elapsed < 2
    assert out == "I 000001 boot: cause=poweron\n>>> \n"


def test_port_that_never_comes_back_exits_1(capsys):
    with replay(b"I 000001 boot: cause=poweron\n") as url:
        t0 = time.monotonic()
        rc, out, err = run_monitor(capsys, url, "--reconnect-limit", "1")
        elapsed = time.monotonic() - t0
    assert rc == 1 and 1 <= elapsed < 3
    assert out == "I 000001 boot: cause=poweron\n"
    assert "port gone" in err and "waiting for it to come back" in err
    assert "did not come back within 1 s" in err


@pytest.mark.parametrize("code, words", [
    (0x1, "power-on"), (0x3, "software reset"), (0x5, "deep-sleep wake"),
    (0x7, "timer-group 0 watchdog"), (0x8, "timer-group 1 watchdog"),
    (0xC, "software CPU reset: machine.reset()"), (0xF, "brownout: supply voltage dropped"),
    (0x10, "RTC watchdog"), (0x9, "unknown reason")])
def test_rom_reset_reasons(code, words):
    line = "rst:0x%x (WHATEVER),boot:0x13 (SPI_FAST_FLASH_BOOT)" % code
    assert monitor.reset_annotation(line) == "[boot] reset: %s (rst 0x%x)" % (words, code)


# ---------------------------------------------------------------------------
class Recorder:
    """A loop:// port that notes every attribute set and the DTR/RTS state at open."""

    def __init__(self, real):
        self.__dict__.update(real=real, events=[])

    def __setattr__(self, name, value):
        self.events.append((name, value))
        setattr(self.real, name, value)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def open(self):
        self.events.append(("open", self.real.dtr, self.real.rts))
        self.real.open()
        self.events.append(("after open: dsr, cts", self.real.dsr, self.real.cts))  # loop:// echoes DTR/RTS
        self.real.write(b"I 000001 boot: cause=poweron\n")


@pytest.mark.parametrize("no_reset", [True, False])
def test_no_reset_releases_dtr_and_rts_before_the_port_opens(capsys, mocker, no_reset):
    ports, real_for_url = [], serial.serial_for_url

    def fake_for_url(url, *a, **kw):
        assert kw.get("do_not_open") is True
        ports.append(Recorder(real_for_url(url, *a, **kw)))
        return ports[-1]

    mocker.patch("serial.serial_for_url", side_effect=fake_for_url)
    args = ["loop://", "--exit-after", "1l"] + (["--no-reset"] if no_reset else [])
    rc, out, _ = run_monitor(capsys, *args)
    assert rc == 0 and out == "I 000001 boot: cause=poweron\n"
    if no_reset:
        assert ports[0].events == [("dtr", False), ("rts", False), ("open", False, False),
                                   ("after open: dsr, cts", False, False)]
    else:  # a normal open: pyserial's defaults, asserted as the port opens
        assert ports[0].events == [("open", True, True), ("after open: dsr, cts", True, True)]


# ---------------------------------------------------------------------------
def _pump(stream, q):
    for line in iter(stream.readline, ""):
        q.put(line)


class Collected:
    def __init__(self, stream):
        self.q, self.text = queue.Queue(), ""
        threading.Thread(target=_pump, args=(stream, self.q), daemon=True).start()

    def wait_for(self, needle, timeout=5):
        end = time.monotonic() + timeout
        while needle not in self.text:
            try:
                self.text += self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no %r within %s s; got %r" % (needle, timeout, self.text))
        return self.text


def _plug_in(link):
    """A fresh pty, and `link` (a udev-like name) made to point at its slave."""
    master, slave = os.openpty()
    os.symlink(os.ttyname(slave), link)
    return master, slave


def test_unplugged_port_is_waited_for_and_read_again_when_back(tmp_path):
    # A pty's slave cannot come back once its master is closed, so the monitor is
    # given a stable name, as /dev/serial/by-id/... is: udev removes that link when
    # the board is unplugged and makes it again, for a new device node, on replug.
    # (Removing it also keeps the monitor off a reused /dev/pts/N of someone else.)
    link = tmp_path / "ttyUSB0"
    master, slave = _plug_in(link)
    proc = subprocess.Popen(
        [sys.executable, "-m", "petrel.monitor", str(link), "--color", "never", "--exit-after", "2l"],
        cwd=paths.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = Collected(proc.stdout), Collected(proc.stderr)
    try:
        err.wait_for("reading %s" % link)
        os.write(master, b"I 000001 boot: cause=poweron boot=1\r\n")
        out.wait_for("boot=1\n")

        os.close(master)  # unplugged: the device and its name go away
        os.close(slave)
        os.unlink(link)
        err.wait_for("port gone")
        err.wait_for("waiting for it to come back")
        time.sleep(1.2)  # a few failed reopen attempts
        assert proc.poll() is None, "the monitor gave up instead of waiting"
        assert "port back" not in err.text

        master, slave = _plug_in(link)  # plugged in again: a new /dev/pts/M
        err.wait_for("port back, reading %s" % link)
        os.write(master, b"I 000000 boot: cause=poweron boot=2\r\n")
        assert proc.wait(5) == 0
        assert out.wait_for("boot=2\n") == ("I 000001 boot: cause=poweron boot=1\n"
                                            "I 000000 boot: cause=poweron boot=2\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (master, slave):
            try:
                os.close(fd)
            except OSError:
                pass


def test_usage_errors_exit_2_and_help_shows_examples():
    def petrel(*args):
        return subprocess.run([sys.executable, "-m", "petrel.cli", "monitor", *args],
                              capture_output=True, text=True, timeout=30, cwd=paths.ROOT)

    r = petrel("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "--no-reset" in r.stdout
    assert petrel("loop://", "--level", "X").returncode == 2
    assert petrel("loop://", "--bogus").returncode == 2
    assert petrel("loop://", "--exit-after", "ten").returncode == 2
    r = petrel("nosuch://x")
    assert r.returncode == 2 and "not known" in r.stderr


# --------------------------------------------------------------------------- hostile streams
# (issue 14) What the port sends is input from outside: a line without end must
# not cost unbounded memory or quadratic time, and nothing in it may reach the
# terminal as a control: C0, DEL, C1 (U+009B is CSI on terminals that take 8-bit
# controls) and bidi overrides/isolates (U+202E makes a line display reversed).
READ_SIZE = 4096  # what read_some hands to feed() at most


def feed_stream(nbytes, mon=None):
    """nbytes of 'A' and no newline, fed as the port delivers them; the Monitor."""
    mon = mon or monitor.Monitor(out=io.StringIO())
    chunk = b"A" * READ_SIZE
    for _ in range(nbytes // READ_SIZE):
        mon.feed(chunk)
    mon.flush()
    return mon


def best_time(nbytes, runs=5):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        feed_stream(nbytes)
        times.append(time.perf_counter() - t0)
    return min(times)  # the least disturbed run


def test_a_stream_without_newline_is_cut_in_bounded_memory_and_linear_time():
    mib = 1 << 20
    for nbytes in (mib, 4 * mib):
        tracemalloc.start()
        try:
            mon = feed_stream(nbytes)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024, "%d bytes held for a %d-byte line" % (peak, nbytes)
        assert mon.out.getvalue() == "A" * monitor.MAX_LINE + " [... %d more bytes not shown]\n" % (
            nbytes - monitor.MAX_LINE)
    # Linear: 4 times the bytes, about 4 times the time (quadratic was 16 times).
    ratio = best_time(4 * mib) / best_time(mib)
    assert ratio < 8, "4 MiB took %.1f times as long as 1 MiB" % ratio


def test_a_cut_line_keeps_whole_characters_and_the_next_lines_are_whole():
    out = io.StringIO()
    mon = monitor.Monitor(out=out)
    data = (b"x" * 5000 + b"\r\n" + b"a" + "\u00e9".encode() * 600 + b"\r\n"
            + b"I 000001 boot: cause=poweron\r\n")
    for i in range(0, len(data), 7):  # \r\n and UTF-8 sequences cut apart
        mon.feed(data[i:i + 7])
    mon.flush()
    assert out.getvalue().splitlines() == [
        "x" * 1024 + " [... 3976 more bytes not shown]",  # the \r\n is not counted
        "a" + "\u00e9" * 511 + " [... 178 more bytes not shown]",  # not a half é as \xc3
        "I 000001 boot: cause=poweron"]


def test_line_splitting_does_not_depend_on_how_bytes_arrive():
    rng = random.Random(14)
    for _ in range(300):
        data = bytes(rng.choice(b"ab\r\n\xc3\xa9\xe2\x80\xae") for _ in range(rng.randrange(3000)))
        whole = monitor.LineSplitter(64)
        expected = whole.feed(data) + [whole.flush()]
        cut, got, pos = monitor.LineSplitter(64), [], 0
        while pos < len(data):
            n = rng.randrange(1, 200)
            got += cut.feed(data[pos:pos + n])
            pos += n
        assert got + [cut.flush()] == expected
        for line, dropped in got:
            assert len(line) <= 64 and dropped >= 0


STEERING = {  # characters that act on a terminal, each with how it must be shown
    "ESC": ("\x1b[2J", "\\x1b[2J"), "BEL": ("\x07", "\\x07"), "CR": ("\r", "\\x0d"),
    "DEL": ("\x7f", "\\x7f"), "NUL": ("\x00", "\\x00"),
    "C1 CSI": ("\u009b31m", "\\u009b31m"), "C1 NEL": ("\u0085", "\\u0085"),
    "C1 OSC": ("\u009d0;title\u009c", "\\u009d0;title\\u009c"),
    "LRE": ("\u202a", "\\u202a"), "RLE": ("\u202b", "\\u202b"), "PDF": ("\u202c", "\\u202c"),
    "LRO": ("\u202d", "\\u202d"), "RLO": ("\u202e", "\\u202e"),
    "LRI": ("\u2066", "\\u2066"), "RLI": ("\u2067", "\\u2067"), "FSI": ("\u2068", "\\u2068"),
    "PDI": ("\u2069", "\\u2069"), "zero width space": ("\u200b", "\\u200b"),
    "line separator": ("\u2028", "\\u2028"), "BOM": ("\ufeff", "\\ufeff"),
    "language tag": ("\U000e0001", "\\U000e0001"),
    "lone byte 0x9b": (b"\x9b", "\\x9b"),  # not UTF-8: a byte, told apart from U+009B
}


@pytest.mark.parametrize("name", sorted(STEERING))
def test_characters_that_steer_a_terminal_are_shown_escaped(name):
    char, shown = STEERING[name]
    raw = char if isinstance(char, bytes) else char.encode("utf-8")
    out = io.StringIO()
    mon = monitor.Monitor(out=out, color=True)
    mon.feed(b"W 000140 mqtt: <" + raw + b">\r\n" + b"<" + raw + b">\r\n")
    assert out.getvalue() == ("\x1b[33mW 000140 mqtt: <%s>\x1b[0m\n<%s>\n" % (shown, shown))


def test_printable_text_is_shown_as_it_is():
    text = "I 000120 wifi: ssid=Caf\u00e9-G\u00e4ste\ttemp=22\u00b0C \u65e5\u672c \U0001f600 a\\b"
    assert monitor.decode(text.encode("utf-8")) == text


def safe(text):
    """No character that can steer a terminal, except \n and our own colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    bad = [c for c in text if c not in "\t\n" and (
        unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))]
    return not bad


def test_random_bytes_never_reach_the_terminal_raw():
    rng = random.Random(1414)
    alphabet = [bytes([b]) for b in range(256)] + [
        c.encode("utf-8") for c in "\u009b\u0085\u202e\u2066\u2069\u200b\u2028\ufeff\u00e9"]
    for _ in range(500):
        out = io.StringIO()
        mon = monitor.Monitor(out=out, color=rng.random() < 0.5)
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(2000)))
        for i in range(0, len(data), 61):
            mon.feed(data[i:i + 61])
        mon.flush()
        assert safe(out.getvalue()), repr(data)
        longest = max(map(len, out.getvalue().splitlines() or [""]))
        assert longest <= 4 * monitor.MAX_LINE + 64  # an escape is at most 4 characters a byte


def test_save_keeps_the_raw_bytes_of_cut_and_escaped_lines():
    saved = io.BytesIO()
    mon = monitor.Monitor(out=io.StringIO(), save=saved)
    data = b"z" * 9000 + "\u009b\u202e".encode() + b"\x1b[2J\r\nI 000001 boot: x\r\n"
    for i in range(0, len(data), 4096):
        mon.feed(data[i:i + 4096])
    assert saved.getvalue() == data  # what the technician needs: the bytes as sent
    assert "\x1b[2J" not in mon.out.getvalue() and "\u202e" not in mon.out.getvalue()


def test_help_says_what_save_keeps():
    r = subprocess.run([sys.executable, "-m", "petrel.cli", "monitor", "--help"],
                       capture_output=True, text=True, timeout=30, cwd=paths.ROOT)
    assert r.returncode == 0
    assert "raw bytes" in r.stdout and "less" in r.stdout and "[... N more bytes not shown]" in r.stdout


def test_a_tag_filter_leaves_out_the_roms_boot_lines_unless_it_is_boot(capsys):
    with replay((GOLDEN / "boots.log").read_bytes()) as url:
        _, out, _ = run_monitor(capsys, url, "--color", "never", "--reconnect-limit", "0", "--tag", "sleep")
    assert out.splitlines() == ["I 000000 sleep: ms=300000"] * 3  # no ets/rst/[boot] lines, no blanks
    with replay((GOLDEN / "boots.log").read_bytes()) as url:
        _, out, _ = run_monitor(capsys, url, "--color", "never", "--reconnect-limit", "0", "--tag", "boot")
    assert out.count("rst:0x") == 3 and out.count("[boot] reset:") == 3


def test_a_missing_port_lists_the_ports_there_are(capsys, tmp_path, monkeypatch):
    from petrel import serialport

    monkeypatch.setenv("PETREL_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(serialport, "_usb_ports", lambda: [("/dev/ttyUSB3", "CP2102 USB to UART")])
    rc, out, err = run_monitor(capsys, "/dev/ttyUSB9", "--reconnect-limit", "0")
    assert rc == 1
    assert "cannot open /dev/ttyUSB9" in err and "ports present now: /dev/ttyUSB3" in err
