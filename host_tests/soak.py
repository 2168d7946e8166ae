"""The long run behind `make soak`: weeks of wakes with random faults, the
same invariants as the wake-cycle tests (host_tests/host/test_wake*.py keep a
week of it in `make test`).

    python host_tests/soak.py [--days 30] [--interpreter cpython|vm] [--seed 1]

Faults, drawn from the seed: Wi-Fi outages (1-8 h), the broker killed for up
to 3 h, the sensor missing, corrupt or raising for a few hours, a hung wake,
a power cut in a sleep just after a complete uplink, the alarm contact.
Checked at the end: every wake ended in deep sleep within its budget (the
hung ones at the watchdog); every temperature and battery reading arrived once
and in order, but those only in RTC memory at a power cut; exit 1 otherwise.
"""

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "host_tests" / "host")]

from petrel import harness  # noqa: E402

harness.install()

import simstate  # noqa: E402
from petrel.broker import Broker  # noqa: E402
from petrel.simnode import SimNode  # noqa: E402

from wakecheck import Receiver, accepted, awake_limits, events, lost_in_power_cuts, summary  # noqa: E402

H_US = 3600 * 1000000
SENSOR_FAULTS = ("missing", "crc", "bug", "nack")


def soak(days, interpreter, seed, out=sys.stdout):
    rnd = random.Random(seed)
    wakes = days * 288
    with tempfile.TemporaryDirectory(prefix="petrel-soak-") as tmp, \
            Broker(Path(tmp) / "broker") as broker:
        def prepare(board):
            board.sleep_drift_ppm = rnd.choice((-20000, -5000, 8000, 25000))
            t = 0
            while t < days * 24 * H_US:  # Wi-Fi outages, one every 1-3 days
                t += rnd.randrange(24, 72) * H_US
                board.schedule(t, "ap", "petrel-lab", False)
                board.schedule(t + rnd.randrange(1, 9) * H_US, "ap", "petrel-lab", True)
            for _ in range(days // 2):  # the alarm contact, now and then
                at = rnd.randrange(0, days * 24 * H_US)
                board.schedule(at, "pin", 33, 0)
                board.schedule(at + 2000000, "pin", 33, 1)

        node = SimNode(Path(tmp) / "flash", broker, interpreter, prepare=prepare)
        rx = Receiver(broker, node.hmac_key)
        b = node.board
        boots = []
        broker_back = None  # boot index at which the killed broker returns
        sensor_back = None
        cuts = hangs = kills = 0
        t0 = time.monotonic()
        while len(boots) < wakes:
            i = len(boots)
            if broker_back is None and rnd.random() < 1 / 500:
                # what the broker acknowledged reaches the checker before it dies
                # (the test broker keeps nothing on disk: persistence false)
                rx.sub.settle(1.0)
                broker.kill()
                kills += 1
                broker_back = i + rnd.randrange(6, 36)
            elif broker_back is not None and i >= broker_back:
                before = rx.sub.subscribed
                broker.restart()
                rx.sub.reconnected(before)
                broker_back = None
            if sensor_back is None and rnd.random() < 1 / 400:
                b.scenario["sht4x"] = rnd.choice(SENSOR_FAULTS)
                sensor_back = i + rnd.randrange(3, 48)
            elif sensor_back is not None and i >= sensor_back:
                b.scenario.pop("sht4x", None)
                sensor_back = None
            if sensor_back is None and rnd.random() < 1 / 1500:
                b.scenario["sht4x"] = "hang"
                hangs += 1
                boots += node.run(1)
                b.scenario.pop("sht4x")
                continue
            boots += node.run(1)
            s = summary(boots[-1])
            if s and s["uplink"] == "ok" and s["queue"] == "0" and rnd.random() < 1 / 40:
                b.schedule(b.world_us + 310 * 1000000, "power_cut")  # in the second sleep
                cuts += 1
        if broker_back is not None:
            before = rx.sub.subscribed
            broker.restart()
            rx.sub.reconnected(before)
        b.scenario.pop("sht4x", None)
        for _ in range(400):  # until the last readings are out (an outage may still run)
            s = summary(boots[-1])
            if s and s["uplink"] == "ok" and s["queue"] == "0":
                break
            boots += node.run(1)
        elapsed = time.monotonic() - t0
        rx.sub.settle()
        rx.collect()
        failures = []
        if not all(x.end == "halt" for x in boots):
            failures.append("a wake did not end in deep sleep")
        try:
            worst = awake_limits(boots, 10000, 30000)
        except AssertionError as e:
            failures.append("a wake overran its budget: %s" % str(e)[:200])
            worst = -1
        lost_total = 0
        gone = lost_in_power_cuts(boots)
        kept = [boots[k] for k in range(len(boots)) if k not in gone]
        for ch, scale in (("t", 100), ("bat", 1000)):
            took = accepted(boots, ch)
            want = accepted(kept, ch)
            lost_total += len(took) - len(want)
            got = rx.values(ch, scale)
            if got != want:
                failures.append("%s: %d arrived, %d expected; first difference: %s"
                                % (ch, len(got), len(want), where(kept, ch, got, want)))
        wdt = sum(1 for x in boots if x.halt_cause == simstate.WDT_RESET)
        uplinks = sum(1 for x in boots if (summary(x) or {}).get("uplink") == "ok")
        out.write("soak: %d days, %s, seed %d: %d wakes in %.0f s; %d uplinks, %d health records\n"
                  % (days, interpreter, seed, len(boots), elapsed, uplinks, len(rx.health)))
        out.write("faults: %d broker kills, %d hung wakes (%d watchdog resets), %d power cuts "
                  "(%d readings only in RTC memory lost), Wi-Fi outages and sensor faults as drawn\n"
                  % (kills, hangs, wdt, cuts, lost_total))
        out.write("worst awake %.0f ms; readings t %d, bat %d arrived in order; %d messages refused "
                  "by the collector %s\n" % (worst, len(rx.values("t", 100)), len(rx.values("bat", 1000)),
                                              len(rx.rejected), sorted(set(rx.rejected))[:3]))
        if failures:  # two readings of a channel at one time would be one to any consumer
            stamps = {}
            for x in kept:
                for e in events(x, "sample"):
                    if e.get("bat", "-") != "-":
                        stamps.setdefault(e.get("at"), []).append(x.number)
            dup = [(k, v) for k, v in stamps.items() if len(v) > 1]
            out.write("readings sharing a timestamp: %s\n" % dup[:5])
        rx.close()
        for f in failures:
            out.write("FAIL %s\n" % f)
        return not failures


def where(boots, ch, got, want):
    """The wake that took the first reading missing from what arrived, and its
    neighbours' summaries, for whoever has to find out why."""
    i = 0
    while i < min(len(got), len(want)) and got[i] == want[i]:
        i += 1
    n = 0
    for k, b in enumerate(boots):
        n += len(accepted([b], ch))
        if n > i:
            lines = []
            for x in boots[max(0, k - 3):k + 3]:
                lines.append("boot %d %s %s" % (x.number, x.reset_cause, summary(x)))
            at = [e.get("at") for e in events(b, "sample")]
            return "reading %d (%s vs %s), taken at boot %d (at=%s):\n  %s" % (
                i, got[i:i + 3], want[i:i + 3], b.number, at, "\n  ".join(lines))
    return "at the end (%d vs %d)" % (len(got), len(want))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--interpreter", choices=("cpython", "vm"), default="cpython")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    return 0 if soak(a.days, a.interpreter, a.seed) else 1


if __name__ == "__main__":
    sys.exit(main())
