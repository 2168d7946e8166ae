"""The simulated board's energy ledger: one part of simstate.Board.

Every microsecond of virtual time is booked to exactly one of PHASES, for the
energy model (tools/petrel/energy.py): "boot" (reset to boot.py,
board.boot_us), "cpu" (awake, radio off), "radio" (station active, or socket
traffic), "tls" (the handshake charge of socket.py), "sleep" (deep sleep).
Phases a simulation cannot time (association, DHCP, a handshake on the chip)
take figures from the board profile, never host timings.

A mixin: Board (simboard.py) holds the state (ledger, ledger_us, phase,
tx_bytes, rx_bytes; an active `wlan` is radio time). From the clock part it
uses advance() (simclock.py).
"""

PHASES = ("boot", "cpu", "radio", "tls", "sleep")


class Ledger:
    """Where the virtual time of simstate.Board went, by phase (a mixin)."""

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
