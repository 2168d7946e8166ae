"""Play many wakes of the simulated board in a row.

Each boot runs boot.py and main.py from the board's flash folder until the chip
halts (deep sleep, reset, watchdog, power cut). Between boots the board carries
what the chip carries: RTC memory, reset cause and wake reason, the virtual clock.

Two interpreters, one board model (boards/sim/simstate.py):
- "cpython": in this process, firmware modules re-imported at each boot;
- "vm": a fresh MicroPython VM process per boot (boards/sim/vmboot.py), the
  board's state handed over as JSON.

The serial output is what a technician would see on the ESP32's UART: the ROM
reset line, then everything the firmware prints.

Energy: the board books every microsecond of virtual time to a phase (boot, cpu,
radio, tls, sleep; simstate.py). Each Boot carries `phases`, its share (from its
reset to the next one, so including the sleep after it), and the runner's
`totals()` sums them; petrel.energy.simulated(profile, phases) turns them into
charge and battery life. With `profile="esp32-node"` the board takes the
profile's boot time, TLS handshake times, round trip, radio rate and Wi-Fi
timings (its "energy" section). Firmware boots need the simulated link for any
traffic (board.link_required).
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from . import boards, harness, paths

VM_HEAP = "8M"  # a 2 MiB flash partition, its filesystem's caches and the firmware
ROM_BANNER = "ets Jun  8 2016 00:22:57\n\nrst:0x%x (%s),boot:0x13 (SPI_FAST_FLASH_BOOT)\n"
REPL_BANNER = ("MicroPython v1.29.0 on 2026-07-12; ESP32 module with ESP32 (simulated)\n"
               "Type \"help()\" for more information.\n>>> \n")


class Boot:
    """What one boot did."""

    def __init__(self, number, reset_cause, wake_reason, start_us):
        self.number = number  # 1-based, since the runner started
        self.reset_cause = reset_cause
        self.wake_reason = wake_reason
        self.start_us = start_us
        self.end_us = start_us
        self.end = None  # "halt", "repl" (stuck awake), "error"
        self.halt_cause = None
        self.sleep_ms = None
        self.why = ""
        self.output = ""
        self.phases = {}  # us per ledger phase, from this reset to the next
        self.tx_bytes = 0  # through the simulated sockets
        self.rx_bytes = 0

    @property
    def awake_ms(self):
        return (self.end_us - self.start_us) / 1000

    def __repr__(self):
        return "Boot(%d, cause=%s, wake=%s, end=%s %s)" % (
            self.number, self.reset_cause, self.wake_reason, self.end, self.why)


class BootRunner:
    def __init__(self, flash, interpreter="cpython", setup=None, serial=None,
                 boot_timeout_s=120, prepare=None, profile=None):
        """flash: the board's flash folder (boot.py, main.py, lib/ ...), or on
        the VM a simflash.Image: NOR flash with littlefs, as on the chip.
        setup: name of a module on the sim path with setup(board), run before each
        boot to wire device models. prepare(board) runs once before the first boot.
        serial: callable receiving the UART text as it comes.
        profile: a board profile (name in boards/ or its dict) whose energy
        section sets the board's phase times (apply_profile)."""
        harness.install()
        import simstate

        self.simstate = simstate
        self.image = None
        if hasattr(flash, "files"):  # a simflash.Image
            if interpreter != "vm":
                raise ValueError("a littlefs flash image needs the VM (CPython has no littlefs)")
            self.image = Path(flash.path).resolve()
            flash = self.image.parent
        self.flash = Path(flash).resolve()
        self.interpreter = interpreter
        self.setup = setup
        self.serial = serial or (lambda text: None)
        self.boot_timeout_s = boot_timeout_s
        if interpreter == "cpython":
            self.board = simstate.reset_world(power=False)  # the one the fakes use
        elif interpreter == "vm":
            self.board = simstate.Board()
        else:
            raise ValueError("interpreter must be 'cpython' or 'vm'")
        self.board.link_required = True  # real firmware: no traffic without Wi-Fi
        self.profile = None
        if profile is not None:
            self.profile = apply_profile(self.board, profile)
        if prepare is not None:
            prepare(self.board)
        self.board.power_on()
        self.boots = []
        self.asleep_forever = False

    # ------------------------------------------------------------------
    def run(self, boots):
        """Play up to `boots` boots; stops early if the board never wakes again
        or is left awake at the REPL with no watchdog to reset it."""
        for _ in range(boots):
            b = self.board
            cause, name = self.simstate.ROM_RESET[b.reset_cause]
            record = Boot(len(self.boots) + 1, b.reset_cause, b.wake_reason, b.world_us)
            self.boots.append(record)
            self._emit(record, ROM_BANNER % (cause, name))
            start = b.boot_mark
            if self.interpreter == "cpython":
                self._boot_cpython(record)
            else:
                self._boot_vm(record)
            going_on = self._next(record)
            end = b.boot_mark if going_on else b.mark()  # the next boot's start
            record.phases = dict((p, end["ledger"][p] - start["ledger"][p]) for p in end["ledger"])
            record.tx_bytes = end["tx"] - start["tx"]
            record.rx_bytes = end["rx"] - start["rx"]
            if not going_on:
                break
        return self.boots

    def totals(self):
        """us per phase over every boot played (with the sleep after each)."""
        out = dict((p, 0) for p in self.simstate.PHASES)
        for r in self.boots:
            for p in r.phases:
                out[p] += r.phases[p]
        return out

    def _emit(self, record, text):
        record.output += text
        self.serial(text)

    def _next(self, record):
        """From how the boot ended to the next boot, as the chip would go."""
        b = self.board
        if record.end == "repl":
            self._emit(record, REPL_BANNER)
            if b.wdt_deadline is None:
                record.why = "stuck awake at the REPL"
                return False
            # awake at the REPL until the armed watchdog bites (CPU time: the
            # VM's board does not carry the radio state across its handover)
            b.account()
            b.world_us = max(b.world_us, b.wdt_deadline)
            b.account("cpu")
            record.halt_cause = self.simstate.WDT_RESET
            record.why = "watchdog reset at the REPL"
            halt = self.simstate.Halt(self.simstate.WDT_RESET, 0, record.why)
        elif record.end == "halt":
            halt = self.simstate.Halt(record.halt_cause, record.sleep_ms or 0, record.why)
        else:
            return False
        record.end_us = b.world_us
        if not b.after_halt(halt):
            self.asleep_forever = True
            return False
        return True

    # ------------------------------------------------------------------
    def _boot_cpython(self, record):
        harness.add_firmware_root(self.flash)
        # every flash folder's modules, not only this one's, imported afresh as
        # at a real wake; the host's own copies are put back after the boot
        with harness.fresh_modules(harness.flash_roots + [self.flash, paths.LIB, paths.FIRMWARE]):
            self._run_flash(record)

    def _run_flash(self, record):
        b = self.board
        if self.setup:
            __import__(self.setup).setup(b)
        saved_path = list(sys.path)
        # the flash and its lib/ as the node's sys.path has them ("", /lib), and
        # not this repo's firmware/ and lib/: a module missing from the flash
        # (or from an update's slot, firmware/appslot.py) fails as on the node
        repo = (str(paths.FIRMWARE), str(paths.LIB))
        sys.path[:] = [str(self.flash), str(self.flash / "lib")] + [p for p in saved_path if p not in repo]
        out = _Tee(lambda text: self._emit(record, text))
        saved_cwd = os.getcwd()
        os.chdir(self.flash)  # the firmware's relative paths land in the flash, as on the VM
        try:
            # no console on the UART (io.StringIO cannot be polled): the break-in window
            # passes untaken, whatever this process's own stdin is
            with contextlib.redirect_stdout(out), _stdin(io.StringIO()):
                try:
                    for name in ("boot.py", "main.py"):
                        f = self.flash / name
                        if f.exists():
                            code = compile(f.read_text(), name, "exec")
                            exec(code, {"__name__": "__main__", "__file__": str(f)})
                    # at the REPL with timers armed (a maintenance hold): time passes, they run
                    b.idle_at_repl(3 * 3600 * 1000000)
                    record.end = "repl"
                except self.simstate.Halt:
                    pass
                except BaseException:  # main.py raised: the ESP32 prints it, drops to the REPL
                    if b.halted is None:
                        out.write(_micropython_traceback())
                        record.end = "repl"
                if b.halted is not None:
                    record.end = "halt"
                    record.halt_cause = b.halted.cause
                    record.sleep_ms = b.halted.sleep_ms
                    record.why = b.halted.why
        finally:
            sys.path[:] = saved_path
            os.chdir(saved_cwd)
        record.end_us = b.world_us

    def _boot_vm(self, record):
        b = self.board
        with tempfile.TemporaryDirectory(prefix="petrel-boot-") as tmp:
            state = os.path.join(tmp, "state.json")
            events = os.path.join(tmp, "events.jsonl")
            with open(state, "w") as f:
                json.dump(b.snapshot(), f)
            open(events, "w").close()
            env = dict(os.environ)
            env.update({
                "MICROPYPATH": paths.vm_path(),
                "PETREL_SIM_STATE": state,
                "PETREL_SIM_EVENTS": events,
                "PETREL_SIM_FLASH": str(self.flash),
                "PETREL_SIM_FLASH_IMAGE": str(self.image or ""),
            })
            if self.setup:
                env["PETREL_SIM_SETUP"] = self.setup
            # the heap holds the whole littlefs image (norflash keeps every written
            # sector): the default 2 MB ran out once an update's slot sat beside the
            # factory app (host_tests/host/test_appslot_boot.py)
            cmd = [paths.micropython_binary(), "-X", "heapsize=%s" % VM_HEAP, str(paths.SIM / "vmboot.py")]
            try:
                # no console on the UART: the break-in window passes untaken
                proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, timeout=self.boot_timeout_s)
                text = proc.stdout.decode("utf-8", "replace")
            except subprocess.TimeoutExpired as e:
                text = (e.stdout or b"").decode("utf-8", "replace")
                text += "\n[boot runner] the VM did not finish within %d s\n" % self.boot_timeout_s
            self._emit(record, text)
            end, halt = None, None
            with open(events) as f:
                for line in f:
                    kind, data = json.loads(line)
                    if kind == "end":
                        end = data
                    elif kind == "halt":
                        halt = data
        if end is None:
            record.end = "error"
            record.why = "the VM process ended without reporting (crash or timeout)"
            return
        b.restore(end["state"])
        b.world_us = end["world_us"]
        b.wdt_deadline = end["wdt_deadline"]
        record.end_us = b.world_us
        record.end = end["how"]
        if record.end == "halt":
            record.halt_cause = halt["cause"]
            record.sleep_ms = halt["sleep_ms"]
            record.why = halt["why"]


def apply_profile(board, profile):
    """Give the simulated board a profile's phase times (its "energy" section):
    boot_ms, tls_psk_ms, tls_cert_ms, rtt_ms, radio_kbps, and wifi_timing
    (overrides of network.TIMING). Missing keys keep the board's defaults.
    Returns the profile dict."""
    if isinstance(profile, str):
        profile = boards.load(profile)
    e = profile.get("energy", {})
    for key, attr, scale in (("boot_ms", "boot_us", 1000), ("tls_psk_ms", "tls_psk_us", 1000),
                             ("tls_cert_ms", "tls_cert_us", 1000), ("rtt_ms", "rtt_us", 1000),
                             ("radio_kbps", "radio_kbps", 1)):
        if key in e:
            setattr(board, attr, int(e[key] * scale))
    board.net_timing = dict(e.get("wifi_timing", {}))
    return profile


@contextlib.contextmanager
def _stdin(stream):
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


class _Tee(io.TextIOBase):
    def __init__(self, sink):
        self.sink = sink

    def write(self, s):
        self.sink(s)
        return len(s)


def _micropython_traceback():
    """The exception being handled, in MicroPython's words (file and line)."""
    etype, value, tb = sys.exc_info()
    lines = ["Traceback (most recent call last):\n"]
    for frame in traceback.extract_tb(tb)[1:]:  # skip the runner's own frame
        lines.append('  File "%s", line %d, in %s\n' % (
            os.path.basename(frame.filename), frame.lineno, frame.name))
    lines.append("%s: %s\n" % (etype.__name__, value) if str(value) else "%s\n" % etype.__name__)
    return "".join(lines)
