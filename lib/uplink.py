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

import gc
import struct
from array import array

import cose
from cborput import put_float, put_head, put_int  # all of CBOR a batch needs

RELATIVE = 1 << 28  # SenML times below this are ages (clock.RELATIVE): a constant, not an import


def pack_reading(channel, value, flags=0):
    return struct.pack("<Bib", channel, value, flags)


def unpack_reading(payload):
    if len(payload) != 6:  # struct.calcsize("<Bib")
        raise ValueError("a reading is 6 bytes, got %d" % len(payload))
    return struct.unpack("<Bib", payload)


def _text(s, name=False):
    """s as a CBOR text string; a SenML name checked first (RFC 8428 section
    4.5.1: [A-Za-z0-9][A-Za-z0-9:./_-]*), as bytes, so that no one-letter
    string becomes a qstr of its own."""
    b = s.encode()
    for j in range(len(b) if name else 0):
        c = b[j] | 0x20  # lower case
        if not (97 <= c <= 122 or 48 <= b[j] <= 57 or j and b[j] in b"-:./_"):
            raise ValueError("SenML name %r: character %r not allowed" % (s, chr(b[j])))
    buf = bytearray(len(b) + 3)
    i = put_head(buf, 0, 3, len(b))
    buf[i:i + len(b)] = b
    return bytes(buf[:i + len(b)])


class encoder:
    """encode(records) for drain(): a SenML CBOR pack of the readings, in a
    COSE_Mac0 under the device's key with the next sequence number.

    channels: [(name, unit, scale)] indexed like the readings' channel byte.
    counter: seqcounter.SeqCounter. clk: clock.Clock, which turns the outbox's
    stamps into Unix time, or into ages when the wall clock is still unknown.
    A record that cannot be encoded (a channel a new configuration no longer
    has, a damaged payload) is left out, logged and counted in `rejected`, so
    one bad record never blocks the queue behind it; None when none is left.

    The bytes are senml.Pack's (the layout is described there): records
    channel by channel in order of first appearance, each in time order; the
    first record carries the base time, a channel's first its base name, a
    change of unit the base unit, every record its value and, unless 0, its
    time offset. They are written straight into one buffer kept between
    batches, with the COSE head in front and the tag behind (cose.seal): no
    record objects, no intermediate bytes, so a 60-reading batch costs the
    buffer and the message."""

    def __init__(self, device_id, channels, key, counter, clk, tag=cose.HMAC_256_256):
        self.device_id = device_id
        self.kid = device_id.encode()
        self.channels = channels
        self.key = key
        self.counter = counter
        self.clk = clk
        self.tag = tag
        self.rejected = 0
        self.meta = None  # per channel (CBOR base name, CBOR unit, scale), at the first batch
        self.buf = None

    def __call__(self, records):
        if self.meta is None:  # at the first batch
            meta = []
            fixed = cose.room(self.kid) + 9 + 10 + cose.TAIL  # COSE, array head, base time
            for name, unit, scale in self.channels:
                if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1 or not unit:
                    raise ValueError("SenML channel %r: a unit and an int scale >= 1" % name)
                m = (_text(self.device_id + "/" + name, True), _text(unit), scale)
                fixed += 2 + len(m[0]) + len(m[1])
                meta.append(m)
            self.fixed = fixed
            self.meta = meta
        meta = self.meta
        n = len(records)
        size = self.fixed + 21 * n  # a record: map head, v and t keys, 9 bytes each
        if self.buf is None or len(self.buf) < size:
            self.buf = None  # the old one is garbage before the new one is made
            gc.collect()  # kept for the batches after: one piece, before the temporaries
            self.buf = bytearray(size)
        ch = bytearray(n)
        val = array("i", range(n))
        t = [0] * n  # a list: array("q") makes a long int at every read
        rank = bytearray(b"\xff" * len(meta))  # channels in order of first appearance
        order = array("H", bytes(2 * n))  # the records kept, sorted as they come: order[:m]
        m = 0
        used = 0
        relative = None
        for k in range(n):
            seq, stamp, payload = records[k]
            try:
                c, v, _flags = unpack_reading(payload)
                if c >= len(meta):
                    raise ValueError("SenML channel %d not in 0..%d" % (c, len(meta) - 1))
            except ValueError as e:
                import eventlog  # only then: the log's code is no heap of a clean batch

                self.rejected += 1
                eventlog.warn("uplink", "reading seq=%d left out: %s", seq, e)
                continue
            if rank[c] == 255:
                rank[c] = used
                used += 1
            ch[k] = c
            val[k] = v
            t[k] = self.clk.senml_time(stamp)
            relative = t[k] < RELATIVE  # drain() never mixes the two kinds
            # insertion sort by (channel rank, time), stable: records come nearly in order
            j = m
            m += 1
            while j and (rank[ch[order[j - 1]]] > rank[c] or
                         rank[ch[order[j - 1]]] == rank[c] and t[order[j - 1]] > t[k]):
                order[j] = order[j - 1]
                j -= 1
            order[j] = k
        if relative is None:
            return None
        buf = self.buf
        start = i = cose.room(self.kid)
        i = put_head(buf, i, 4, m)
        base = None if relative else t[order[0]]
        unit = None
        prev = -1
        first = True
        for x in range(m):
            k = order[x]
            c = ch[k]
            name, u, scale = meta[c]
            dt = t[k] - base if base is not None else t[k]
            if base is not None and t[k] < RELATIVE:
                raise ValueError("SenML time %d is not Unix time" % t[k])
            if not -RELATIVE < dt < RELATIVE:
                raise ValueError("SenML relative time %d out of range" % dt)
            i = put_head(buf, i, 5, 1 + (dt != 0) + (first and base is not None) + (c != prev)
                              + (u != unit))
            if first and base is not None:
                buf[i] = 0x22  # -3: bt
                i = put_int(buf, i + 1, base)
            first = False
            if c != prev:
                buf[i] = 0x21  # -2: bn
                buf[i + 1:i + 1 + len(name)] = name
                i += 1 + len(name)
                prev = c
            if u != unit:
                buf[i] = 0x23  # -4: bu
                buf[i + 1:i + 1 + len(u)] = u
                i += 1 + len(u)
                unit = u
            buf[i] = 0x02  # v: an int when the scale divides, else the shortest float
            v = val[k]
            if v % scale == 0:
                i = put_int(buf, i + 1, v // scale)
            else:  # float32 when it reads back within half a unit (senml.value)
                x = v / scale
                f = struct.unpack("f", struct.pack("f", x))[0]
                i = put_float(buf, i + 1, f if abs(f * scale - v) < 0.5 else x)
            if dt:
                buf[i] = 0x06  # t
                i = put_int(buf, i + 1, dt)
        return cose.seal(self.key, self.kid, self.counter.next(), buf, start, i, self.tag)


def time_kind(clk):
    """drain()'s `kind` for encoder(): a batch is all wall-clock or all relative."""
    return lambda record: clk.senml_time(record[1]) < RELATIVE


def status_topic(device_id):
    return "petrel/%s/status" % device_id


def will(device_id):
    """The MQTTClient will: the broker says "lost" if the node vanishes mid-session."""
    return (status_topic(device_id), b"lost", True)


def hello(client, device_id, status=b"online"):
    """The retained status once connected ("online"; "safe" in safe mode)."""
    client.publish(status_topic(device_id), status, qos=1, retain=True)


def goodbye(client, device_id, status=b"sleeping"):
    """The retained status (None: leave hello's), the last PUBACKs, then a
    clean DISCONNECT (the will is not sent)."""
    if status is not None:
        client.publish(status_topic(device_id), status, qos=1, retain=True)
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
