"""The world outside the simulated chip: scheduled events and the levels on its
pins. One part of simstate.Board.

A test scripts the world with schedule(): a pin driven from outside, an analog
level, an access point going down or up, a power cut. Events are applied as
virtual time passes (simclock.py: advance, deep sleep); a pin change runs the
firmware's IRQ handler while awake, and a wake level ends a deep sleep.

A mixin: Board (simboard.py) holds the state. From the clock part it uses
halt() and _callback() (simclock.py).
"""

from simclock import PWRON_RESET, EXT0_WAKE, EXT1_WAKE


class Pins:
    """Scheduled events, pin levels and wake levels of simstate.Board (a mixin)."""

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

    def _ext_wake(self):
        """The wake reason the ext0/ext1 levels give now (deep and light sleep), else 0."""
        if self.ext0 is not None and self.level(self.ext0[0]) == self.ext0[1]:
            return EXT0_WAKE
        if self.ext1 is not None:
            pins, high = self.ext1
            levels = [self.level(p) for p in pins]
            if (high and 1 in levels) or (not high and pins and 1 not in levels):
                return EXT1_WAKE
        return 0

