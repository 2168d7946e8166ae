"""Drain the outbox over MQTT: batches of readings, each one authenticated
payload, published at QoS 1; a batch's readings are acknowledged in the outbox
only when the broker's PUBACK for it arrives. A failure mid-drain (link lost,
broker gone) leaves every unconfirmed reading in the outbox: it is sent again
next time, so a reading arrives at least once and, as QoS 1 goes, at most twice
(the consumer drops repeats by sequence number).

    n = uplink.drain(client, outbox, "petrel/node-1/up", encode, batch=36)

encode(records) -> bytes gets the outbox records [(seq, t, payload)] of one
batch and returns the message (SenML CBOR in COSE_Mac0, see encoder()).

A reading's outbox payload is pack_reading(channel, value, flags): the channel
index, the value as an int in the channel's 1/scale units, the filter flags.
"""

import struct

import clock as _clock
import cose
import eventlog as log
import senml

_READING = "<Bib"


def pack_reading(channel, value, flags=0):
    return struct.pack(_READING, channel, value, flags)


def unpack_reading(payload):
    if len(payload) != struct.calcsize(_READING):
        raise ValueError("a reading is %d bytes, got %d" % (struct.calcsize(_READING), len(payload)))
    return struct.unpack(_READING, payload)


class encoder:
    """encode(records) for drain(): a SenML CBOR pack of the readings, in a
    COSE_Mac0 under the device's key with the next sequence number.

    channels: [(name, unit, scale)] indexed like the readings' channel byte.
    counter: seqcounter.SeqCounter. clk: clock.Clock, which turns the outbox's
    stamps into Unix time, or into ages when the wall clock is still unknown.
    A record that cannot be encoded (a channel a new configuration no longer
    has, a damaged payload) is left out, logged and counted in `rejected`, so
    one bad record never blocks the queue behind it; None when none is left."""

    def __init__(self, device_id, channels, key, counter, clk, tag=cose.HMAC_256_256):
        self.device_id = device_id
        self.kid = device_id.encode()
        self.channels = channels
        self.key = key
        self.counter = counter
        self.clk = clk
        self.tag = tag
        self.rejected = 0

    def __call__(self, records):
        pack = senml.Pack(self.device_id + "/", self.channels)
        relative = None
        for seq, stamp, payload in records:
            t = self.clk.senml_time(stamp)
            try:
                ch, v, _flags = unpack_reading(payload)
                pack.add(ch, v, t)
            except ValueError as e:
                self.rejected += 1
                log.warn("uplink", "reading seq=%d left out: %s", seq, e)
                continue
            relative = t < _clock.RELATIVE  # drain() never mixes the two kinds
        if relative is None:
            return None
        data = pack.cbor(now=0) if relative else pack.cbor()
        return cose.mac0(self.key, self.kid, self.counter.next(), data, self.tag)


def time_kind(clk):
    """drain()'s `kind` for encoder(): a batch is all wall-clock or all relative."""
    return lambda record: clk.senml_time(record[1]) < _clock.RELATIVE


def status_topic(device_id):
    return "petrel/%s/status" % device_id


def will(device_id):
    """The MQTTClient will: the broker says "lost" if the node vanishes mid-session."""
    return (status_topic(device_id), b"lost", True)


def hello(client, device_id):
    """Retained "online" once connected."""
    client.publish(status_topic(device_id), b"online", qos=1, retain=True)


def goodbye(client, device_id):
    """Retained "sleeping", then a clean DISCONNECT (the will is not sent)."""
    client.publish(status_topic(device_id), b"sleeping", qos=1, retain=True)
    client.wait_all()
    client.disconnect()


def drain(client, outbox, topic, encode, batch=36, max_records=None, kind=None):
    """Publish everything in the outbox (or max_records); returns how many
    readings were confirmed. MQTTError/OSError go to the caller after the
    confirmed part has been acknowledged. kind(record): a batch never mixes
    records of different kinds (time_kind: Unix-time and relative stamps)."""
    confirmed = 0
    while max_records is None or confirmed < max_records:
        want = batch * client.window
        if max_records is not None:
            want = min(want, max_records - confirmed)
        records = outbox.peek(want)
        if not records:
            break
        pending = []  # (packet id, last seq, count) in publish order
        try:
            for chunk in _chunks(records, batch, kind):
                msg = encode(chunk)
                # nothing sendable in it: acknowledged in turn, without a PUBACK
                pid = client.publish(topic, msg, qos=1) if msg is not None else None
                pending.append((pid, chunk[-1][0], len(chunk)))
                confirmed += _settle(client, outbox, pending)
            client.wait_all()
        finally:
            confirmed += _settle(client, outbox, pending)
    return confirmed


def _chunks(records, batch, kind):
    start = 0
    while start < len(records):
        end = min(start + batch, len(records))
        if kind is not None:
            k = kind(records[start])
            for i in range(start + 1, end):
                if kind(records[i]) != k:
                    end = i
                    break
        yield records[start:end]
        start = end


def _settle(client, outbox, pending):
    """Acknowledge, oldest first, the batches whose PUBACK has arrived."""
    n = 0
    while pending and (pending[0][0] is None or pending[0][0] in client.acked):
        pid, last, count = pending.pop(0)
        if pid is not None:
            client.acked.remove(pid)
        outbox.ack(last)
        n += count
    return n
