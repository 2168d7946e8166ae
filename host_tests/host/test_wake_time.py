"""Every reading dated right or sent undated, across power cuts (lib/clock:
a relative stamp is dated only with its own power-on's offset). On the VM,
against a real broker, readings checked by the collector's verifier.

A node powered on with a low battery (no radio; every reading goes to flash
at once) is cut; powered on again, still low, then its battery is fine and a
sync sets its clock, but the broker refuses its key; cut again; powered on
with everything working, it sends all it kept. The first power-on never
learnt the time: its readings arrive undated. The second learnt it after
its readings were taken: they arrive dated, at the time they were taken."""

import json

import simstate
from petrel.simnode import SimNode, node_config

from wakecheck import Receiver, accepted, events, summary, taken_at

STAMP_S = 3  # NTP's whole seconds, and the wake's own time


def cut(node):
    """The power cut early in the next boot: that boot takes nothing."""
    b = node.board
    b.schedule(b.world_us + 1000, "power_cut")
    x = node.run(1)
    assert not events(x[0], "sample"), x[0].output


def test_no_reading_is_given_a_wrong_date_across_power_cuts(tmp_path, broker):
    # named layout: the channel's name in every record, read the same way
    cfg = node_config(broker, "psk", uplink_every=1, senml_layout="named")
    node = SimNode(tmp_path / "flash", broker, "vm", config=cfg)
    rx = Receiver(broker, node.hmac_key)
    b = node.board
    b.scenario["batt_mv"] = 2650  # low: no radio, readings flushed to flash
    never = node.run(3)  # a power-on that never learns the time
    assert all(summary(x)["uplink"] == "low-battery" for x in never)
    cut(node)
    later = node.run(3)  # the next power-on, still low
    assert later[0].reset_cause == simstate.PWRON_RESET
    good = node.read_file("secrets.json")
    bad = json.loads(good)
    bad["psk_key"] = "ff" * 16
    node.write_file("secrets.json", json.dumps(bad))
    b.scenario["batt_mv"] = 3000
    synced = node.run(1)  # the clock is set; the broker refuses the key
    assert events(synced[0], "clock") and summary(synced[0])["uplink"].startswith("broker:tls"), \
        synced[0].output
    node.write_file("secrets.json", good)
    cut(node)  # the synced wake's reading was in RTC memory: gone with it
    back = node.run(2)
    assert back[0].reset_cause == simstate.PWRON_RESET
    assert all(summary(x)["uplink"] == "ok" for x in back), back[0].output
    assert summary(back[-1])["queue"] == "0"
    rx.sub.settle()
    rx.collect()
    rx.close()
    assert not rx.rejected and not rx.conflicts, (rx.rejected, rx.conflicts)
    for ch, scale in (("t", 100), ("bat", 1000)):
        assert rx.values(ch, scale) == accepted(never + later + back, ch), ch
        got = rx.arrived(ch)
        first = got[:len(accepted(never, ch))]
        assert [(r.quality, r.time) for r in first] == [("undated", None)] * len(first), first
        rest = got[len(first):]
        assert set(r.quality for r in rest) == {"dated"}, rest
        off = [r.time - t for r, t in zip(rest, taken_at(b, later + back, ch))]
        assert len(off) == len(rest) and max(abs(o) for o in off) < STAMP_S, (ch, off)
