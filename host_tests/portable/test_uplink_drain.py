# lib/uplink.drain and encoder without a network: a client that confirms what
# it is told to, so the outbox bookkeeping is what is tested.
import machine

import clock
import outbox
import rtcmem
import seqcounter
import uplink
from ptest import raises, scratch_dir

CHANNELS = [("t", "Cel", 100), ("h", "%RH", 100)]


class Client:
    window = 4

    def __init__(self, confirm=True, fail_after=None):
        self.acked = []
        self.sent = []
        self.confirm = confirm
        self.fail_after = fail_after
        self.pid = 0

    def publish(self, topic, msg, qos=0):
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise OSError(104)  # the link dropped
        self.pid += 1
        self.sent.append(msg)
        if self.confirm:
            self.acked.append(self.pid)
        return self.pid

    def wait_all(self):
        if not self.confirm:
            raise OSError(110)


def setup(n):
    path, flash = scratch_dir()
    rtc = machine.RTC()
    clk = clock.Clock(1764000000, rtcmem.Region(rtc, 1280, 64))
    ob = outbox.Outbox(path + "/ob")
    seq = seqcounter.SeqCounter(path + "/seq", rtcmem.Region(rtc, 1344, 64))
    for i in range(n):
        ob.append(uplink.pack_reading(i % 2, 2000 + i), clk.stamp())
    return ob, uplink.encoder("p-a1b2c3", CHANNELS, b"k" * 32, seq, clk), clk


def test_everything_confirmed_is_acknowledged():
    ob, enc, clk = setup(20)
    c = Client()
    assert uplink.drain(c, ob, "t", enc, batch=6) == 20
    assert len(ob) == 0 and len(c.sent) == 4


def test_unconfirmed_batches_stay_in_the_outbox():
    ob, enc, clk = setup(20)
    raises(OSError, uplink.drain, Client(confirm=False), ob, "t", enc, 6)
    assert len(ob) == 20
    c = Client(fail_after=2)  # two batches confirmed, then the link drops
    raises(OSError, uplink.drain, c, ob, "t", enc, 6)
    assert len(ob) == 8


def test_a_record_that_cannot_be_encoded_does_not_block_the_queue():
    ob, enc, clk = setup(6)
    ob.append(uplink.pack_reading(7, 1), clk.stamp())  # a channel this configuration lacks
    ob.append(b"\x01", clk.stamp())  # a damaged payload
    for i in range(4):
        ob.append(uplink.pack_reading(0, 3000 + i), clk.stamp())
    c = Client()
    assert uplink.drain(c, ob, "t", enc, batch=6) == 12
    assert len(ob) == 0 and enc.rejected == 2
    ob.append(uplink.pack_reading(9, 1), clk.stamp())  # a batch with nothing sendable
    assert uplink.drain(c, ob, "t", enc, batch=6) == 1
    assert len(ob) == 0 and enc.rejected == 3
