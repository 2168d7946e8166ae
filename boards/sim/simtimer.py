"""machine.Timer of the simulated ESP32, as MicroPython 1.29's port has it
(ports/esp32/machine_timer.c): hardware timers 0-3 counting at 10 MHz (APB
80 MHz / 8) and, since 1.29, virtual timers (any negative id, the default)
counting microseconds on esp_timer. Callbacks are soft (scheduled); init()
takes keyword arguments only and refuses hard=True. The board fires them as
virtual time passes (simclock.advance).
"""

from simboard import board

_HW_TIMERS = 4  # SOC_TIMER_GROUP_TOTAL_TIMERS on the ESP32
_HW_HZ = 10000000
_M64 = (1 << 64) - 1


def _nothing(t):
    pass  # the port schedules None and the scheduler drops the TypeError


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, *args, **kw):
        board.alive()
        if id >= _HW_TIMERS:
            raise ValueError("Timer(%d) doesn't exist, there are only %d hardware timers" % (id, _HW_TIMERS))
        self.id = id
        # a hardware timer is the peripheral of that number; a virtual one is its own
        self._key = id if id >= 0 else self
        self._period = 0  # in ticks of this timer
        self._started = 0
        self._stopped = 0
        if args or kw:
            self.init(*args, **kw)

    def _hz(self):
        return _HW_HZ if self.id >= 0 else 1000000

    def init(self, *, mode=PERIODIC, callback=None, period=0xFFFFFFFF, tick_hz=1000, freq=None, hard=False):
        board.alive()
        if self._key in board.timers:
            self.deinit()
        if hard:
            raise ValueError("hard Timers are not implemented")
        hz = self._hz()
        if freq is not None:
            self._period = int(hz / freq) if freq > 0 else 0
        else:
            self._period = ((period & _M64) * hz & _M64) // tick_hz
        if self._period == 0:
            raise ValueError("Timer period is too short for this timer")
        period_us = max(1, self._period * 1000000 // hz)
        self._started = board.now_us()
        board.timers[self._key] = [self._started + period_us, period_us if mode else 0,
                                   callback or _nothing, self]

    def deinit(self):
        board.alive()
        board.timers.pop(self._key, None)
        self._period = 0
        self._started = self._stopped = 0

    def value(self):
        """Milliseconds counted since the timer started or last reloaded."""
        board.alive()
        now = board.now_us()
        t = board.timers.get(self._key)
        if t is not None:
            since = t[0] - t[1] if t[1] else self._started
            return (now - since) // 1000
        if self._period and self.id >= 0:  # a hardware one-shot keeps counting
            return (now - self._started) // 1000
        if self._period:  # a virtual one-shot stopped when it fired
            return self._period * 1000000 // self._hz() // 1000
        return 0
