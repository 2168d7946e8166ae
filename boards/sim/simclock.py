"""The simulated chip's clock, its halts and its boots: one part of simstate.Board.

Virtual time is `world_us`, true time since the simulation began. Firmware reads
it through ticks (restarting at each boot, wrapping at 2**30) and the RTC (us
since 2000, surviving deep sleep and reset). Time passes only in advance(),
which fires the watchdog, timers and scheduled events in order. A halt (deep
sleep, reset, watchdog, power cut) raises Halt; after_halt() carries the board
to its next boot with what each kind of reset keeps (see simboard).

A mixin: Board (simboard.py) holds the state. From the other parts it uses
_apply() and _ext_wake() (simpins.py: events and wake levels), account() and
spend() (simledger.py: the phase ledger). Each boot starts with the bootloader
choosing the app slot (simota.py).
"""

import simota

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


class Clock:
    """Halts, boots and the virtual clock of simstate.Board (a mixin)."""

    # ---------------------------------------------------------------- boots
    def _clear_cpu(self):
        """What any reset clears: the CPU, its peripherals and their config."""
        self.boot_world_us = self.world_us
        self.ticks_ms0 = self.start_ticks_ms
        self.ticks_us0 = self.start_ticks_us
        self.halted = None
        self.wdt_timeout_us = 0
        self.wdt_deadline = None
        self.timers = {}  # hardware id or virtual Timer -> [due_us, period_us (0 = one shot), callback, obj]
        self.outputs = {}  # pin -> level driven by the chip
        self.modes = {}  # pin -> mode
        self.pulls = {}  # pin -> pull
        self.irqs = {}  # pin -> [handler, trigger, pin object]
        self.wlan = None  # state of the station interface (network.py)
        self.cpu_hz = 160000000
        self.nvs_open = {}  # namespace -> uncommitted changes
        self.in_callback = False
        self.mem = {}  # word address -> value: what machine.mem8/16/32 see (simmem.py)
        self.idf_heaps = None  # esp32.idf_heap_info() regions; None: after boot (esp32.py)

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
        if not simota.boot(self, self.reset_cause == DEEPSLEEP_RESET):
            # no valid app in any slot: the bootloader resets and tries again, forever
            self.halted = Halt(DEEPSLEEP_RESET, 0, "no bootable app partition")

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

    def idle_at_repl(self, max_us):
        """main.py returned and nobody types at the REPL: time passes with the
        board awake, its timers firing (a maintenance hold's feeds the
        watchdog and ends in deep sleep), up to max_us or until a timer's
        callback or the watchdog halts the board (the Halt propagates).
        -> whether timers were armed (with none, nothing runs: the chip would
        sit at the REPL until its watchdog bites, which the caller models)."""
        if not self.timers:
            return False
        end = self.world_us + max_us
        while self.timers and self.world_us < end and self.halted is None:
            self.advance(min(1000000, end - self.world_us))
        return True

    # ---------------------------------------------------------------- interrupts
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
