"""The simulated board's phase ledger through the boot runner on both
interpreters, sockets behind the simulated link to a real broker, and the
ledger priced by petrel.energy."""

import io
import shutil
import socket
import threading

import network  # boards/sim's (the harness puts it first): the station's phase times
import pytest

from petrel import boards, bootrun, energy, paths

AP = {"ssid": "home", "bssid": "a0b1c2d3e4f5", "channel": 6, "password": "correct horse"}

# What WAKE does, for the expectations below
POLL_MS = 20  # it polls isconnected() this often
NBYTES = 200  # echoed: as many bytes sent as received
OFF_MS = 50  # awake with the radio off: the only such time in the wake
SLEEP_MS = 60000

WAKE = """
import machine, network, socket, time
PORT = %%d
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("home", "correct horse")
t0 = time.ticks_ms()
while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    time.sleep_ms(%(poll)d)
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
s.sendall(b"x" * %(n)d)
got = b""
while len(got) < %(n)d:
    got += s.recv(%(n)d - len(got))
s.close()
w.active(False)
time.sleep_ms(%(off)d)
print("echoed", len(got))
machine.deepsleep(%(sleep)d)
""" % {"poll": POLL_MS, "n": NBYTES, "off": OFF_MS, "sleep": SLEEP_MS}


def expected_radio_us(profile):
    """WAKE's radio time from the simulated board's model and the profile's
    figures: the station's start and join (network.TIMING, overridden by the
    profile's wifi_timing; WAKE gives neither BSSID nor 64-hex key, so it pays
    locate and pbkdf2, and DHCP), noticed at the next poll; two round trips
    (TCP connect, the echo's answer); the bytes both ways at radio_kbps.
    The board's clock reads (1 us each, a few per poll) come on top."""
    e = profile["energy"]
    t = dict(network.TIMING, **e.get("wifi_timing", {}))
    join_ms = t["locate"] + t["pbkdf2"] + t["assoc"] + t["dhcp"]
    polled_ms = -(-join_ms // POLL_MS) * POLL_MS
    air_us = 2 * (NBYTES * 8000 // e["radio_kbps"])
    return (t["start"] + polled_ms) * 1000 + 2 * e["rtt_ms"] * 1000 + air_us


CLOCK_READS_US = 1000  # bound on the clock reads' cost in one wake (1 us each)


class Echo:
    """A TCP echo server on loopback, for as many connections as come."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with c:
                while True:
                    data = c.recv(4096)
                    if not data:
                        break
                    c.sendall(data)


@pytest.fixture(scope="module")
def echo():
    e = Echo()
    yield e
    e.srv.close()


def flash_with(tmp_path, main):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(main)
    shutil.copytree(paths.LIB, flash / "lib",  # all of lib/, as a deploy lays it out
                    ignore=shutil.ignore_patterns("__pycache__"))
    return flash


def with_ap(board):
    board.aps = [dict(AP)]


@pytest.mark.parametrize("interp", ["cpython", "vm"])
def test_each_boot_carries_its_phases_with_the_profiles_times(tmp_path, echo, interp):
    runner = bootrun.BootRunner(flash_with(tmp_path, WAKE % echo.port), interp,
                                prepare=with_ap, profile="esp32-node")
    boots = runner.run(3)
    assert all("echoed %d" % NBYTES in b.output for b in boots), boots[0].output
    prof = boards.load("esp32-node")
    radio = expected_radio_us(prof)
    for b in boots:
        p = b.phases
        assert p["boot"] == prof["energy"]["boot_ms"] * 1000
        assert p["sleep"] == SLEEP_MS * 1000  # the deep sleep after this boot
        assert p["tls"] == 0
        # all from the model and the profile; never loopback time
        assert radio <= p["radio"] < radio + CLOCK_READS_US
        assert p["cpu"] == OFF_MS * 1000
        assert (b.tx_bytes, b.rx_bytes) == (NBYTES, NBYTES)
    starts = [b.start_us for b in boots] + [runner.board.world_us]  # each after its boot phase
    assert [sum(b.phases.values()) for b in boots] == [starts[i + 1] - starts[i] for i in range(3)]
    tot = runner.totals()
    # every microsecond in one phase, up to the fourth boot's start (its boot phase done)
    assert sum(tot.values()) == runner.board.world_us - prof["energy"]["boot_ms"] * 1000
    assert tot["sleep"] == 3 * SLEEP_MS * 1000


def test_vm_and_cpython_keep_the_same_ledger_for_the_same_run(tmp_path, echo):
    ledgers = []
    for interp in ("cpython", "vm"):
        d = tmp_path / interp
        d.mkdir()
        runner = bootrun.BootRunner(flash_with(d, WAKE % echo.port), interp,
                                    prepare=with_ap, profile="esp32-node")
        runner.run(2)
        ledgers.append([(b.phases, b.tx_bytes, b.rx_bytes) for b in runner.boots])
    assert ledgers[0] == ledgers[1]


def test_a_profile_sets_wifi_timing_and_radio_figures(tmp_path, echo):
    prof = boards.load("esp32-node")
    before = expected_radio_us(prof)
    prof["energy"].update({"wifi_timing": {"dhcp": 100, "pbkdf2": 430}, "rtt_ms": 30,
                           "radio_kbps": 800, "boot_ms": 70})
    radio = expected_radio_us(prof)
    assert radio != before  # the overrides change what is expected
    runner = bootrun.BootRunner(flash_with(tmp_path, WAKE % echo.port), "cpython",
                                prepare=with_ap, profile=prof)
    p = runner.run(1)[0].phases
    assert p["boot"] == 70000
    assert radio <= p["radio"] < radio + CLOCK_READS_US


def test_firmware_gets_no_traffic_without_the_simulated_link(tmp_path, echo):
    main = ("import socket\n"
            "try:\n"
            "    socket.getaddrinfo('127.0.0.1', %d)\n"
            "    print('LOOKED UP')\n"
            "except OSError as e:\n"
            "    print('NO LINK', e.args[0])\n" % echo.port)
    for interp in ("cpython", "vm"):
        d = tmp_path / interp
        d.mkdir()
        boot = bootrun.BootRunner(flash_with(d, main), interp).run(1)[0]
        assert "NO LINK -202" in boot.output, boot.output


def test_a_ledger_is_priced_at_the_profiles_currents():
    prof = boards.load("esp32-node")
    e = prof["energy"]
    wakes, uplinks = 288, 24  # a sample every 300 s, an uplink every 12
    day = {"boot": wakes * e["boot_ms"] * 1000, "cpu": wakes * e["sample_ms"] * 1000,
           "radio": uplinks * 1800000, "tls": uplinks * e["tls_psk_ms"] * 1000}
    day["sleep"] = 86400 * 1000000 - sum(day.values())
    s = energy.simulated(prof, day)
    assert s["days"] == pytest.approx(1.0)
    assert s["mc"]["radio"] == pytest.approx(e["radio_ma"] * uplinks * 1.8)
    assert s["mc"]["boot"] == pytest.approx(e["cpu_ma"] * wakes * e["boot_ms"] / 1000)
    assert s["mc"]["sleep"] == pytest.approx(e["sleep_ua"] / 1000 * day["sleep"] / 1e6)
    assert s["mah_per_day"] == pytest.approx(sum(s["mc"].values()) / 3600)
    assert s["years"] == pytest.approx(energy.life_years(prof, s["mah_per_day"]))
    # the same day as the model's cached-BSSID TLS-PSK scenario (boot, sample, wifi, tls, mqtt,
    # and the downlink mailbox's health fields at the radio's rate)
    sc = energy.Scenario("x", wakes // uplinks, "cached", "psk")
    model = sum(energy.daily(prof, 86400 // wakes, sc).values())
    down_us = energy.DOWN_HEALTH_BYTES * 8.0 / e["radio_kbps"] * 1000
    sim = dict(day, radio=uplinks * ((e["wifi_cached_ms"] + e["mqtt_ms"]) * 1000 + down_us))
    sim["sleep"] = 86400 * 1000000 - sum(v for k, v in sim.items() if k != "sleep")
    assert energy.simulated(prof, sim)["mah_per_day"] == pytest.approx(model, rel=1e-9)
    with pytest.raises(ValueError):
        energy.simulated(prof, dict.fromkeys(day, 0))
    out = io.StringIO()
    energy.simulated_report(prof, day, out)
    assert out.getvalue().startswith("simulated: 1.00 days") and "radio" in out.getvalue()


MQTT = """
import machine, network, time, mqtt
f = open("ca.der", "rb"); ca = f.read(); f.close()
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("home", "correct horse")
while not w.isconnected():
    time.sleep_ms(20)
KIND, PORT = %r, %d
if KIND == "psk":
    ctx = mqtt.tls_context(psk_identity=b"node-1", psk_key=bytes.fromhex("00112233445566778899aabbccddeeff"))
else:
    ctx = mqtt.tls_context(ca=ca)
c = mqtt.MQTTClient("sim-" + KIND, "127.0.0.1", PORT, ssl_context=ctx, server_hostname="localhost",
                    timeout_ms=3000)
c.connect()
c.publish("petrel/sim/up", b"one", qos=1)
c.wait_all()
print("ACKED", len(c.acked))
if %r:
    import simstate
    simstate.board.schedule(simstate.board.world_us + 1000, "ap", "home", False)
    time.sleep_ms(5)
    try:
        c.publish("petrel/sim/up", b"two", qos=1)
        c.wait_all()
        print("NOT NOTICED")
    except mqtt.MQTTError as e:
        print("LINK LOST", e)
else:
    c.disconnect()
machine.deepsleep(1000)
"""


@pytest.mark.parametrize("interp,kind", [("cpython", "tls"), ("vm", "tls"), ("vm", "psk")])
def test_mqtt_over_the_simulated_link_books_the_profiles_handshake(tmp_path, broker, interp, kind):
    flash = flash_with(tmp_path, MQTT % (kind, broker.ports[kind], False))
    shutil.copy(broker.pki["ca"].with_suffix(".der"), flash / "ca.der")
    boot = bootrun.BootRunner(flash, interp, prepare=with_ap, profile="esp32-node").run(1)[0]
    assert "ACKED 1" in boot.output, boot.output
    e = boards.load("esp32-node")["energy"]
    assert boot.phases["tls"] == (e["tls_psk_ms"] if kind == "psk" else e["tls_cert_ms"]) * 1000
    assert boot.tx_bytes > 100 and boot.rx_bytes > 100


@pytest.mark.parametrize("interp", ["cpython", "vm"])
def test_an_access_point_lost_mid_session_is_an_mqtt_error(tmp_path, broker, interp):
    flash = flash_with(tmp_path, MQTT % ("tls", broker.ports["tls"], True))
    shutil.copy(broker.pki["ca"].with_suffix(".der"), flash / "ca.der")
    boot = bootrun.BootRunner(flash, interp, prepare=with_ap).run(1)[0]
    assert "LINK LOST" in boot.output and "NOT NOTICED" not in boot.output, boot.output

