"""`petrel vboard`: the virtual board. The MicroPython VM behind a pseudo-terminal,
with the simulated ESP32 on its path and a folder as its flash, that unmodified
mpremote and the petrel tools use like a board on /dev/ttyUSB0.

Two ptys: the tools open one (its path is printed), the VM sits on the other,
and a relay copies bytes between them. A supervisor turns what ends a VM
process into what an ESP32 does next, printing what the ESP32 prints:
- soft reset from the raw REPL (mpremote's Ctrl-D): "MPY: soft reboot", a new
  VM back in the raw REPL, main.py not run (as MicroPython does);
- machine.reset(), a watchdog, deep sleep: the ROM's reset line, then a new VM
  that runs boot.py and main.py with the board's RTC memory, reset cause and
  wake reason carried over (deep sleep lasts its time x --time-scale);
- a hardware reset (the EN button; a tool pulsing EN through RTS) comes
  through the control socket (serialport.control_path(pty)): whatever the
  board was doing (asleep, in a wake, at the REPL) it powers on afresh, as the
  ESP32's EN reset does (POWERON_RESET, RTC memory lost, flash kept).
While awake, the board's sleeps (time.sleep*) also take real time x
--awake-scale (default 1: real time), so the firmware's break-in window after
a reset is as long for a tool as on a chip.
"""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

from . import harness, paths, serialport

ROM = b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x%x (%s),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
SOFT_REBOOT = b"MPY: soft reboot\r\n"


class VirtualBoard:
    def __init__(self, flash, time_scale=0.001, log=None, awake_scale=1.0):
        harness.install()
        import simstate

        self.simstate = simstate
        self.flash = Path(flash).resolve()
        self.flash.mkdir(parents=True, exist_ok=True)
        self.time_scale = time_scale
        self.awake_scale = awake_scale
        self.log = log or (lambda msg: None)
        self.board = simstate.Board()
        self.board.power_on()
        self.tmp = tempfile.TemporaryDirectory(prefix="petrel-vboard-")
        self.tool_master, self.tool_slave = pty.openpty()
        tty.setraw(self.tool_slave)
        self.path = os.ttyname(self.tool_slave)
        self.raw_mode = False
        self.boots = 0
        self.proc = None
        self.vm_master = None
        self.running = False
        self.thread = None
        self.reset_requested = threading.Event()  # the EN line, through the control socket
        self.reset_done = threading.Event()
        self.control = serialport.control_path(self.path)
        self.control_sock = None

    # ------------------------------------------------------------ lifecycle
    def start(self):
        self.running = True
        self._listen()
        self.thread = threading.Thread(target=self._supervise, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.running = False
        if self.control_sock is not None:
            self.control_sock.close()
            try:
                self.control.unlink()
            except OSError:
                pass
        if self.thread:
            self.thread.join(5)  # the relay notices within 20 ms and ends its VM
        self._kill()  # and in case the thread was between two VMs
        for fd in (self.tool_master, self.tool_slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ control socket
    def _listen(self):
        import socket

        try:
            self.control.unlink()  # a vboard that died left it; this pty is ours now
        except OSError:
            pass
        self.control_sock = socket.socket(socket.AF_UNIX)
        self.control_sock.bind(str(self.control))
        self.control_sock.listen(4)
        threading.Thread(target=self._control_loop, daemon=True).start()

    def _control_loop(self):
        while self.running:
            try:
                conn, _ = self.control_sock.accept()
            except OSError:
                return  # closed by stop()
            with conn:
                conn.settimeout(5)
                try:
                    cmd = conn.recv(64).strip()
                    if cmd == b"reset":
                        self.hard_reset()
                    conn.sendall(b"ok\n" if cmd in (b"reset", b"ping") else b"unknown\n")
                except OSError:
                    pass

    def hard_reset(self, timeout=5):
        """The EN button: the board powers on afresh, whatever it was doing."""
        self.reset_done.clear()
        self.reset_requested.set()
        return self.reset_done.wait(timeout)

    # ------------------------------------------------------------ supervisor
    def _supervise(self):
        run_main = True
        while self.running:
            if self.reset_requested.is_set():
                self._power_on_reset()
                run_main = True
            if run_main:
                code, name = self.simstate.ROM_RESET[self.board.reset_cause]
                self._to_tools(ROM % (code, name.encode()))
            how, halt, state = self._run_vm(run_main)
            if not self.running:
                break
            if how == "reset":
                continue  # the loop's head powers it on
            if how == "soft":
                if state is not None:
                    self.board.restore(state)  # a soft reset keeps the RTC domain
                self._to_tools(SOFT_REBOOT)
                run_main = False
                continue
            if how == "halt":
                self.board.restore(halt["state"])
                h = self.simstate.Halt(halt["cause"], halt["sleep_ms"], halt["why"])
                self.log("halt: %s" % halt["why"])
                if halt["cause"] == self.simstate.DEEPSLEEP_RESET:
                    t0 = self.board.world_us
                    if not self.board.after_halt(h):
                        self.log("asleep with no wake source: waiting for a reset")
                        while self.running and not self.reset_requested.is_set():
                            time.sleep(0.02)
                        continue
                    self._sleep((self.board.world_us - t0) / 1e6 * self.time_scale)
                else:
                    self.board.after_halt(h)
                self.raw_mode = False
                run_main = True
                continue
            # the VM ended otherwise (sys.exit, a crash): a real board would reset
            self.log("VM ended (%s): power-on reset" % how)
            self.board.after_halt(self.simstate.Halt(self.simstate.PWRON_RESET))
            self.raw_mode = False
            run_main = True

    def _power_on_reset(self):
        self.log("hardware reset (EN)")
        self.board.after_halt(self.simstate.Halt(self.simstate.PWRON_RESET))
        self.raw_mode = False
        self.reset_requested.clear()
        self.reset_done.set()

    def _sleep(self, seconds):
        end = time.monotonic() + seconds
        while self.running and time.monotonic() < end and not self.reset_requested.is_set():
            # bytes from the tools meanwhile are lost, as for a sleeping chip
            r, _, _ = select.select([self.tool_master], [], [], min(0.05, max(0, end - time.monotonic())))
            if r:
                try:
                    os.read(self.tool_master, 4096)
                except OSError:
                    pass

    def _run_vm(self, run_main):
        """One VM process: relay bytes until it ends.
        -> ("soft"|"halt"|"exit", halt event, last board state reported)."""
        self.boots += 1
        state = os.path.join(self.tmp.name, "state.json")
        events = os.path.join(self.tmp.name, "events.jsonl")
        with open(state, "w") as f:
            json.dump(self.board.snapshot(), f)
        open(events, "w").close()
        self.vm_master, vm_slave = pty.openpty()
        tty.setraw(vm_slave)
        env = dict(os.environ, MICROPYPATH=paths.vm_path(), MICROPYINSPECT="1",
                   PETREL_SIM_STATE=state, PETREL_SIM_EVENTS=events,
                   PETREL_SIM_FLASH=str(self.flash), PETREL_SIM_MAIN="1" if run_main else "0",
                   PETREL_SIM_AWAKE_SCALE=str(self.awake_scale))
        self.proc = subprocess.Popen([paths.micropython_binary(), "-c", "import vboardboot"],
                                     stdin=vm_slave, stdout=vm_slave, stderr=vm_slave, env=env,
                                     start_new_session=True)
        os.close(vm_slave)
        if not run_main:
            os.write(self.vm_master, b"\x01")  # back into the raw REPL, as after a soft reset
            self.raw_mode = True
        halt = None
        state = None
        soft_requested = False
        pos = 0
        while self.running:
            if self.reset_requested.is_set():
                self._kill()
                return "reset", None, state
            r, _, _ = select.select([self.tool_master, self.vm_master], [], [], 0.02)
            if self.tool_master in r:
                try:
                    data = os.read(self.tool_master, 4096)
                except OSError:
                    data = b""
                if data:
                    if b"\x01" in data:
                        self.raw_mode = True
                    if b"\x02" in data:
                        self.raw_mode = False
                    if self.raw_mode and b"\x04" in data:
                        soft_requested = True
                    self._to_vm(data)
            if self.vm_master in r:
                try:
                    out = os.read(self.vm_master, 4096)
                except OSError:
                    out = b""
                if out:
                    self._to_tools(out)
            pos, halt, state = self._events(events, pos, halt, state)
            if halt is not None:
                self._drain_vm(0.02)  # what it said before halting (an "OK" a tool waits for)
                self._kill()
                return "halt", halt, state
            if self.proc.poll() is not None:
                self._drain_vm()
                pos, halt, state = self._events(events, pos, halt, state)
                self._close_vm()
                if halt is not None:
                    return "halt", halt, state
                return ("soft" if soft_requested or self.raw_mode else "exit"), None, state
        self._kill()
        return "stopped", None, state

    def _events(self, events, pos, halt, state):
        try:
            with open(events) as f:
                f.seek(pos)
                chunk = f.read()
        except OSError:
            return pos, halt, state
        if not chunk.endswith("\n"):
            return pos, halt, state  # a line still being written
        for line in chunk.splitlines():
            kind, data = json.loads(line)
            if kind == "halt":
                halt = data
            elif kind == "state":
                state = data
        return pos + len(chunk), halt, state

    def _drain_vm(self, wait=0.05):
        while True:
            r, _, _ = select.select([self.vm_master], [], [], wait)
            if not r:
                return
            try:
                out = os.read(self.vm_master, 4096)
            except OSError:
                return
            if not out:
                return
            self._to_tools(out)

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(5)
        self._close_vm()

    def _close_vm(self):
        if self.vm_master is not None:
            try:
                os.close(self.vm_master)
            except OSError:
                pass
            self.vm_master = None

    def _to_tools(self, data):
        try:
            os.write(self.tool_master, data)
        except OSError:
            pass

    def _to_vm(self, data):
        if self.vm_master is not None:
            try:
                os.write(self.vm_master, data)
            except OSError:
                pass


# ------------------------------------------------------------ CLI
def _cmd(args):
    from . import simflash

    flash = Path(args.flash) if args.flash else Path(tempfile.mkdtemp(prefix="petrel-flash-"))
    if args.firmware:
        simflash.populate(flash)
    vb = VirtualBoard(flash, time_scale=args.time_scale, awake_scale=args.awake_scale,
                      log=lambda m: print("[vboard] %s" % m, file=sys.stderr, flush=True))
    vb.start()

    stopping = []

    def _stop(signum, frame):  # SIGTERM (kill, a test's terminate()) stops it as Ctrl-C does
        stopping.append(signum)  # a flag, not an exception: it may come at any line, even the first

    signal.signal(signal.SIGTERM, _stop)
    try:
        print(vb.path, flush=True)
        print("[vboard] flash: %s  (mpremote connect %s)" % (flash, vb.path), file=sys.stderr, flush=True)
        while not stopping:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        vb.stop()
    return 0


def register(sub):
    p = sub.add_parser(
        "vboard", help="a virtual board behind a pty for mpremote and the petrel tools",
        description="Starts the MicroPython VM with the simulated ESP32 behind a pseudo-terminal and "
                    "prints its device path (the first line of stdout). Unmodified mpremote works "
                    "against it: `mpremote connect /dev/pts/N exec \"import machine; "
                    "print(machine.unique_id())\"`, cp, ls, rm, reset. Soft reset, machine.reset(), "
                    "the watchdog and deep sleep restart the VM as the chip would, printing the ROM's "
                    "reset line. A hardware reset (the EN button) comes from the tools through a "
                    "control socket: `petrel deploy`, `run` and `repl` reset the board into the "
                    "firmware's break-in window and take it, as on a real board. Runs until Ctrl-C.")
    p.add_argument("--flash", help="folder used as the board's flash (default: a new temporary one)")
    p.add_argument("--firmware", action="store_true",
                   help="lay out firmware/ and lib/ on the flash first (as a deploy would)")
    p.add_argument("--time-scale", type=float, default=0.001,
                   help="real seconds per simulated second of deep sleep (default 0.001)")
    p.add_argument("--awake-scale", type=float, default=1.0,
                   help="real seconds per simulated second of the firmware's sleeps while awake "
                        "(default 1: the break-in window lasts as on a chip)")
    p.set_defaults(func=_cmd)
