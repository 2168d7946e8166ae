"""The simulated ESP32: one virtual clock and the state that does, or does not,
survive deep sleep, reset and power loss.

The fake `machine`, `time`, `network`, `esp32` and `ntptime` modules all read and
write the single `board` below, so the same files serve CPython and the MicroPython
VM. Written in the subset of Python that MicroPython runs.

What survives what (as on the chip):
- power loss: only the world (wiring, inputs, committed NVS, flash partitions);
- reset / WDT: also RTC time and RTC memory;
- deep sleep: also held pins. (The ext0/ext1 wake configuration is a RAM
  variable of the port: it wakes the chip, then each boot must set it again.)

The phase ledger: every microsecond of virtual time is booked to exactly one of
PHASES, for the energy model (tools/petrel/energy.py): "boot" (reset to boot.py,
board.boot_us), "cpu" (awake, radio off), "radio" (station active, or socket
traffic), "tls" (the handshake charge of socket.py), "sleep" (deep sleep).
Phases a simulation cannot time (association, DHCP, a handshake on the chip)
take figures from the board profile, never host timings.
"""

TICKS_PERIOD = 1 << 30  # ticks_ms/ticks_us wrap here on the ESP32 (2**62 on unix)
TICKS_MASK = TICKS_PERIOD - 1
TICKS_HALF = TICKS_PERIOD >> 1
RTC_MEMORY_MAX = 2048  # MICROPY_HW_RTC_USER_MEM_MAX on the ESP32 port
EPOCH_2000_UNIX = 946684800  # the ESP32 port counts time from 2000-01-01

# machine.reset_cause() values of the ESP32 port
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
# machine.wake_reason() values (esp_sleep_wakeup_cause_t)
WAKE_UNDEFINED = 0
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4

PHASES = ("boot", "cpu", "radio", "tls", "sleep")

# What the ROM bootloader prints for each reset cause: (rst code, name)
ROM_RESET = {
    PWRON_RESET: (0x1, "POWERON_RESET"),
    HARD_RESET: (0x1, "POWERON_RESET"),
    DEEPSLEEP_RESET: (0x5, "DEEPSLEEP_RESET"),
    WDT_RESET: (0x7, "TG0WDT_SYS_RESET"),
    SOFT_RESET: (0xC, "SW_CPU_RESET"),
}


class Halt(BaseException):
    """The chip stopped running Python: deep sleep, reset, watchdog or power cut.

    A BaseException so that `except Exception` in firmware cannot swallow it,
    as nothing can swallow a real deep sleep. If firmware catches it anyway,
    every later call into the board raises it again."""

    def __init__(self, cause, sleep_ms=0, why=""):
        super().__init__(why or ROM_RESET[cause][1])
        self.cause = cause
        self.sleep_ms = sleep_ms
        self.why = why


class Board:
    def __init__(self):
        # --- the world: survives everything ---
        self.world_us = 0  # true time since the simulation began
        self.true_unix_at_start = 1767225600  # wall time at world 0 (2026-01-01), for NTP
        self.uid = b"\x24\x0a\xc4\x5e\x71\x08"  # efuse MAC: machine.unique_id()
        self.inputs = {}  # pin -> level driven from outside (buttons, sensors)
        self.analog = {}  # pin -> microvolts at the pad
        self.i2c = {}  # bus id -> {addr: device model}
        self.spi = {}  # bus id -> {cs pin: device model}
        self.onewire = {}  # pin -> [1-Wire device models] (see _onewire.py)
        self.aps = []  # scripted Wi-Fi access points (see network.py)
        self.ntp_ok = True  # whether an NTP server answers when the link is up
        self.nvs = {}  # committed NVS: namespace -> {key: int | bytes}
        self.partitions = {}  # label -> norflash.NorFlash
        self.events = []  # scheduled [at_us, kind, a, b], sorted by time
        self.boot_us = 0  # time from reset to the first line of boot.py
        self.sleep_drift_ppm = 0  # RTC slow clock error during deep sleep
        self.read_cost_us = 1  # each clock read costs this much, so polling loops end
        self.boots = 0  # boots since the simulation began (not visible to firmware)
        # radio model (socket.py); a board profile may override: see BootRunner
        self.tls_psk_us = 50000  # energy.md: a PSK handshake is tens of ms
        self.tls_cert_us = 1000000  # energy.md: ECDSA P-256 handshake ~1.0 s on an ESP32
        self.rtt_us = 10000  # energy.md: MQTT connect + publish ~40 ms = a few round trips
        self.radio_kbps = 2000  # payload rate of MicroPython over Wi-Fi (an estimate)
        self.net_timing = {}  # overrides of network.TIMING (ms)
        self.link_required = False  # sockets need the simulated link even before WLAN is used
        self.tx_bytes = 0  # bytes sent and received through socket.py
        self.rx_bytes = 0
        # the phase ledger: us per phase, booked up to world time ledger_us
        self.ledger = dict((p, 0) for p in PHASES)
        self.ledger_us = self.world_us
        self.phase = None  # a phase forced for a while (boot, sleep, tls, radio)
        self.boot_mark = self.mark()  # the ledger when the current boot began
        self.host = None  # where the board reports NVS commits and halts
        self.scenario = {}  # JSON-able knobs a setup module reads to wire faults (tests)
        # set by a test before a boot: where the ticks counters start
        self.start_ticks_ms = 0
        self.start_ticks_us = 0
        # --- RTC domain: survives reset and deep sleep, not power loss ---
        self.rtc_mem = b""
        self.rtc_at_ref_us = 0  # RTC reading (us since 2000) at rtc_ref_world_us
        self.rtc_ref_world_us = 0
        # --- survive deep sleep only ---
        self.held = {}  # pin -> level kept by Pin(hold=True)
        self.ext0 = None  # (pin, level)
        self.ext1 = None  # (pins, level)
        self.reset_cause = PWRON_RESET
        self.wake_reason = WAKE_UNDEFINED
        self._clear_cpu()

    # ---------------------------------------------------------------- boots
    def _clear_cpu(self):
        """What any reset clears: the CPU, its peripherals and their config."""
        self.boot_world_us = self.world_us
        self.ticks_ms0 = self.start_ticks_ms
        self.ticks_us0 = self.start_ticks_us
        self.halted = None
        self.wdt_timeout_us = 0
        self.wdt_deadline = None
        self.timers = {}  # timer id -> [due_us, period_us (0 = one shot), callback, obj]
        self.outputs = {}  # pin -> level driven by the chip
        self.modes = {}  # pin -> mode
        self.pulls = {}  # pin -> pull
        self.irqs = {}  # pin -> [handler, trigger, pin object]
        self.wlan = None  # state of the station interface (network.py)
        self.cpu_hz = 160000000
        self.nvs_open = {}  # namespace -> uncommitted changes
        self.in_callback = False

    def power_on(self):
        """Battery in, or brought back after a cut: only the world remains."""
        self.rtc_mem = b""
        self.rtc_at_ref_us = 0
        self.rtc_ref_world_us = self.world_us
        self.held = {}
        self.ext0 = None
        self.ext1 = None
        self.reset_cause = PWRON_RESET
        self.wake_reason = WAKE_UNDEFINED
        self._start()

    def _start(self):
        self.account()  # the last boot's awake time ends here
        self._clear_cpu()
        for pin in self.held:
            self.outputs[pin] = self.held[pin]
        self.boots += 1
        self.boot_mark = self.mark()
        self.spend(self.boot_us, "boot")

    def after_halt(self, halt):
        """Carry the board from a halt to its next boot. Returns False when
        nothing will ever wake it (deep sleep with no wake source)."""
        cause = halt.cause
        if cause == PWRON_RESET:
            self.power_on()
            return True
        if cause == DEEPSLEEP_RESET:
            self.account()
            self.phase = "sleep"
            try:
                woke = self._sleep_until_wake(halt.sleep_ms)
            finally:
                self.account()
                self.phase = None
            if woke is None:
                return False
            if woke < 0:  # the power was cut while it slept
                self.power_on()
                return True
            self.reset_cause = DEEPSLEEP_RESET
            self.wake_reason = woke
            self.ext0 = None  # kept by the port in RAM: gone with the wake
            self.ext1 = None
        else:
            self.held = {}
            self.ext0 = None
            self.ext1 = None
            self.reset_cause = cause
            self.wake_reason = WAKE_UNDEFINED
        self._start()
        return True

    def _sleep_until_wake(self, ms):
        """Deep sleep: no Python runs, the slow RTC clock times the wake."""
        self.wdt_deadline = None  # the watchdog is off in deep sleep
        self.timers = {}
        self.irqs = {}
        if self._ext_wake():  # a wake level already present wakes at once
            return self._ext_wake()
        true_us = None
        if ms > 0:
            true_us = ms * 1000 * (1000000 + self.sleep_drift_ppm) // 1000000
        t_end = None if true_us is None else self.world_us + true_us
        while self.events and (t_end is None or self.events[0][0] <= t_end):
            ev = self.events.pop(0)
            self.world_us = max(self.world_us, ev[0])
            if ev[1] == "power_cut":
                return -1
            self._apply(ev, run_irqs=False)
            woke = self._ext_wake()
            if woke:
                return woke
        if t_end is None:
            return None
        self.world_us = t_end
        # the RTC counted its own (drifting) milliseconds, not true time
        self.rtc_at_ref_us -= true_us - ms * 1000
        return TIMER_WAKE

    def _ext_wake(self):
        if self.ext0 is not None and self.level(self.ext0[0]) == self.ext0[1]:
            return EXT0_WAKE
        if self.ext1 is not None:
            pins, high = self.ext1
            levels = [self.level(p) for p in pins]
            if (high and 1 in levels) or (not high and pins and 1 not in levels):
                return EXT1_WAKE
        return 0

    # ---------------------------------------------------------------- clock
    def alive(self):
        """Every fake call starts here: nothing runs after the chip halted."""
        if self.halted is not None:
            raise self.halted

    def halt(self, cause, sleep_ms=0, why=""):
        h = Halt(cause, sleep_ms, why)
        self.halted = h
        if self.host is not None:
            self.host.event("halt", {"cause": cause, "sleep_ms": sleep_ms, "why": why})
        raise h

    def now_us(self):
        """The clock as firmware reads it; each read costs read_cost_us."""
        self.alive()
        if self.read_cost_us:
            self.advance(self.read_cost_us)
        return self.world_us

    def since_boot_us(self):
        return self.now_us() - self.boot_world_us

    def ticks_ms(self):
        return (self.since_boot_us() // 1000 + self.ticks_ms0) & TICKS_MASK

    def ticks_us(self):
        return (self.since_boot_us() + self.ticks_us0) & TICKS_MASK

    def rtc_us(self):
        """RTC time in microseconds since 2000-01-01."""
        return self.rtc_at_ref_us + (self.now_us() - self.rtc_ref_world_us)

    def set_rtc_us(self, us):
        self.rtc_ref_world_us = self.world_us
        self.rtc_at_ref_us = us

    def true_rtc_us(self):
        """What a correct clock (NTP) reads now, in microseconds since 2000."""
        return (self.true_unix_at_start - EPOCH_2000_UNIX) * 1000000 + self.world_us

    def advance(self, us, wake=None):
        """Let `us` of virtual time pass, firing timers, scheduled events and the
        watchdog in order. `wake(reason_fn)` ends a light sleep early: it returns
        the wake reason once one holds, else 0."""
        self.alive()
        end = self.world_us + us
        while True:
            due, what = end, None
            if self.wdt_deadline is not None and self.wdt_deadline <= due:
                due, what = self.wdt_deadline, "wdt"
            for tid in self.timers:
                t = self.timers[tid]
                if t[0] < due:
                    due, what = t[0], tid
            if self.events and self.events[0][0] < due:
                due, what = self.events[0][0], "event"
            if what is None:
                self.world_us = end
                return 0
            self.world_us = max(self.world_us, due)
            if what == "wdt":
                self.halt(WDT_RESET, 0, "watchdog not fed for %d ms" % (self.wdt_timeout_us // 1000))
            elif what == "event":
                self._apply(self.events.pop(0), run_irqs=True)
                if wake is not None:
                    reason = wake()
                    if reason:
                        return reason
            else:
                self._fire_timer(what)

    # ---------------------------------------------------------------- ledger
    def _phase_now(self):
        if self.phase is not None:
            return self.phase
        w = self.wlan
        return "radio" if w is not None and w["active"] else "cpu"

    def account(self, phase=None):
        """Book the time since the last booking to one phase (the current one
        unless told). Called before anything that changes the phase."""
        d = self.world_us - self.ledger_us
        if d:
            p = phase or self._phase_now()
            self.ledger[p] += d
            self.ledger_us = self.world_us

    def spend(self, us, phase):
        """Let `us` of virtual time pass, booked to `phase` (a radio exchange,
        a TLS handshake, the boot)."""
        self.account()
        saved = self.phase
        self.phase = phase
        try:
            self.advance(us)
        finally:
            self.account()
            self.phase = saved

    def phases(self):
        """The ledger up to now: {phase: us}; sums to world_us since power-on of
        a fresh Board."""
        self.account()
        return dict(self.ledger)

    def mark(self):
        """The ledger and byte counters now, to subtract later (per boot)."""
        return {"ledger": self.phases(), "tx": self.tx_bytes, "rx": self.rx_bytes}

    def _fire_timer(self, tid):
        t = self.timers[tid]
        if t[1]:
            t[0] += t[1]
        else:
            del self.timers[tid]
        self._callback(t[2], t[3])

    def _callback(self, fn, arg):
        if self.in_callback:  # no nesting, as with real interrupts
            return
        self.in_callback = True
        try:
            fn(arg)
        finally:
            self.in_callback = False

    # ---------------------------------------------------------------- events
    def schedule(self, at_us, kind, a=None, b=None):
        """Something happens in the world at a given time: ('pin', num, level),
        ('power_cut',), ('analog', pin, uv), ('ap', ssid, up)."""
        ev = [at_us, kind, a, b]
        i = 0
        while i < len(self.events) and self.events[i][0] <= at_us:
            i += 1
        self.events.insert(i, ev)

    def _apply(self, ev, run_irqs):
        kind = ev[1]
        if kind == "pin":
            self.drive(ev[2], ev[3], run_irqs)
        elif kind == "analog":
            self.analog[ev[2]] = ev[3]
        elif kind == "ap":  # an access point goes down or comes back
            for ap in self.aps:
                if ap["ssid"] == ev[2]:
                    ap["up"] = bool(ev[3])
        elif kind == "power_cut":
            self.halt(PWRON_RESET, 0, "power cut")

    # ---------------------------------------------------------------- pins
    def level(self, pin):
        """The level on a pad: the chip's output, else the outside, else the pull."""
        if pin in self.outputs:
            return self.outputs[pin]
        if pin in self.inputs:
            return self.inputs[pin]
        if pin in self.held:
            return self.held[pin]
        return 1 if self.pulls.get(pin) == 1 else 0

    def drive(self, pin, level, run_irqs=True):
        """The outside world sets an input pin (a button, a sensor's alert line)."""
        before = self.level(pin)
        self.inputs[pin] = 1 if level else 0
        after = self.level(pin)
        irq = self.irqs.get(pin)
        if run_irqs and irq is not None and before != after:
            edge = 1 if after else 2  # IRQ_RISING = 1, IRQ_FALLING = 2 on the ESP32
            if irq[1] & edge:
                self._callback(irq[0], irq[2])

    # ---------------------------------------------------------------- save
    def snapshot(self):
        """Everything that outlives one process, as plain JSON-able data."""
        nvs = {}
        for ns in self.nvs:
            d = {}
            for k in self.nvs[ns]:
                v = self.nvs[ns][k]
                d[k] = v if isinstance(v, int) else {"blob": _hex(v)}
            nvs[ns] = d
        self.account()
        return {
            "world_us": self.world_us,
            "true_unix_at_start": self.true_unix_at_start,
            "uid": _hex(self.uid),
            "inputs": _keys_str(self.inputs),
            "analog": _keys_str(self.analog),
            "ntp_ok": self.ntp_ok,
            "nvs": nvs,
            "events": [e for e in self.events if e[1] != "call"],
            "boot_us": self.boot_us,
            "sleep_drift_ppm": self.sleep_drift_ppm,
            "read_cost_us": self.read_cost_us,
            "boots": self.boots,
            "start_ticks_ms": self.start_ticks_ms,
            "start_ticks_us": self.start_ticks_us,
            "rtc_mem": _hex(self.rtc_mem),
            "rtc_at_ref_us": self.rtc_at_ref_us,
            "rtc_ref_world_us": self.rtc_ref_world_us,
            "held": _keys_str(self.held),
            "ext0": self.ext0,
            "ext1": self.ext1,
            "reset_cause": self.reset_cause,
            "wake_reason": self.wake_reason,
            "aps": self.aps,
            "scenario": self.scenario,
            "tls_psk_us": self.tls_psk_us,
            "tls_cert_us": self.tls_cert_us,
            "rtt_us": self.rtt_us,
            "radio_kbps": self.radio_kbps,
            "net_timing": self.net_timing,
            "link_required": self.link_required,
            "tx_bytes": self.tx_bytes,
            "rx_bytes": self.rx_bytes,
            "ledger": self.ledger,
            "ledger_us": self.ledger_us,
            "boot_mark": self.boot_mark,
        }

    def restore(self, d):
        for k in d:
            setattr(self, k, d[k])
        self.uid = _unhex(d["uid"])
        self.rtc_mem = _unhex(d["rtc_mem"])
        self.inputs = _keys_int(d["inputs"])
        self.analog = _keys_int(d["analog"])
        self.held = _keys_int(d["held"])
        if d["ext0"] is not None:
            self.ext0 = tuple(d["ext0"])
        if d["ext1"] is not None:
            self.ext1 = (tuple(d["ext1"][0]), d["ext1"][1])
        nvs = {}
        for ns in d["nvs"]:
            nvs[ns] = {}
            for k in d["nvs"][ns]:
                v = d["nvs"][ns][k]
                nvs[ns][k] = v if isinstance(v, int) else _unhex(v["blob"])
        self.nvs = nvs
        self._clear_cpu()
        for pin in self.held:
            self.outputs[pin] = self.held[pin]


def _hex(b):
    return "".join("%02x" % x for x in b)


def _unhex(s):
    return bytes(int(s[i : i + 2], 16) for i in range(0, len(s), 2))


def _keys_str(d):
    return dict((str(k), d[k]) for k in d)


def _keys_int(d):
    return dict((int(k), d[k]) for k in d)


board = Board()
board.power_on()


def reset_world(power=True):
    """A brand-new board on the bench, powered on unless told otherwise (tests
    start here; a runner may wire things before the first power-on)."""
    board.__init__()
    if power:
        board.power_on()
    return board


# Load the fake clock with the board, so that even `import utime` before any
# `import time` finds the fake on the VM.
import time  # noqa: E402,F401
