"""What a run of the wake cycle must hold, read from the serial log and from
what the broker received (verified by the collector, not by Petrel's code)."""

import eventlog
import simstate
from petrel import collector

from mqttcheck import Subscriber


def events(boot, tag=None):
    out = []
    for line in boot.output.splitlines():
        e = eventlog.parse(line)
        if e and (tag is None or e[2] == tag):
            out.append(e[3])
    return out


def summary(boot):
    """The boot's wake summary line (fields), or None (crash, hang, REPL)."""
    w = events(boot, "wake")
    return w[-1] if w else None


class Receiver:
    """Everything the node publishes, verified: readings per channel in time
    order, health records, the retained status."""

    def __init__(self, broker, key, device="node-1"):
        self.sub = Subscriber(broker, "petrel/%s/#" % device)
        self.verifier = collector.Verifier({device: key})
        self.device = device
        self.readings = {}  # channel -> {time: value}
        self.health = []
        self.rejected = []
        self.seen = 0

    def collect(self):
        msgs = self.sub.messages
        while self.seen < len(msgs):
            topic, payload, retain = msgs[self.seen]
            self.seen += 1
            kind = topic.rsplit("/", 1)[-1]
            if kind == "status":
                continue
            try:
                got = self.verifier.accept(payload, "health" if kind == "health" else "senml")
            except collector.Rejected as e:
                self.rejected.append(str(e))  # a QoS 1 repeat is a replay: dropped
                continue
            if kind == "health":
                self.health.append(got)
                continue
            for name, _unit, value, t in got:
                ch = name.split("/", 1)[1]
                self.readings.setdefault(ch, {})[round(t)] = value
        return self

    def values(self, ch, scale):
        d = self.readings.get(ch, {})
        return [round(d[t] * scale) for t in sorted(d)]

    def close(self):
        self.sub.close()


def accepted(boots, ch):
    """Values of a channel the node took, in order, from its `sample:` lines."""
    out = []
    for b in boots:
        for s in events(b, "sample"):
            v = s.get(ch, "-")
            if v != "-":
                out.append(int(v))
    return out


def true_unix(board, world_us):
    return board.true_unix_at_start + world_us / 1e6


def grid_offsets(board, boots, interval_s):
    """Seconds (true time) from each timer wake's start to the nearest point of
    the interval grid: 0 for a schedule that lands on it."""
    out = []
    for b in boots:
        if b.wake_reason == simstate.TIMER_WAKE:
            out.append((true_unix(board, b.start_us) + interval_s / 2) % interval_s - interval_s / 2)
    return out


def awake_limits(boots, budget_ms, wdt_ms):
    """No wake longer than its network budget plus a margin for the rest; a
    wake that hung ends at the watchdog."""
    worst = 0
    for b in boots:
        limit = wdt_ms + 100 if b.halt_cause == simstate.WDT_RESET else budget_ms + 2000
        assert b.awake_ms <= limit, (b, b.awake_ms, b.output[-2000:])
        worst = max(worst, b.awake_ms)
    return worst


def first_difference(a, b):
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i, a[max(0, i - 3):i + 4], b[max(0, i - 3):i + 4]
    return len(a), len(a), len(b)


def lost_in_power_cuts(boots):
    """Indexes of the boots whose readings were only in RTC memory when the
    power was cut: those after the last complete uplink (queue empty) before a
    power-on boot. The outbox keeps new readings in RTC memory until a block
    fills (lib/outbox), so a cut loses at most that."""
    lost = set()
    for i in range(1, len(boots)):
        if boots[i].reset_cause != simstate.PWRON_RESET:
            continue
        j = i - 1
        while j >= 0 and (summary(boots[j]) or {}).get("uplink") != "ok":
            j -= 1
        assert j >= 0 and summary(boots[j])["queue"] == "0", "precondition: RTC holds all that is lost"
        lost.update(range(j + 1, i))
    return lost
