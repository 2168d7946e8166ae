"""When to wake next: on a grid aligned to the wall clock (every 300 s ->
:00, :05, :10 ...), corrected for the drift of the chip's sleep clock.

The ESP32's deep-sleep timer runs on an RC oscillator that is off by up to a
few percent, so a node that asks for 300 s may wake at 306 s. Each time the
wall clock is set from NTP, the error of the last sleep is measured (where
the node woke against where it meant to) and the next sleeps are shortened or
lengthened by the averaged drift, so wakes stay on the grid.

    s = Schedule(interval_s=300, state=...)   # state: the dict kept in RTC memory
    ms = s.sleep_ms(unix_ms_now, clock.known())
    ...after the next wake and an NTP sync:
    s.measured(true_unix_ms_at_wake)

State (three ints, in the app's RTC record): the target wake time, the time
asked for, and the drift estimate in parts per million.
"""

MAX_PPM = 100000  # a 10 % error is not drift: something else is wrong
LEARN = 2  # each measured residual corrects the estimate by half of it
MIN_SLEEP_MS = 1000


class Schedule:
    def __init__(self, interval_s, state=None):
        if interval_s < 1:
            raise ValueError("interval must be at least 1 s")
        self.interval = interval_s
        self.state = state if state is not None else {}
        self.state.setdefault("target", 0)  # unix time the last sleep aimed at (0: none)
        self.state.setdefault("asked_ms", 0)  # what the last sleep asked the timer for
        self.state.setdefault("ppm", 0)  # sleep clock error estimate, + = sleeps too long

    def next_slot(self, now):
        """The next grid point strictly after now (unix seconds)."""
        return (now // self.interval + 1) * self.interval

    def sleep_ms(self, now_ms, known=True):
        """What to ask machine.deepsleep() for, now (unix time in ms; when the
        clock is not known there is no grid, only the interval)."""
        if known:
            target = self.next_slot(now_ms // 1000)
            if (target * 1000 - now_ms) < max(2000, self.interval * 100):
                target += self.interval  # too close to do a wake's work before it
            wanted_ms = target * 1000 - now_ms
        else:
            target = 0
            wanted_ms = self.interval * 1000
        # a timer that runs ppm too long must be asked for less
        asked = wanted_ms * 1000000 // (1000000 + self.state["ppm"])
        asked = max(MIN_SLEEP_MS, asked)
        self.state["target"] = target
        self.state["asked_ms"] = asked
        return asked

    def measured(self, woke_unix_ms):
        """The true time of this wake in ms (known from an NTP sync, less the
        time since boot): learn from the last sleep. The error left after the
        current estimate is the residual drift; half of it goes into the
        estimate. Returns the error in ms, or None if not measurable."""
        target = self.state["target"]
        asked = self.state["asked_ms"]
        if not target or asked < MIN_SLEEP_MS:
            return None
        error_ms = woke_unix_ms - target * 1000
        residual = error_ms * 1000000 // asked
        if -MAX_PPM < residual < MAX_PPM:
            self.state["ppm"] += residual // LEARN
        self.state["target"] = 0  # measured once
        return error_ms
