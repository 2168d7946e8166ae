# lib/wifi: fast connect from deep sleep on the simulated WLAN, in virtual time.
import machine
import simstate
import time

import eventlog
import rtcmem
import wifi
from ptest import sleep_and_wake

PASS = "correct horse"
BSSID = "a0b1c2d3e4f5"


def home_ap(**kw):
    ap = {"ssid": "home", "bssid": BSSID, "channel": 6, "rssi": -61, "password": PASS}
    ap.update(kw)
    simstate.board.aps = [ap]
    return ap


def region():
    return rtcmem.Region(machine.RTC(), 1792, 64)


class Log:
    """Collects what wifi logs, formatted as eventlog prints it."""

    def __init__(self):
        self.lines = []

    def __call__(self, lvl, tag, fmt="", *args):
        self.lines.append("%s %06d %s: %s" % ("EWID"[lvl], time.ticks_ms(), tag, fmt % args))

    def last(self):
        return eventlog.parse(self.lines[-1])


def node(key=PASS, log=None, **kw):
    return wifi.Wifi("home", key, rtc=region(), log=log or Log(), **kw)


def timed(w, deadline_ms):
    """connect() -> (ok, world ms it took)."""
    t = simstate.board.world_us
    ok = w.connect(deadline_ms)
    return ok, (simstate.board.world_us - t) // 1000


def deepsleep(ms=60000):
    sleep_and_wake(machine.deepsleep, ms)


def test_first_wake_scans_then_connects_with_dhcp_and_caches_the_ap():
    home_ap()
    log = Log()
    w = node(log=log)
    ok, ms = timed(w, 10000)
    assert ok and w.why is None and w.up()
    # radio 100 + scan 13 x 120 + PBKDF2 600 + assoc 80 + DHCP 900, one poll of slack
    assert 3240 <= ms <= 3270 and abs(w.ms - ms) <= 2
    assert (w.rssi, w.channel, w.bssid, w.cached) == (-61, 6, bytes.fromhex(BSSID), False)
    lvl, _, tag, f, _ = log.last()
    assert (lvl, tag, f["rssi"], f["ch"], f["cached"]) == ("I", "wifi", "-61", "6", "0")
    assert int(f["ms"]) == w.ms
    w.off()
    assert not w.wlan.active() and not w.up()


def test_cached_wake_with_psk_and_static_lease_is_under_200_ms():
    key = wifi.psk(PASS, "home")
    home_ap(password=key)  # the AP's key as the node stores it
    w = node(key, static=True)
    assert w.connect(10000)
    first = w.ms
    lease = w.wlan.ifconfig()
    w.off()
    deepsleep()
    log = Log()
    w = node(key, log=log, static=True)
    ok, ms = timed(w, 10000)
    assert ok and w.cached
    assert ms < 200 and w.ms < 200  # radio start 100 + association 80
    assert w.wlan.ifconfig() == lease  # no DHCP: the address it had
    assert log.last()[3]["cached"] == "1"
    assert 2600 <= first <= 2700  # radio + scan + association + DHCP, no PBKDF2


def test_cached_wake_with_passphrase_and_dhcp_still_connects():
    home_ap()
    w = node()
    assert w.connect(10000)
    w.off()
    deepsleep()
    w = node()
    ok, ms = timed(w, 10000)
    assert ok and w.cached
    assert 1650 <= ms <= 1720  # only the search is spared: PBKDF2 and DHCP remain


def test_fixed_static_address_and_psk():
    key = wifi.psk(PASS, "home")
    home_ap(password=key)
    cfg = ("192.168.1.77", "255.255.255.0", "192.168.1.1", "192.168.1.1")
    assert node(key, static=cfg).connect(10000)
    deepsleep()
    w = node(key, static=cfg)
    assert w.connect(10000) and w.ms < 200
    assert w.wlan.ifconfig() == cfg


def test_lease_is_renewed_by_dhcp_every_so_often():
    key = wifi.psk(PASS, "home")
    home_ap(password=key)
    times = []
    for _ in range(5):
        w = node(key, static=True, renew=2)
        assert w.connect(10000)
        times.append(w.ms)
        deepsleep()
    # scan+DHCP, lease, lease, DHCP (renew), lease
    assert times[1] < 200 and times[2] < 200 and times[4] < 200
    assert 1000 < times[3] < 1200


def test_wrong_password():
    home_ap()
    log = Log()
    w = node("wrong password", log=log)
    assert not w.connect(10000)
    assert w.why == "wrong_password" and w.failures == 1
    assert not w.wlan.active()  # radio off again after a failure
    lvl, _, tag, f, _ = log.last()
    assert (lvl, tag, f["why"], int(f["ms"])) == ("W", "wifi", "wrong_password", w.ms)


def test_access_point_absent_reported_within_the_deadline():
    home_ap(up=False)
    w = node()
    ok, ms = timed(w, 10000)
    assert not ok and w.why == "no_ap_found"
    assert ms <= 1700  # radio 100 + one scan: no connect to an AP nobody saw
    assert not w.wlan.active()


def test_slow_or_silent_dhcp_returns_at_the_deadline():
    for dhcp in (8000, None):
        home_ap(dhcp_ms=dhcp)
        w = node()
        t0 = simstate.board.world_us
        assert not w.connect(3000)
        took = simstate.board.world_us - t0
        assert 3000000 <= took <= 3001000, took  # at the deadline, not a poll later
        assert w.why == "dhcp_timeout" and not w.wlan.active()  # associated, no address


def test_deadline_too_short_for_a_scan_tries_a_plain_connect():
    key = wifi.psk(PASS, "home")
    home_ap(password=key)
    cfg = ("192.168.1.77", "255.255.255.0", "192.168.1.1", "192.168.1.1")
    w = node(key, static=cfg)
    ok, ms = timed(w, 1000)
    assert ok and ms < 300 and w.bssid is None  # connected, but nothing to cache
    deepsleep()
    w = node(key)  # DHCP does not fit in 500 ms
    ok, ms = timed(w, 500)
    assert not ok and w.why == "dhcp_timeout" and ms <= 500


def test_ap_moved_channel_keeps_the_cache_and_learns_the_channel():
    home_ap()
    assert node().connect(10000)
    deepsleep()
    home_ap(channel=11)
    w = node()
    assert w.connect(10000) and w.cached and w.channel == 11
    deepsleep()
    w = node()
    assert w.connect(10000) and w.cached and w.channel == 11


def test_ap_replaced_falls_back_to_a_scan_and_caches_the_new_one():
    home_ap()
    assert node().connect(10000)
    deepsleep()
    home_ap(bssid="112233445566", channel=1, rssi=-70)
    log = Log()
    w = node(log=log)
    ok, ms = timed(w, 10000)
    assert ok and not w.cached and w.bssid == bytes.fromhex("112233445566")
    assert log.last()[3]["miss"] == "1" and log.last()[3]["cached"] == "0"
    assert ms < 5000  # failed cached try (a full search) + scan + connect
    deepsleep()
    w = node()
    assert w.connect(10000) and w.cached and w.channel == 1


def test_ap_down_for_a_while_keeps_the_cache():
    home_ap()
    assert node().connect(10000)
    deepsleep()
    home_ap(up=False)
    w = node()
    assert not w.connect(10000) and w.why == "no_ap_found"
    deepsleep()
    home_ap()  # back, same BSSID: no scan needed
    w = node()
    ok, ms = timed(w, 10000)
    assert ok and w.cached and ms < 1800


def test_ap_replaced_with_no_time_left_reports_the_cached_failure():
    home_ap()
    assert node().connect(10000)
    deepsleep()
    home_ap(bssid="112233445566")
    w = node()
    ok, ms = timed(w, 2500)
    assert not ok and w.why == "no_ap_found" and ms <= 2500


def test_strongest_ap_of_the_ssid_is_chosen():
    home_ap()
    simstate.board.aps.append({"ssid": "home", "bssid": "0000000000aa", "channel": 3,
                               "rssi": -48, "password": PASS})
    simstate.board.aps.append({"ssid": "other", "bssid": "0000000000bb", "channel": 1,
                               "rssi": -30, "password": PASS})
    w = node()
    assert w.connect(10000)
    assert w.bssid == bytes.fromhex("0000000000aa") and w.channel == 3 and w.rssi == -48


def test_link_lost_mid_session():
    home_ap()
    b = simstate.board
    log = Log()
    w = node(log=log)
    assert w.connect(10000) and w.up()
    b.schedule(b.world_us + 500000, "ap", "home", False)
    time.sleep_ms(400)
    assert w.up()
    time.sleep_ms(200)
    assert not w.up() and not w.up()
    lost = [line for line in log.lines if " wifi: lost " in line]
    assert len(lost) == 1 and lost[0][0] == "W"  # said once
    w.off()
    assert not w.wlan.active()


def test_backoff_grows_to_its_cap_resets_on_success_and_survives_deep_sleep():
    home_ap(up=False)
    caps = []

    def rand(n):
        caps.append(n)
        return n  # the longest wait the jitter allows

    for i in range(6):
        w = node(base_ms=1000, cap_ms=10000, rand=rand)
        assert w.should_try()  # slept the whole wait: the radio may try again
        assert not w.connect(3000)
        assert w.failures == i + 1
        wait = w.next_attempt_ms()
        assert 0 < wait <= caps[-1] <= 10000
        assert not w.should_try()
        deepsleep(wait // 2)
        w = node(base_ms=1000, cap_ms=10000, rand=rand)
        assert not w.should_try() and 0 < w.next_attempt_ms() <= wait - wait // 2
        deepsleep(wait - wait // 2 + 1)
    assert caps == [1000, 2000, 4000, 8000, 10000, 10000]
    home_ap()
    w = node(base_ms=1000, cap_ms=10000, rand=rand)
    assert w.connect(10000)
    assert w.failures == 0 and w.should_try() and w.next_attempt_ms() == 0
    deepsleep()
    w = node()
    assert w.failures == 0 and w.should_try()


def test_backoff_jitter_is_random_in_0_to_cap():
    home_ap(up=False)
    waits = []
    for _ in range(8):
        w = node(base_ms=60000, cap_ms=60000)  # the default source: os.urandom
        w.connect(2000)
        waits.append(w.next_attempt_ms())
        assert 0 <= waits[-1] <= 60000
    assert len(set(waits)) > 1


def test_rtc_clock_stepped_back_or_forward_does_not_stall_the_radio():
    home_ap(up=False)
    rtc = machine.RTC()
    rtc.datetime((2026, 1, 1, 3, 12, 0, 0, 0))  # set by NTP
    w = node(base_ms=1000, cap_ms=10000, rand=lambda n: n)
    w.connect(3000)
    assert not w.should_try()
    rtc.datetime((2000, 1, 1, 5, 0, 0, 0, 0))  # back to its power-on value
    assert node(base_ms=1000, cap_ms=10000).should_try()
    w = node(base_ms=1000, cap_ms=10000, rand=lambda n: n)
    w.connect(3000)
    assert not w.should_try()
    rtc.datetime((2026, 1, 1, 3, 12, 0, 0, 0))  # NTP steps it forward
    assert node(base_ms=1000, cap_ms=10000).should_try()


def test_corrupted_or_lost_rtc_record_means_a_normal_connect():
    home_ap()
    assert node().connect(10000)
    deepsleep()
    rtc = machine.RTC()
    mem = bytearray(rtc.memory())
    mem[1792 + 12] ^= 0xFF
    rtc.memory(bytes(mem))
    log = Log()
    w = node(log=log)
    assert w.connect(10000) and not w.cached
    assert log.last()[3]["rtc"] == "bad-crc"
    assert node().connect(10000)  # the record is whole again: cached
    b = simstate.board
    b.power_on()  # battery out and in: RTC memory is gone
    assert b.rtc_mem == b""
    w = node()
    assert w.connect(10000) and not w.cached and w.failures == 0
    # a record of another size (older firmware) is ignored, not misread
    region().save(b"\x01\x02\x03")
    w = node(log=log)
    assert w.connect(10000) and not w.cached and log.last()[3]["rtc"] == "bad-size"


def test_other_ssid_in_the_cache_is_not_used():
    home_ap()
    assert node().connect(10000)
    deepsleep()
    simstate.board.aps.append({"ssid": "lab", "bssid": "665544332211", "channel": 9,
                               "password": PASS})
    w = wifi.Wifi("lab", PASS, rtc=region(), log=Log())
    assert w.connect(10000) and not w.cached and w.channel == 9


def test_without_rtc_region_it_still_connects():
    home_ap()
    w = wifi.Wifi("home", PASS, log=Log())
    assert w.connect(10000)
    w.off()
    assert w.connect(10000) and w.cached  # the cache lives in the object


def test_radio_off_after_off_and_off_is_harmless_twice():
    home_ap()
    w = node()
    assert w.connect(10000)
    assert simstate.board.wlan["active"]
    w.off()
    w.off()
    assert not simstate.board.wlan["active"] and not w.wlan.isconnected()


def test_key_and_psk_never_logged_nor_kept_in_rtc_memory():
    key = wifi.psk(PASS, "home")
    log = Log()
    home_ap(password=key)
    for k in (PASS, key):  # a failure with the passphrase, successes with the PSK
        w = node(k, log=log, static=True)
        w.connect(10000)
        w.up()
        w.off()
        deepsleep()
    home_ap(up=False)
    node(PASS, log=log).connect(3000)
    assert len(log.lines) == 3
    mem = machine.RTC().memory()
    for secret in (PASS, key, key[:16]):
        for line in log.lines:
            assert secret not in line
        assert secret.encode() not in mem
    assert key not in repr(node(key))


def test_log_lines_parse_as_eventlog_lines():
    home_ap()
    log = Log()
    w = node(log=log)
    w.connect(10000)
    lvl, ms, tag, f, msg = log.last()
    assert msg.startswith("ok ") and sorted(f) == ["cached", "ch", "ms", "rssi"]
    home_ap(up=False)
    node(log=log).connect(10000)
    lvl, ms, tag, f, msg = log.last()
    assert msg.startswith("fail ") and sorted(f) == ["failures", "miss", "ms", "retry_ms", "why"]
    assert f["why"] == "no_ap_found"


def test_default_log_goes_to_eventlog():
    home_ap()
    w = wifi.Wifi("home", PASS)
    assert w._log is eventlog.log
    assert w.connect(10000)  # prints "I ... wifi: ok ..."


def test_psk_matches_the_ieee_802_11i_vector():
    assert wifi.psk("password", "IEEE") == \
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    try:
        wifi.psk("short", "home")
    except ValueError:
        return
    raise AssertionError("a passphrase under 8 characters must be refused")
