"""The wake cycle over days of virtual time, with the faults a node meets:
Wi-Fi down for hours, the broker down, a sensor missing or corrupt, a wake
that hangs, a power cut, a pin wake, a low battery, a crash loop. Real broker,
real TLS; readings checked by the collector."""

import pytest

import simstate
from petrel.broker import Broker
from petrel.simnode import SimNode

from wakecheck import Receiver, accepted, awake_limits, events, lost_in_power_cuts, summary

H_US = 3600 * 1000000
BUDGET_MS = 10000
WDT_MS = BUDGET_MS + 20000


@pytest.fixture
def own_broker(tmp_path):
    # this test kills and restarts its broker: not the session's
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def run_until_uplink(node, limit=16):
    boots = []
    for _ in range(limit):
        boots += node.run(1)
        s = summary(boots[-1])
        if s and s["uplink"] == "ok":
            break
    return boots


def test_half_a_day_of_faults_on_the_vm(tmp_path, own_broker):
    broker = own_broker

    def drift(board):
        board.sleep_drift_ppm = 20000  # the RC sleep clock runs 2 % slow

    node = SimNode(tmp_path / "flash", broker, "vm", prepare=drift)
    rx = Receiver(broker, node.hmac_key)
    b = node.board
    boots = node.run(20)  # normal: an uplink every 12 samples
    assert [summary(x)["uplink"] for x in boots].count("ok") >= 1

    # Wi-Fi gone for three hours
    b.schedule(b.world_us + 1, "ap", "petrel-lab", False)
    b.schedule(b.world_us + 3 * H_US, "ap", "petrel-lab", True)
    outage = node.run(36)
    tries = [x for x in outage if events(x, "wifi")]
    assert all(summary(x)["uplink"] != "ok" for x in outage[:30]), [summary(x) for x in outage]
    # backoff: far fewer connect attempts than wakes that had a batch due
    assert 1 <= len(tries) <= 14, [summary(x)["uplink"] for x in outage]
    boots += outage + run_until_uplink(node)

    # a sensor missing, then answering with bad CRCs: the battery is still sampled
    b.scenario["sht4x"] = "missing"
    bad = node.run(4)
    b.scenario["sht4x"] = "crc"
    bad += node.run(3)
    b.scenario["sht4x"] = "bug"  # an exception no sensor error covers, inside the driver
    bad += node.run(2)
    assert "TypeError" in bad[-1].output
    b.scenario.pop("sht4x")
    for x in bad:
        assert x.end == "halt" and summary(x)["readings"] == "1", x.output
        assert events(x, "sensor"), x.output
    boots += bad

    # the broker down for an hour and a half
    rx.sub.settle(1.0)  # what the broker acknowledged reaches the checker before it dies
    broker.kill()
    down = node.run(18)
    assert not any(summary(x)["uplink"] == "ok" for x in down)
    before = rx.sub.subscribed
    broker.restart()
    assert rx.sub.reconnected(before)  # the checker must be listening again first
    boots += down + run_until_uplink(node)

    # the broker frozen (SIGSTOP): the wake gives up within its budget
    broker.pause()
    frozen = run_until_uplink(node, 13)
    broker.resume()
    tried = [x for x in frozen if (summary(x) or {}).get("uplink", "-").startswith("broker:")]
    assert tried and all(x.awake_ms <= BUDGET_MS + 2000 for x in tried), [x.awake_ms for x in tried]
    boots += frozen + run_until_uplink(node)

    # a wake that hangs: the watchdog ends it, the next wake says so
    b.scenario["sht4x"] = "hang"
    hung = node.run(1)
    b.scenario.pop("sht4x")
    after = node.run(2)
    assert hung[0].halt_cause == simstate.WDT_RESET
    assert after[0].reset_cause == simstate.WDT_RESET
    assert "watchdog reset" in after[0].output
    boots += hung + after + run_until_uplink(node)

    on_grid = boots[-12:]  # the last wakes before the power cut forgets the drift
    # a power cut in the second sleep after an uplink
    b.schedule(b.world_us + 2 * 300 * 1000000 + 5000000, "power_cut")
    boots += node.run(4)
    # the alarm contact closes mid-sleep: the node wakes and sends at once
    b.schedule(b.world_us + 100 * 1000000, "pin", 33, 0)
    b.schedule(b.world_us + 101 * 1000000, "pin", 33, 1)
    pin = node.run(2)
    assert pin[1].wake_reason == simstate.EXT0_WAKE and summary(pin[1])["uplink"] == "ok", pin[1].output
    boots += pin + run_until_uplink(node)

    assert len(boots) >= 100
    assert all(x.end == "halt" for x in boots)
    worst = awake_limits(boots, BUDGET_MS, WDT_MS)
    assert worst <= WDT_MS + 100

    rx.sub.settle()
    rx.collect()
    assert summary(boots[-1])["queue"] == "0"
    gone = lost_in_power_cuts(boots)
    assert 1 <= len(gone) <= 3  # the wakes between the last uplink and the cut
    kept = [boots[k] for k in range(len(boots)) if k not in gone]
    for ch, scale in (("t", 100), ("bat", 1000)):
        # every reading taken arrived once, in order, but those the cut took
        # (only in RTC memory: at most one block by the outbox's design)
        assert rx.values(ch, scale) == accepted(kept, ch), ch
    assert rx.health, "no health record arrived"
    # the hung wake was reported (counters run since power-on: the cut reset them)
    assert any(h["wdt"] == 1 and h["crash"] == 1 for h in rx.health), rx.health
    assert rx.health[-1]["crash"] == 0 and any(h["wake"] == "ext0" for h in rx.health)
    assert all(h["fw"] and h["q"] >= 0 and h["batt"] == 3000 for h in rx.health)
    # the schedule learnt the 2 % drift (6 s a sleep): wakes land on the 5-minute grid
    offs = []
    for x in on_grid:
        if x.wake_reason != simstate.TIMER_WAKE:
            continue
        t = b.true_unix_at_start + x.start_us / 1e6
        off = (t + 150) % 300 - 150
        offs.append(off)
    assert len(offs) >= 10 and max(abs(o) for o in offs) < 1.0, offs
    # the power cut emptied RTC memory but not the drift kept on flash: once
    # the power-on wake has set the clock, wakes are back on the grid at once
    cut = [k for k in range(1, len(boots)) if boots[k].reset_cause == simstate.PWRON_RESET][-1]
    after = [x for x in boots[cut + 1:] if x.wake_reason == simstate.TIMER_WAKE]
    offs = [(b.true_unix_at_start + x.start_us / 1e6 + 150) % 300 - 150 for x in after[1:]]
    assert len(offs) >= 5 and max(abs(o) for o in offs) < 2.0, offs
    rx.close()
