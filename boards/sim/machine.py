"""Fake `machine` for the simulated ESP32 (MicroPython 1.29 ESP32 port API).

Faithful, not friendly: deepsleep() and reset() never return, a missing I2C
device raises OSError(ENODEV), an unfed WDT resets the board, RTC memory holds at
most 2048 bytes and is gone after power loss. State lives in simstate.board;
the I2C and SPI buses are in simbus.py.
"""

import time  # the fake's calendar (gmtime, mktime) for RTC.datetime()

import simstate
from simstate import board, Halt  # noqa: F401  (Halt re-exported for runners)
from simbus import I2C, SoftI2C, SPI, SoftSPI  # noqa: F401  (the buses live there)
from simtimer import Timer  # noqa: F401
from simmem import mem8, mem16, mem32  # noqa: F401

PWRON_RESET = simstate.PWRON_RESET
HARD_RESET = simstate.HARD_RESET
WDT_RESET = simstate.WDT_RESET
DEEPSLEEP_RESET = simstate.DEEPSLEEP_RESET
SOFT_RESET = simstate.SOFT_RESET
PIN_WAKE = simstate.EXT0_WAKE
EXT0_WAKE = simstate.EXT0_WAKE
EXT1_WAKE = simstate.EXT1_WAKE
TIMER_WAKE = simstate.TIMER_WAKE
TOUCHPAD_WAKE = 5
ULP_WAKE = 6
SLEEP = 2
DEEPSLEEP = 4

# ESP32 GPIOs: 20, 24 and 28-31 do not exist; 34-39 are input only.
_NO_PIN = (20, 24, 28, 29, 30, 31)
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_ADC_PINS = (32, 33, 34, 35, 36, 37, 38, 39, 0, 2, 4, 12, 13, 14, 15, 25, 26, 27)


def _pin_id(pin):
    if isinstance(pin, Pin):
        return pin.id
    if not isinstance(pin, int) or pin < 0 or pin > 39 or pin in _NO_PIN:
        raise ValueError("invalid pin")
    return pin


# ------------------------------------------------------------------ system
def reset():
    """Hard reset through esp_restart(): reset_cause() is SOFT_RESET next boot."""
    board.alive()
    board.halt(SOFT_RESET, 0, "machine.reset()")


def deepsleep(time_ms=0):
    """Never returns. The next boot has DEEPSLEEP_RESET and the wake reason."""
    board.alive()
    board.halt(DEEPSLEEP_RESET, max(0, time_ms), "deepsleep(%d)" % time_ms)


def lightsleep(time_ms=0):
    """Stop the CPU until the timer or a wake source; RAM and pins are kept."""
    board.alive()

    def woke():
        w = board._ext_wake()
        if w:
            return w
        for pin in board.irqs:
            irq = board.irqs[pin]
            if irq[3] & SLEEP and board.level(pin) == (1 if irq[1] == Pin.WAKE_HIGH else 0):
                return PIN_WAKE
        return 0

    reason = woke()
    if reason:
        board.wake_reason = reason
        return
    if time_ms <= 0 and not board.events:
        board.halt(DEEPSLEEP_RESET, 0, "lightsleep() with no wake source")
    reason = board.advance(time_ms * 1000 if time_ms > 0 else (1 << 62), woke)
    board.wake_reason = reason or TIMER_WAKE


sleep = lightsleep


def reset_cause():
    board.alive()
    return board.reset_cause


def wake_reason():
    board.alive()
    return board.wake_reason


def unique_id():
    board.alive()
    return bytes(board.uid)


def freq(hz=None):
    board.alive()
    if hz is None:
        return board.cpu_hz
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    board.cpu_hz = hz


def idle():
    board.advance(1000)  # waits for the next interrupt: at most a tick


def disable_irq():
    return 0


def enable_irq(state):
    pass


# ------------------------------------------------------------------ Pin
class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, value=None, drive=None, hold=None):
        self.id = _pin_id(id)
        self.init(mode, pull, value, drive, hold)

    def init(self, mode=-1, pull=-1, value=None, drive=None, hold=None):
        board.alive()
        n = self.id
        if mode != -1 and mode is not None:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN) and n in _INPUT_ONLY:
                raise ValueError("pin can only be input")
            board.modes[n] = mode
            if mode == Pin.IN:
                board.outputs.pop(n, None)
        if pull != -1:
            if pull is None:
                board.pulls.pop(n, None)
            else:
                board.pulls[n] = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            self._set(value)
        elif board.modes.get(n) in (Pin.OUT, Pin.OPEN_DRAIN) and n not in board.outputs:
            self._set(0)
        if hold is True:
            board.held[n] = board.level(n)
        elif hold is False:
            board.held.pop(n, None)

    def _set(self, v):
        n = self.id
        if n in board.held:
            return  # a held pad keeps its level until hold is released
        v = 1 if v else 0
        if board.modes.get(n) == Pin.OPEN_DRAIN and v:
            board.outputs.pop(n, None)  # released: the pull or the outside decides
        else:
            board.outputs[n] = v

    def value(self, v=None):
        board.alive()
        if v is None:
            return board.level(self.id)
        if board.modes.get(self.id) not in (Pin.OUT, Pin.OPEN_DRAIN):
            return  # writing an input pin changes nothing on the pad
        self._set(v)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, wake=None):
        board.alive()
        if handler is None:
            board.irqs.pop(self.id, None)
        else:
            board.irqs[self.id] = [handler, trigger, self, wake or 0]

    def __repr__(self):
        return "Pin(%d)" % self.id


class Signal:
    """Signal(pin, invert=False) on a Pin (or Signal), or Signal(id, mode, ...,
    invert=False) making the Pin from the same arguments (value= is the
    signal's, so inverted for the pin)."""

    def __init__(self, *args, **kw):
        invert = bool(kw.pop("invert", False))
        if args and isinstance(args[0], (Pin, Signal)):
            if len(args) != 1 or kw:
                raise TypeError()
            self.pin = args[0]
        else:
            if invert and "value" in kw:
                kw["value"] = 0 if kw["value"] else 1
            self.pin = Pin(*args, **kw)
        self.invert = invert

    def value(self, v=None):
        if v is None:
            return self.pin.value() ^ self.invert
        self.pin.value((1 if v else 0) ^ self.invert)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    """extmod/machine_pulse.c: wait for the pin to reach pulse_level (timing
    starts at once if it is there), then time how long it stays. -2: it never
    came within timeout_us, -1: it did not end within timeout_us. The pin
    moves only with the world's events, so the wait jumps to the next one."""
    n = _pin_id(pin)
    level = 1 if pulse_level else 0
    nchanges = 2
    start = board.now_us()
    while True:
        t = board.now_us()
        if board.level(n) == level:
            level = 1 - level
            nchanges -= 1
            if nchanges == 0:
                return t - start
            start = t
        else:
            dt = t - start
            if dt >= timeout_us:
                return -nchanges
            board.advance(timeout_us - dt, lambda lv=level: board.level(n) == lv)


# ------------------------------------------------------------------ ADC
class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    # Input range of each attenuation (ESP-IDF recommended ranges), in microvolts.
    FULL_SCALE_UV = (950000, 1250000, 1750000, 2450000)
    CONVERSION_US = 40

    def __init__(self, pin, atten=None):
        board.alive()
        self.id = _pin_id(pin)
        if self.id not in _ADC_PINS:
            raise ValueError("invalid pin")
        self._atten = ADC.ATTN_0DB if atten is None else atten
        self._width = 12

    def atten(self, a=None):
        if a is None:
            return self._atten
        if a not in (0, 1, 2, 3):
            raise ValueError("invalid attenuation")
        self._atten = a

    def width(self, w=None):
        if w is None:
            return self._width
        if w not in (9, 10, 11, 12):
            raise ValueError("invalid width")
        self._width = w

    def _raw12(self):
        board.advance(ADC.CONVERSION_US)
        uv = board.analog.get(self.id, 0)
        fs = ADC.FULL_SCALE_UV[self._atten]
        if uv <= 0:
            return 0
        if uv >= fs:
            return 4095
        return uv * 4095 // fs

    def read(self):
        return self._raw12() >> (12 - self._width)

    def read_u16(self):
        r = self._raw12()
        return (r << 4) | (r >> 8)

    def read_uv(self):
        return self._raw12() * ADC.FULL_SCALE_UV[self._atten] // 4095


# ------------------------------------------------------------------ RTC
class RTC:
    def __init__(self, id=0):
        board.alive()

    def datetime(self, dt=None):
        """(year, month, day, weekday, hours, minutes, seconds, microseconds)"""
        if dt is None:
            us = board.rtc_us()
            t = time.gmtime(us // 1000000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], us % 1000000)
        self._set(dt, 4)

    def _set(self, dt, h):
        # as the port: exactly 8 items, no normalisation (timeutils_seconds_since_epoch)
        if len(dt) != 8:
            raise ValueError("tuple/list has wrong length")
        secs = time.seconds_since_2000(dt[0], dt[1], dt[2], dt[h], dt[h + 1], dt[h + 2])
        board.set_rtc_us(secs * 1000000 + dt[7])

    def init(self, dt):
        # the port reads init()'s tuple with the hour at index 3, not 4 as datetime()
        self._set(dt, 3)

    def memory(self, data=None):
        """Slow RTC memory: kept through deep sleep and reset, lost on power-off."""
        board.alive()
        if data is None:
            return bytes(board.rtc_mem)
        if len(data) > simstate.RTC_MEMORY_MAX:
            raise ValueError("buffer too long")
        board.rtc_mem = bytes(data)


# ------------------------------------------------------------------ WDT
class WDT:
    """Task watchdog: once started it cannot be stopped; unfed, it resets."""

    def __init__(self, id=0, timeout=5000):
        board.alive()
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        board.wdt_timeout_us = timeout * 1000
        self.feed()

    def feed(self):
        board.alive()
        board.wdt_deadline = board.world_us + board.wdt_timeout_us
