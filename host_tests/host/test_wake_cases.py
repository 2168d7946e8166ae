"""The wake cycle's ladder and policies on both interpreters, and a week of
wakes under CPython: safe mode entered and left, the maintenance pin, the
battery policy, and a long run with faults."""

import pytest

import simstate
from petrel.simnode import SimNode

from wakecheck import Receiver, accepted, awake_limits, events, first_difference, summary

INTERPRETERS = ["cpython", "vm"]
H_US = 3600 * 1000000


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_crash_loop_enters_safe_mode_and_a_fix_leaves_it(tmp_path, broker, interp):
    node = SimNode(tmp_path / "flash", broker, interp)
    ok = node.run(2)
    assert all(summary(x) for x in ok)
    # a bad deploy: the outbox library now raises when a reading is appended
    good = node.read_file("lib/outbox.py")
    node.write_file("lib/outbox.py", good.replace(
        "    def append(self, payload, t):",
        "    def append(self, payload, t):\n        raise RuntimeError('bad deploy')", 1))
    crashed = node.run(3)
    for i, x in enumerate(crashed):
        assert x.end == "halt" and x.halt_cause == simstate.DEEPSLEEP_RESET
        crash = events(x, "crash")
        assert crash and crash[0]["streak"] == str(i + 1), x.output
        assert "RuntimeError: bad deploy" in x.output  # the traceback, whole, on the serial log
    assert "bad deploy" in node.read_file("crash.log")
    safe = node.run(6)
    assert "entered after 3 crashed wakes" in safe[0].output
    for x in safe:
        assert events(x, "safe") and not events(x, "sample"), x.output
        assert x.sleep_ms == 3600000  # safe mode sleeps long
        # and says so through the cycle's own session: retained "safe", a health record
        assert "safe: reported" in x.output, x.output
    # still broken when safe mode ends: one try, one crash, safe mode again
    again = node.run(2)
    assert events(again[0], "crash") and "entered after" in again[1].output
    # the technician deploys a fix and a new configuration: safe mode left at once
    node.write_file("lib/outbox.py", good)
    cfg = dict(node.config, sample_s=600)
    node.write_config(cfg)
    fixed = node.run(3)
    assert "left: configuration or firmware changed" in fixed[0].output
    assert all(summary(x) and not events(x, "crash") for x in fixed), fixed[0].output
    assert fixed[-1].sleep_ms > 500000  # the new interval


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_maintenance_pin_keeps_the_node_awake_at_the_repl(tmp_path, broker, interp):
    node = SimNode(tmp_path / "flash", broker, interp)
    node.run(1)
    node.board.inputs[0] = 0  # the technician holds BOOT through the next wake
    boots = node.run(2)
    assert len(boots) == 1 and boots[0].end == "repl"
    assert "maintenance: pin held at boot" in boots[0].output
    assert node.board.wdt_deadline is None  # no watchdog armed behind the technician's back


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_low_battery_stops_the_radio_and_critical_protects_the_cells(tmp_path, broker, interp):
    node = SimNode(tmp_path / "flash", broker, interp)
    b = node.board
    b.scenario["batt_mv"] = 2650
    low = node.run(14)
    assert all(summary(x)["uplink"] == "low-battery" for x in low)
    assert all(not events(x, "wifi") for x in low)
    assert all(1190000 < x.sleep_ms <= 1200000 for x in low[1:])  # 4 x 300 s
    assert "mode=low" in low[0].output
    b.scenario["batt_mv"] = 2400
    crit = node.run(2)
    assert all(summary(x)["readings"] == "0" and x.sleep_ms == 21600000 for x in crit)
    # new cells: every reading taken while low arrives
    rx = Receiver(broker, node.hmac_key)
    b.scenario["batt_mv"] = 3000
    back = node.run(1)
    assert summary(back[0])["uplink"] == "ok" and summary(back[0])["queue"] == "0"
    rx.sub.settle()
    rx.collect()
    assert rx.values("t", 100)[-15:] == accepted(low + back, "t")
    rx.close()


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_a_node_provisioned_without_channels_samples_what_its_board_carries(tmp_path, broker, interp):
    node = SimNode(tmp_path / "flash", broker, interp)
    cfg = dict(node.config)
    del cfg["channels"], cfg["alarms"]
    node.write_config(cfg)
    boots = node.run(2)
    assert "no channels in config.json: the board's (t rh bat)" in boots[0].output
    for x in boots:
        s = events(x, "sample")[0]
        assert set(s) == {"t", "rh", "bat", "at"} and s["bat"] == "3000", x.output


def test_a_node_without_its_keys_keeps_sampling_and_says_why(tmp_path, broker):
    node = SimNode(tmp_path / "flash", broker, "cpython")
    node.write_file("secrets.json", "{}")
    boots = node.run(13)
    assert all(x.end == "halt" and not events(x, "crash") for x in boots)
    assert summary(boots[0])["uplink"] == "no-key" and "'hmac_key' is missing" in boots[0].output
    assert summary(boots[-1])["queue"] == str(3 * 13)  # every reading kept for when it can go


def test_a_refused_key_is_counted_and_reported_once_the_broker_takes_us_again(tmp_path, broker):
    import json

    node = SimNode(tmp_path / "flash", broker, "vm")  # TLS-PSK: the VM has it
    rx = Receiver(broker, node.hmac_key)
    node.run(1)  # the power-on wake's uplink
    good = node.read_file("secrets.json")
    bad = json.loads(good)
    bad["psk_key"] = "ff" * 16  # a key the broker does not know for this identity
    node.write_file("secrets.json", json.dumps(bad))
    refused = node.run(12)
    s = summary(refused[-1])
    assert s["uplink"].startswith("broker:tls"), refused[-1].output
    node.write_file("secrets.json", good)
    back = node.run(14)
    assert any(summary(x)["uplink"] == "ok" for x in back)
    rx.sub.settle()
    rx.collect()
    assert rx.health[-1]["auth"] == 1 and not rx.rejected
    # nothing taken while refused was lost: all arrived but what is still queued
    queued = int(summary(back[-1])["queue"]) // 3  # three channels a wake
    took = accepted(node.runner.boots, "t")
    assert rx.values("t", 100) == took[:len(took) - queued]
    rx.close()


def test_three_days_of_wakes_with_faults_under_cpython(tmp_path, broker):
    """864 wakes (3 days at 5 minutes) in one process, with Wi-Fi down 5 h
    every day, a sensor gone for half a day, and a hung wake (make soak runs
    a month of such wakes under CPython)."""
    def prepare(board):
        board.sleep_drift_ppm = -15000  # this chip's sleep clock runs fast
        for day in range(3):
            board.schedule(day * 24 * H_US + 20 * H_US, "ap", "petrel-lab", False)
            board.schedule(day * 24 * H_US + 25 * H_US, "ap", "petrel-lab", True)

    node = SimNode(tmp_path / "flash", broker, "cpython", prepare=prepare)
    rx = Receiver(broker, node.hmac_key)
    boots = node.run(288)
    node.board.scenario["sht4x"] = "missing"
    boots += node.run(144)
    node.board.scenario["sht4x"] = "hang"
    boots += node.run(1)
    node.board.scenario.pop("sht4x")
    boots += node.run(864 - len(boots))
    for _ in range(30):  # until the last readings are out
        if summary(boots[-1]) and summary(boots[-1])["uplink"] == "ok":
            break
        boots += node.run(1)
    assert len(boots) >= 864
    assert all(x.end == "halt" for x in boots)
    awake_limits(boots, 10000, 30000)
    assert sum(1 for x in boots if x.halt_cause == simstate.WDT_RESET) == 1
    rx.sub.settle()
    rx.collect()
    for ch, scale in (("t", 100), ("bat", 1000)):
        got, took = rx.values(ch, scale), accepted(boots, ch)
        assert got == took, (ch, first_difference(got, took))  # nothing lost, in order
    # on the grid after the drift is learnt, whatever the outages
    late = [x for x in boots[-288:] if x.wake_reason == simstate.TIMER_WAKE]
    offs = [(node.board.true_unix_at_start + x.start_us / 1e6 + 150) % 300 - 150 for x in late]
    # NTP gives whole seconds, so the drift estimate is good to a few hundred
    # ppm and the boot before the application takes its share: a few seconds
    # off the grid, even after a 5 h outage without a sync (uncorrected, 1.5 %
    # fast gains 4.5 s a wake, 54 s an hour)
    assert max(abs(o) for o in offs) < 5.0, offs
    rx.close()


def _hostile(good, channel_filter_json):
    """good's text with channel t's filters replaced by raw JSON text: 1e999
    and 10**30 as the node reads them (Python's json would write Infinity)."""
    import json

    cfg = json.loads(json.dumps(good))
    cfg["channels"][0]["filters"] = ["__HOSTILE__"]
    return json.dumps(cfg).replace('"__HOSTILE__"', channel_filter_json)


# each escaped config.load before issue 14 (OverflowError; never ended;
# MemoryError after 6.5 s on the VM; RuntimeError on the VM)
HOSTILE_FILES = (
    ("'value'", '{"offset": 1e999}'),
    ("'accuracy_decimals'", '{"round": 1%s}' % ("0" * 30)),
    ("'degree'", '{"calibrate_polynomial": {"degree": 120, "datapoints": [%s]}}'
     % ", ".join("[%d, %d]" % (i, i) for i in range(121))),
    ("nested more than", '{"or": [' * 200 + '{"delta": 1}' + ']}' * 200),
)


def test_a_hostile_config_falls_back_to_the_last_good_one_and_loses_nothing(tmp_path, broker):
    node = SimNode(tmp_path / "flash", broker, "vm")
    rx = Receiver(broker, node.hmac_key)
    boots = node.run(2)  # the power-on wake's uplink; config.good.json kept
    assert all(summary(x) for x in boots) and node.read_file("config.good.json")
    for key, flt in HOSTILE_FILES:
        node.write_file("config.json", _hostile(node.config, flt))  # a bad deploy
        bad = node.run(4)
        for x in bad:
            assert x.end == "halt" and x.halt_cause == simstate.DEEPSLEEP_RESET, x.output[-2000:]
            said = [e for e in x.output.splitlines() if "using the last good configuration" in e]
            assert said and "config.json: channels[0]: channel 't', filter 1" in said[0] and key in said[0], \
                x.output[-2000:]
            assert not events(x, "crash") and summary(x), x.output[-2000:]
            assert 299000 <= x.sleep_ms <= 300000  # the good file's schedule, not a crash's sleep
        boots += bad
    # 16 wakes on the fallback: an uplink went out among them, on time, within the budget
    assert any(summary(x)["uplink"] == "ok" for x in boots[2:])
    assert sum(1 for x in boots if x.halt_cause == simstate.WDT_RESET) == 0
    awake_limits(boots, 10000, 30000)
    node.write_config(node.config)  # the fix
    for _ in range(13):  # until the next uplink has sent everything
        boots += node.run(1)
        if summary(boots[-1])["uplink"] == "ok":
            break
    assert summary(boots[-1])["uplink"] == "ok" and summary(boots[-1])["queue"] == "0", boots[-1].output
    rx.sub.settle()
    rx.collect()
    assert not rx.rejected and not rx.conflicts
    for ch, scale in (("t", 100), ("rh", 10), ("bat", 1000)):
        got, took = rx.values(ch, scale), accepted(boots, ch)
        assert got == took, (ch, first_difference(got, took))  # every reading taken arrived, once
    rx.close()


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_a_hang_while_reading_the_configuration_ends_at_the_watchdog(tmp_path, broker, interp):
    from app import ladder

    node = SimNode(tmp_path / "flash", broker, interp)
    node.run(1)
    good = node.read_file("app/config.py")
    # a checker stuck for two minutes (round 10**30 never ended): the clock
    # moves, and only the watchdog can end it (bounded, so that a regression
    # fails here instead of hanging the suite)
    node.write_file("app/config.py", good.replace(
        "def _load(path, secrets_path, good_path):\n",
        "def _load(path, secrets_path, good_path):\n    import time\n    for _ in range(1200):\n"
        "        time.sleep_ms(100)\n", 1))
    hung = node.run(1)[0]
    assert hung.end == "halt" and hung.halt_cause == simstate.WDT_RESET, hung.output[-2000:]
    assert ladder.LOAD_WDT_MS <= hung.awake_ms <= ladder.LOAD_WDT_MS + 1000  # not the wake's 30 s
    node.write_file("app/config.py", good)
    after = node.run(1)[0]
    assert "watchdog reset: the last wake hung crash_streak=1" in after.output
    assert summary(after) and after.halt_cause == simstate.DEEPSLEEP_RESET
