"""The whole uplink on the MicroPython VM against a real Mosquitto over TLS:
outbox -> SenML CBOR -> COSE_Mac0 -> MQTT QoS 1 -> PUBACK -> outbox ack, checked
on the host with code that is not Petrel's node code (pycose, and the
collector's own verifier and store)."""

import threading
import time

import cbor2
import pytest

from petrel import store
from petrel.verify import Rejected, Verifier
from petrel.vm import run_source as run_vm
from mqttcheck import Subscriber

KEY = bytes(range(32))
DEVICE = "p-a1b2c3"

NODE = """
import sys, time, machine, vfs
import simstate
from norflash import NorFlash
import outbox, rtcmem, seqcounter, clock, mqtt, uplink

port, ca_path, readings = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
mode = sys.argv[4]
dev = NorFlash(64)
vfs.VfsLfs2.mkfs(dev.block_device())
vfs.mount(vfs.VfsLfs2(dev.block_device()), "/fl")
rtc = machine.RTC()
clk = clock.Clock(1764000000, rtcmem.Region(rtc, 1280, 64))
if mode != "relative":
    clk.sync(lambda: simstate.board.true_rtc_us() // 1000000)
ob = outbox.Outbox("/fl/ob", rtc=rtcmem.Region(rtc, 256, 1024))
clk.begin(ob.next_seq)  # this power-on's readings start here (their stamps' timeline)
seq = seqcounter.SeqCounter("/fl/seq", rtcmem.Region(rtc, 1344, 64))
CHANNELS = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)]
for i in range(readings // 3):
    t = clk.stamp()
    ob.append(uplink.pack_reading(0, 2000 + i, 0), t)
    ob.append(uplink.pack_reading(1, 4500 + i, 0), t)
    ob.append(uplink.pack_reading(2, 100000 + i, 0), t)
    time.sleep(300)
encode = uplink.encoder("p-a1b2c3", CHANNELS, bytes(range(32)), seq, clk)
ctx = mqtt.tls_context(ca=open(ca_path, "rb").read())
sent = 0
for attempt in range(20):
    c = mqtt.MQTTClient("p-a1b2c3", "127.0.0.1", port, ssl_context=ctx, server_hostname="localhost",
                        timeout_ms=1500, window=2, will=("petrel/p-a1b2c3/status", b"lost", True))
    try:
        c.connect()
        if attempt:  # real time (the board's clock is virtual): let the checker resubscribe
            __import__("select").poll().poll(1500)
        sent += uplink.drain(c, ob, "petrel/p-a1b2c3/up", encode, batch=36,
                             kind=uplink.time_kind(clk))
        c.disconnect()
        break
    except mqtt.MQTTError as e:
        print("LINK", e)
        c.close()
        __import__("select").poll().poll(1000)  # real time: the broker needs it to come back
print("SENT", sent, "LEFT", len(ob), "ATTEMPTS", attempt + 1)
"""


def node(broker, readings, mode="unix"):
    return run_vm(NODE, [broker.ports["tls"], broker.pki["ca"].with_suffix(".der"), readings, mode],
                  timeout=120, sim=True)


def test_batches_arrive_authenticated_and_complete(broker):
    sub = Subscriber(broker, "petrel/%s/up" % DEVICE)
    rc, out = node(broker, 72)  # 24 samples x 3 channels: two messages of 36
    assert "SENT 72 LEFT 0" in out, out
    msgs = sub.wait(2)
    sub.close()
    assert len(msgs) == 2
    v = Verifier({DEVICE: KEY})
    readings = []
    for topic, payload, _retain in msgs:
        # independent check of the COSE_Mac0 with pycose too
        from pycose.keys import SymmetricKey
        from pycose.messages import Mac0Message

        p, u, body, tag = cbor2.loads(payload).value  # cbor2 6 gives a frozendict: pycose wants a dict
        msg = Mac0Message.from_cose_obj([p, dict(u), body, tag], True)
        msg.key = SymmetricKey(KEY)
        assert msg.verify_tag()
        readings += v.open(topic, payload).readings
    temps = sorted((r for r in readings if r.channel == "t"), key=lambda r: r.time)
    assert len(readings) == 72 and len(temps) == 24
    assert len({(r.channel, r.rid) for r in readings}) == 72  # one id per reading
    assert temps[0].exact == "20" and temps[-1].exact == "20.23"  # exact, not float32
    assert all(r.unit == "Cel" and r.quality == "dated" for r in temps)
    times = [r.time for r in temps]
    assert all(b - a == 300 for a, b in zip(times, times[1:]))  # the 5-minute grid
    assert abs(times[0] - 1767225600) < 400  # wall-clock time from NTP (the sim's)
    press = sorted(r.value for r in readings if r.channel == "p")
    assert press[0] == 100000 and press[-1] == 100023


def test_readings_before_the_clock_is_known_are_sent_in_relative_time(broker):
    sub = Subscriber(broker, "petrel/%s/up" % DEVICE)
    rc, out = node(broker, 36, mode="relative")
    assert "SENT 36 LEFT 0" in out, out
    msgs = sub.wait(1)
    sub.close()
    got = time.time()
    readings = Verifier({DEVICE: KEY}).open(msgs[0][0], msgs[0][1], received=got).readings
    assert {r.quality for r in readings} == {"relative"}  # no clock: ages, dated on arrival
    times = sorted(set(r.time for r in readings))
    assert all(t <= got for t in times)  # SenML: below 2**28 is relative to now
    assert times[-1] - times[0] == 11 * 300


def test_tampered_and_replayed_messages_are_refused(broker, tmp_path):
    sub = Subscriber(broker, "petrel/%s/up" % DEVICE)
    rc, out = node(broker, 36)
    msgs = sub.wait(1)
    sub.close()
    topic, data = msgs[0][0], msgs[0][1]
    v = Verifier({DEVICE: KEY})
    with store.open(tmp_path / "readings.sqlite") as st:
        assert st.commit(v.open(topic, data)) == (36, 0)
        with pytest.raises(Rejected) as e:  # the same message again stores nothing
            st.commit(v.open(topic, data))
        assert e.value.reason == "duplicate"
        assert st.counts()["readings"] == 36
    for i in (20, len(data) // 2, len(data) - 3):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(Rejected):
            v.open(topic, bytes(bad))
    with pytest.raises(Rejected) as e:
        Verifier({DEVICE: bytes(32)}).open(topic, data)  # another device's key
    assert e.value.reason == "mac"


def test_broker_killed_mid_batch_loses_nothing(broker, tmp_path):
    sub = Subscriber(broker, "petrel/%s/up" % DEVICE)
    sub.c.reconnect_delay_set(min_delay=0.1, max_delay=0.3)
    seen = []
    result = {}

    def run():
        result["out"] = node(broker, 36 * 20)[1]

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while len(sub.messages) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    broker.kill()  # mid-drain: some batches published, some PUBACKs never sent
    time.sleep(0.5)
    broker.restart()
    t.join(100)
    out = result.get("out", "")
    msgs = sub.wait(20, timeout=10)
    sub.close()
    assert "LEFT 0" in out, out
    assert "LINK" in out  # the node did see the broker go
    v = Verifier({DEVICE: KEY})
    readings = []
    with store.open(tmp_path / "readings.sqlite") as st:
        for m in msgs:
            msg = v.open(m[0], m[1])  # a resent batch gets a new seq: all are authentic
            readings += msg.readings
            try:
                st.commit(msg)
            except Rejected as e:  # the broker delivering one message twice (QoS 1)
                assert e.reason == "duplicate", e
        stored = st.counts()["readings"]
    counts = {}
    for r in readings:
        counts[(r.channel, r.rid)] = counts.get((r.channel, r.rid), 0) + 1
    assert len(counts) == 36 * 20  # every reading arrived
    assert max(counts.values()) <= 2  # unconfirmed ones at most twice
    assert stored == 36 * 20  # and the resent ones are stored once, by their ids
    seen.extend(counts)


STATUS = """
import sys, mqtt, uplink
c = mqtt.MQTTClient("p-a1b2c3", "127.0.0.1", int(sys.argv[1]), insecure=True, keepalive=2,
                    timeout_ms=3000, will=uplink.will("p-a1b2c3"))
c.connect()
uplink.hello(c, "p-a1b2c3")
c.wait_all()
print("ONLINE")
if sys.argv[2] == "sleep":
    uplink.goodbye(c, "p-a1b2c3")
    print("SLEEPING")
else:
    c.raw.close()  # the link dies without a DISCONNECT
    print("VANISHED")
"""


def test_retained_status_online_sleeping_and_lost(broker):
    topic = "petrel/%s/status" % DEVICE
    sub = Subscriber(broker, topic)
    rc, out = run_vm(STATUS, [broker.ports["plain"], "sleep"])
    assert "SLEEPING" in out, out
    msgs = sub.wait(2)
    assert [m[1] for m in msgs[-2:]] == [b"online", b"sleeping"]
    rc, out = run_vm(STATUS, [broker.ports["plain"], "vanish"])
    assert "VANISHED" in out, out
    msgs = sub.wait(4, timeout=10)
    sub.close()
    assert [m[1] for m in msgs[-2:]] == [b"online", b"lost"]  # the broker published the will
    late = Subscriber(broker, topic)  # a newcomer sees the retained state
    got = late.wait(1)
    late.close()
    assert got[0][1] == b"lost" and got[0][2]
