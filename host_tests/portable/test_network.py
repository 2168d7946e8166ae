# The fake WLAN station: scripted access points, every phase in virtual time.
import network
import simstate
import time


def home_ap(**kw):
    ap = {"ssid": "home", "bssid": "a0b1c2d3e4f5", "channel": 6, "rssi": -61,
          "password": "correct horse"}
    ap.update(kw)
    simstate.board.aps = [ap]
    return ap


def connect(wlan, deadline_ms, *args, **kw):
    """A bounded connect, as the firmware must do it. Returns (status, ms)."""
    t0 = time.ticks_ms()
    wlan.connect(*args, **kw)
    while time.ticks_diff(time.ticks_ms(), t0) < deadline_ms:
        st = wlan.status()
        if st != network.STAT_CONNECTING:
            return st, time.ticks_diff(time.ticks_ms(), t0)
        time.sleep_ms(20)
    return wlan.status(), time.ticks_diff(time.ticks_ms(), t0)


def test_connect_with_dhcp_takes_about_1_6_s():
    home_ap()
    w = network.WLAN(network.STA_IF)
    w.active(True)
    st, ms = connect(w, 10000, "home", "correct horse")
    assert st == network.STAT_GOT_IP and w.isconnected()
    assert 1400 <= ms <= 1900
    assert w.status("rssi") == -61
    assert w.ifconfig()[0] != "0.0.0.0"


def test_static_ip_known_bssid_and_stored_psk_is_fast():
    home_ap()
    w = network.WLAN(network.STA_IF)
    w.active(True)
    w.ifconfig(("192.168.1.77", "255.255.255.0", "192.168.1.1", "192.168.1.1"))
    psk = "ab" * 32  # the 64-hex key skips the passphrase derivation
    home_ap(password=psk)
    st, ms = connect(w, 10000, "home", psk, bssid=bytes.fromhex("a0b1c2d3e4f5"))
    assert st == network.STAT_GOT_IP
    assert ms < 200
    assert w.ifconfig()[0] == "192.168.1.77"


def test_wrong_password():
    home_ap()
    w = network.WLAN(network.STA_IF)
    w.active(True)
    st, _ = connect(w, 10000, "home", "wrong")
    assert st == network.STAT_WRONG_PASSWORD and not w.isconnected()


def test_access_point_absent():
    home_ap(up=False)
    w = network.WLAN(network.STA_IF)
    w.active(True)
    st, ms = connect(w, 10000, "home", "correct horse")
    assert st == network.STAT_NO_AP_FOUND
    assert ms >= 13 * 120


def test_slow_or_silent_dhcp_hits_the_deadline():
    home_ap(dhcp_ms=8000)
    w = network.WLAN(network.STA_IF)
    w.active(True)
    st, ms = connect(w, 3000, "home", "correct horse")
    assert st == network.STAT_CONNECTING and 3000 <= ms < 3100
    home_ap(dhcp_ms=None)
    st, ms = connect(w, 3000, "home", "correct horse")
    assert st == network.STAT_CONNECTING


def test_link_lost_mid_session():
    home_ap()
    b = simstate.board
    w = network.WLAN(network.STA_IF)
    w.active(True)
    connect(w, 10000, "home", "correct horse")
    assert w.isconnected()
    b.schedule(b.world_us + 500000, "ap", "home", False)
    time.sleep(1)
    assert not w.isconnected()
    assert w.status() == network.STAT_BEACON_TIMEOUT


def test_scan_lists_visible_aps():
    home_ap()
    w = network.WLAN(network.STA_IF)
    w.active(True)
    found = w.scan()
    assert [(f[0], f[2], f[3]) for f in found] == [(b"home", 6, -61)]


def test_inactive_interface_refuses_to_connect():
    home_ap()
    w = network.WLAN(network.STA_IF)
    try:
        w.connect("home", "correct horse")
    except OSError:
        return
    raise AssertionError("connect on an inactive interface must raise OSError")


def test_ntp_sets_the_clock_only_with_a_link():
    import errno

    import ntptime

    home_ap()
    try:
        ntptime.settime()
        raise AssertionError("NTP without a link must fail")
    except OSError as e:
        assert e.args[0] == errno.ETIMEDOUT
    assert time.gmtime()[0] == 2000  # RTC still at its power-on value
    w = network.WLAN(network.STA_IF)
    w.active(True)
    connect(w, 10000, "home", "correct horse")
    ntptime.settime()
    assert time.gmtime()[0] == 2026


def test_rssi_answers_once_associated_even_while_dhcp_waits():
    home_ap(dhcp_ms=None)
    w = network.WLAN(network.STA_IF)
    w.active(True)
    st, ms = connect(w, 2000, "home", "correct horse")
    assert st == network.STAT_CONNECTING  # no address yet
    assert w.status("rssi") == -61  # but associated
    w.disconnect()
    try:
        w.status("rssi")
        raise AssertionError("rssi after disconnect must raise")
    except OSError:
        pass
