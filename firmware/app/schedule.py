"""When to wake next: on a grid aligned to the wall clock (every 300 s ->
:00, :05, :10 ...), corrected for the drift of the chip's sleep clock.

In deep sleep the ESP32 keeps time on an RC oscillator that is off by up to a
few percent, and the RTC counts that oscillator's milliseconds: a node that
asks for 300 s may sleep 306 s, and its clock falls 6 s behind each time.
Each NTP sync measures that: the step the clock takes, over the RTC time since
the previous sync, is the sleep clock's error in parts per million. With it
the node corrects both its idea of the time between syncs and the sleeps it
asks for, so wakes stay on the grid although it syncs only when it uploads.

    s = Schedule(interval_s=300, state=...)   # state: the dict kept in RTC memory
    ms = s.sleep_ms(rtc_unix_ms, clock_known)
    ...at an NTP sync:
    s.synced(rtc_unix_ms_just_before, ntp_unix_ms)

State (two ints, in the app's RTC record): the RTC time of the last sync in
seconds, and the drift estimate in ppm (+ = the sleep clock runs slow: sleeps
last longer than asked and the RTC falls behind).
"""

MAX_PPM = 100000  # a 10 % error is not drift: something else is wrong
LEARN = 2  # a measurement near the estimate moves it half way (NTP's seconds are coarse)
JUMP_PPM = 5000  # one far from it is taken as it is (first sync, a new oscillator)
MIN_SPAN_MS = 600000  # measure over 10 minutes at least: NTP's own error is tens of ms
MIN_SLEEP_MS = 1000


class Schedule:
    def __init__(self, interval_s, state=None):
        if interval_s < 1:
            raise ValueError("interval must be at least 1 s")
        self.interval = interval_s
        self.state = state if state is not None else {}
        self.state.setdefault("synced", 0)  # RTC unix seconds at the last sync (0: none)
        self.state.setdefault("ppm", 0)

    def next_slot(self, now):
        """The next grid point strictly after now (unix seconds)."""
        return (now // self.interval + 1) * self.interval

    def true_ms(self, rtc_ms):
        """The RTC's time corrected for the drift since the last sync."""
        synced = self.state["synced"]
        if not synced:
            return rtc_ms
        return rtc_ms + (rtc_ms - synced * 1000) * self.state["ppm"] // 1000000

    def sleep_ms(self, rtc_ms, known=True):
        """What to ask machine.deepsleep() for, now (the RTC's unix time in ms;
        when the clock is not known there is no grid, only the interval)."""
        if known:
            now_ms = self.true_ms(rtc_ms)
            target = self.next_slot(now_ms // 1000)
            if (target * 1000 - now_ms) < max(2000, self.interval * 500):
                # less than half an interval away (the clock just stepped back,
                # or a wake ran late): the slot after it, so two samples never
                # come closer than half an interval, nor share a timestamp
                target += self.interval
            wanted_ms = target * 1000 - now_ms
        else:
            wanted_ms = self.interval * 1000
        # a timer that runs ppm slow must be asked for less
        return max(MIN_SLEEP_MS, wanted_ms * 1000000 // (1000000 + self.state["ppm"]))

    def synced(self, rtc_ms, ntp_ms):
        """The clock was just set: it read rtc_ms when NTP said ntp_ms. Learns
        the drift from the step; returns the step in ms, or None when there is
        nothing to measure against (first sync, too short a span, or nonsense)."""
        last = self.state["synced"]
        self.state["synced"] = ntp_ms // 1000
        if not last:
            return None
        span = rtc_ms - last * 1000
        if span < MIN_SPAN_MS:
            return None
        step = ntp_ms - rtc_ms
        measured = step * 1000000 // span
        if -MAX_PPM < measured < MAX_PPM:
            d = measured - self.state["ppm"]
            self.state["ppm"] += d if abs(d) > JUMP_PPM else d // LEARN
            return step
        return None
