"""What a run of the wake cycle must hold, read from the serial log and from
what the broker received (verified by the collector's verifier, not by
Petrel's code)."""

from decimal import Decimal

import eventlog
import simstate
from petrel import verify

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
    """Everything the node publishes, verified (petrel.verify): each reading
    once per channel and reading id, health records, the retained status."""

    def __init__(self, broker, key, device="node-1"):
        self.sub = Subscriber(broker, "petrel/%s/#" % device)
        self.verifier = verify.Verifier({device: key})
        self.device = device
        self.readings = {}  # channel -> {reading id: verify.Reading}
        self.health = []  # {field: value}, in arrival order
        self.health_at = []  # the node's time in each (bt), None when its clock was unknown
        self.rejected = []  # refusals: none is expected
        self.repeats = 0  # messages delivered again (QoS 1, same COSE seq): the store drops them
        self.conflicts = []  # a reading sent again with another value or date
        self.seqs = set()
        self.seen = 0

    def collect(self):
        msgs = self.sub.messages
        while self.seen < len(msgs):
            topic, payload, retain = msgs[self.seen]
            self.seen += 1
            if topic.rsplit("/", 1)[-1] == "status":
                continue
            try:
                m = self.verifier.open(topic, payload)
            except verify.Rejected as e:
                self.rejected.append(str(e))
                continue
            if m.seq in self.seqs:
                self.repeats += 1
                continue
            self.seqs.add(m.seq)
            if m.kind == "health":
                self.health.append(m.health)
                self.health_at.append(m.time)
                continue
            for r in m.readings:
                got = self.readings.setdefault(r.channel, {})
                old = got.get(r.rid)
                if old is not None and (old.exact, old.quality == "dated" and old.time) != \
                        (r.exact, r.quality == "dated" and r.time):
                    self.conflicts.append((old, r))
                got[r.rid] = r
        return self

    def arrived(self, ch):
        """A channel's readings in the order the node took them (by id)."""
        d = self.readings.get(ch, {})
        return [d[k] for k in sorted(d)]

    def values(self, ch, scale):
        """A channel's values in 1/scale units, in the order taken; each must
        be exact (an int at that scale)."""
        out = []
        for r in self.arrived(ch):
            v = Decimal(r.exact) * scale
            assert v == int(v), (ch, r)  # what the node measured, not an approximation
            out.append(int(v))
        return out

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


def taken_at(board, boots, ch):
    """The true time of each reading of a channel the node took (its wake's start)."""
    out = []
    for b in boots:
        for s in events(b, "sample"):
            if s.get(ch, "-") != "-":
                out.append(true_unix(board, b.start_us))
    return out


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
