"""The board's serial port as the petrel tools share it: which port (when
--port is left out), one tool at a time (a lock naming its holder), a hardware
reset, and the break-in window after it (firmware/app/breakin.py).

A virtual board (`petrel vboard`) is a pty; its control socket, found from the
pty's path, takes the hardware reset that a real board gets from RTS -> EN.
"""

import errno
import os
import re
import socket
import tempfile
import time
from pathlib import Path

BREAK_IN_S = 10  # reset to REPL: ~0.5 s of boot + the 2 s window, with room for a slow host
CTRL_C_EVERY_S = 0.02
AT_REPL_S = 0.3  # a REPL answers Ctrl-C within milliseconds; a sleeping node never
WINDOW_WAIT_S = 3  # reset to the window's line: ~0.5 s on an ESP32; then Ctrl-C regardless


class PortError(Exception):
    """A port problem the user can act on; str() is one line that says what to do.
    code: the exit code (2: nothing was tried, 1: the board was asked)."""

    def __init__(self, msg, code=1):
        super().__init__(msg)
        self.code = code


def _runtime_dir():
    return Path(os.environ.get("PETREL_RUN_DIR") or tempfile.gettempdir())


def _key(port):
    real = os.path.realpath(port) if port.startswith("/") else port
    return re.sub(r"[^A-Za-z0-9_.-]", "-", real.strip("/"))


def control_path(port):
    """Where a virtual board on this pty listens for its hardware reset."""
    return _runtime_dir() / ("petrel-vboard-%s.sock" % _key(port))


def is_virtual(port):
    return control_path(port).exists()


# ------------------------------------------------------------ which port
def _usb_ports():
    """[(device, description)]: the USB serial ports (a board's USB-UART or USB-CDC)."""
    found = []
    try:
        from serial.tools import list_ports

        for p in list_ports.comports():
            if p.vid is not None or "USB" in p.device or "ACM" in p.device:
                found.append((p.device, p.description if p.description != "n/a" else ""))
    except Exception:  # noqa: BLE001  listing is a courtesy; the user can still give --port
        pass
    return found


def candidates():
    """[(device, description)]: USB serial ports and running virtual boards."""
    found = _usb_ports()
    for sock in sorted(_runtime_dir().glob("petrel-vboard-*.sock")):
        dev = "/" + sock.name[len("petrel-vboard-"):-len(".sock")].replace("-", "/")
        if os.path.exists(dev) and _answers(sock):
            found.append((dev, "petrel vboard"))
    return found


def _answers(sock_path):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(sock_path))
            s.sendall(b"ping\n")
            return s.recv(16).startswith(b"ok")
    except OSError:
        return False


def choose(port, tool):
    """The port to use: the one given, else the only candidate; PortError (2) otherwise."""
    if port:
        if port.startswith("/") and not os.path.exists(port):
            raise PortError("port %s does not exist; %s" % (port, _listing()), 2)
        return port
    found = candidates()
    if len(found) == 1:
        print("petrel %s: using %s (%s), the only board found" % (tool, found[0][0], found[0][1]),
              flush=True)
        return found[0][0]
    if not found:
        raise PortError("no board found: plug it in with a data cable (or start `petrel vboard`) "
                        "and give --port", 2)
    raise PortError("%d boards found, give --port: %s" % (
        len(found), ", ".join("%s (%s)" % f for f in found)), 2)


def _listing():
    found = candidates()
    if not found:
        return "no serial port is present now: is the board plugged in with a data cable?"
    return "ports present now: " + ", ".join(d for d, _ in found)


# ------------------------------------------------------------ one tool at a time
class Lock:
    """An exclusive lock on the port among petrel tools (flock on a file named
    after the port, holding "petrel TOOL, pid N"); released when the process
    ends, however it ends."""

    def __init__(self, port, tool):
        self.path = _runtime_dir() / ("petrel-port-%s.lock" % _key(port))
        self.port, self.tool, self.fd = port, tool, None

    def __enter__(self):
        import fcntl

        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise PortError("port %s busy (held by %s): close that first" % (self.port, holder))
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("petrel %s, pid %d" % (self.tool, os.getpid())).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


# ------------------------------------------------------------ reset and break-in
def hard_reset(port, ser=None):
    """Reset the board as its EN button does. A virtual board: through its
    control socket. A real one: RTS pulls EN low for 100 ms with DTR released
    (IO0 high: the firmware boots, not the ROM loader), as esptool's hard reset."""
    ctl = control_path(port)
    if ctl.exists():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(ctl))
                s.sendall(b"reset\n")
                if not s.recv(16).startswith(b"ok"):
                    raise OSError("no answer")
        except OSError as e:
            raise PortError("the virtual board on %s did not take the reset (%s): is "
                            "`petrel vboard` still running?" % (port, e))
        return
    ser.dtr = False
    ser.rts = True
    time.sleep(0.1)
    ser.rts = False


def open_serial(port, baud=115200):
    """The port opened without driving DTR/RTS (no reset on open)."""
    import serial

    s = serial.serial_for_url(port, baudrate=baud, timeout=0.02, do_not_open=True)
    s.dtr = False
    s.rts = False
    try:
        s.open()
    except (serial.SerialException, OSError) as e:
        raise PortError("cannot open %s (%s); %s" % (port, e, _listing()))
    return s


def break_in(port, timeout=BREAK_IN_S, baud=115200, say=None):
    """Reset the board into its break-in window and take it: Ctrl-C every
    20 ms, once the window's line is seen, until the REPL answers. -> what the board printed. PortError when no
    REPL came within timeout (the port is left closed either way)."""
    ser = open_serial(port, baud)
    seen = b""
    try:
        ser.reset_input_buffer()
        # At its REPL already (a board just flashed, or broken in before)? Then no
        # reset: a reset loses what the node holds only in RTC memory.
        ser.write(b"\r\x03")
        end = time.monotonic() + AT_REPL_S
        while time.monotonic() < end and b">>> " not in seen and b"raw REPL" not in seen:
            seen += ser.read(4096)
        if b">>> " in seen or b"raw REPL" in seen:
            if say:
                say("at the REPL already: no reset")
            return seen.decode("utf-8", "replace")
        hard_reset(port, ser)
        seen = b""
        start = time.monotonic()
        end = start + timeout
        # Ctrl-C only once the window says it listens: one earlier lands in MicroPython's
        # own _boot.py (it mounts the filesystem) as a KeyboardInterrupt. A firmware
        # without the window gets it after WINDOW_WAIT_S, in its wake.
        blind = start + WINDOW_WAIT_S
        while time.monotonic() < end:
            seen += ser.read(4096)
            if b"main: break-in" in seen or seen.rstrip().endswith(b">>>"):
                took = time.monotonic() - start
                break
            if b"for the REPL" in seen or time.monotonic() >= blind:
                ser.write(b"\x03")
            time.sleep(CTRL_C_EVERY_S)
        else:
            tail = seen.decode("utf-8", "replace").strip().splitlines()[-1:] or ["nothing"]
            raise PortError("no REPL on %s within %d s of a reset (last line: %s): check "
                            "the cable and that MicroPython is flashed (petrel flash)"
                            % (port, timeout, tail[0][:120]))
        # settle: the REPL's prompt after the Ctrl-C bytes still in flight
        quiet = time.monotonic() + 0.2
        while time.monotonic() < quiet:
            chunk = ser.read(4096)
            seen += chunk
            if chunk:
                quiet = time.monotonic() + 0.2
        if say:
            say("at the REPL %.2f s after the reset" % took)
    finally:
        ser.close()
    return seen.decode("utf-8", "replace")
