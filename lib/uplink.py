"""Drain the outbox over MQTT: batches of readings, each one authenticated
payload, published at QoS 1; a batch's readings are acknowledged in the outbox
only when the broker's PUBACK for it arrives. A failure mid-drain (link lost,
broker gone) leaves every unconfirmed reading in the outbox: it is sent again
next time, so a reading arrives at least once and, as QoS 1 goes, at most twice
(each reading carries its outbox sequence number: the consumer stores it once).

    n = uplink.drain(client, outbox, "petrel/node-1/up", encode, batch=36,
                     kind=uplink.time_kind(clk))

encode(records) -> bytes gets the outbox records [(seq, t, payload)] of one
batch and returns the message (SenML CBOR in COSE_Mac0, see encoder()).

A reading's outbox payload is pack_reading(channel, value, flags): the channel
index, the value as an int in the channel's 1/scale units, the filter flags.
"""

import gc
import struct
from array import array

import cose
from cborput import put_head, put_int  # all of CBOR a batch needs

RELATIVE = 1 << 28  # SenML times below this are ages (clock.RELATIVE): a constant, not an import
_MAX_FACTOR = 1 << 31  # 10**k // scale: a mantissa v * factor stays below 2**62


def pack_reading(channel, value, flags=0):
    return struct.pack("<BiB", channel, value, flags)


def unpack_reading(payload):
    if len(payload) != 6:  # struct.calcsize("<BiB")
        raise ValueError("a reading is 6 bytes, got %d" % len(payload))
    return struct.unpack("<BiB", payload)


def scale_digits(scale):
    """k, the decimal places of m/scale (scale divides 10**k) for a scale of
    2**a * 5**b; any other scale has no finite decimal: ValueError. Refused
    too: 10**k // scale >= 2**31 (2**14 and finer), whose mantissas would
    outgrow 64 bits. For the configuration checker as much as the encoder."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError("scale %r: an int >= 1" % (scale,))
    k = 0
    p = 1
    while p % scale:
        k += 1
        p *= 10
        if k > 30:
            raise ValueError("scale %d: not 2**a * 5**b, so m/scale is no finite decimal" % scale)
    if p // scale >= _MAX_FACTOR:
        raise ValueError("scale %d: too fine (10**%d / scale >= 2**31)" % (scale, k))
    return k


def check_name(name):
    """ValueError unless name is a SenML name (RFC 8428 section 4.5.1)."""
    _text(name, True)


def _text(s, name=False):
    """s as a CBOR text string; a SenML name checked first (RFC 8428 section
    4.5.1: [A-Za-z0-9][A-Za-z0-9:./_-]*), as bytes, so that no one-letter
    string becomes a qstr of its own."""
    b = s.encode()
    if name and not b:
        raise ValueError("SenML name is empty")
    for j in range(len(b) if name else 0):
        c = b[j] | 0x20  # lower case
        if not (97 <= c <= 122 or 48 <= b[j] <= 57 or j and b[j] in b"-:./_"):
            raise ValueError("SenML name %r: character %r not allowed" % (s, chr(b[j])))
    buf = bytearray(len(b) + 3)
    i = put_head(buf, 0, 3, len(b))
    buf[i:i + len(b)] = b
    return bytes(buf[:i + len(b)])


def _kind(t):
    """A SenML time's kind: "dated" (Unix seconds), "relative" (minus an age),
    "undated" (None; also a time the clock should never give, 0 < t < 2**28:
    sent undated rather than misdated)."""
    if t is None:
        return "undated"
    if t >= RELATIVE:
        return "dated"
    return "relative" if -RELATIVE < t <= 0 else "undated"


def _size(n):
    """Bytes of the CBOR int n (put_int)."""
    if n < 0:
        n = -1 - n
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _int(buf, i, n):
    return put_int(buf, i, n) if buf is not None else i + _size(n)


def _put(buf, i, b):
    if buf is not None:
        buf[i:i + len(b)] = b
    return i + len(b)


class encoder:
    """encode(records) for drain(): a SenML CBOR pack of the readings, in a
    COSE_Mac0 under the device's key with the next sequence number.

    channels: [(name, unit, scale)] indexed like the readings' channel byte;
    scale 2**a * 5**b (scale_digits). counter: seqcounter.SeqCounter. clk:
    clk.senml_time(stamp, seq) -> Unix seconds (dated), minus the age in
    seconds (relative) or None (undated) for a reading (clock.Clock).
    layout: "compact" (a channel's first record carries its name as the base
    name) or "named" (the base name "<device_id>/" once, n in every record).
    A record that cannot be encoded (a channel a new configuration no longer
    has, a damaged payload) is left out, logged and counted in `rejected`, so
    one bad record never blocks the queue behind it; None when none is left.
    A batch mixing time kinds is a ValueError (drain's kind=time_kind(clk)).

    The bytes are senml.Pack's (the format is described there): records
    channel by channel in order of first appearance, each in time order,
    values as ints or decimal fractions, ids, flags and times. They are
    written straight into one buffer kept between batches (sized by a dry
    run of the same writer), with the COSE head in front and the tag behind
    (cose.seal): no record objects, no intermediate bytes, so a batch costs
    the buffer, the message and a few bytes a reading of per-batch arrays."""

    def __init__(self, device_id, channels, key, counter, clk, tag=cose.HMAC_256_256, layout="compact"):
        if layout not in ("compact", "named"):
            raise ValueError("SenML layout %r: compact or named" % (layout,))
        self.device_id = device_id
        self.kid = device_id.encode()
        self.channels = channels
        self.key = key
        self.counter = counter
        self.clk = clk
        self.tag = tag
        self.named = layout == "named"
        self.rejected = 0
        self.meta = None  # per channel (CBOR base name, CBOR n, CBOR unit, scale, k, 10**k // scale)
        self.buf = None

    def _meta(self):
        meta = []
        for name, unit, scale in self.channels:
            if not unit:
                raise ValueError("SenML channel %r: a unit is required" % name)
            k = scale_digits(scale)
            meta.append((_text(self.device_id + "/" + name, True), _text(name), _text(unit), scale, k,
                         10 ** k // scale))
        self.base = _text(self.device_id + "/")
        self.meta = meta

    def __call__(self, records):
        if self.meta is None:  # at the first batch
            self._meta()
        meta = self.meta
        n = len(records)
        ch = bytearray(n)
        fl = bytearray(n)
        val = array("i", range(n))
        t = [0] * n  # a list: array("q") makes a long int at every read
        rank = bytearray(b"\xff" * len(meta))  # channels in order of first appearance
        order = array("H", bytes(2 * n))  # the records kept, sorted as they come: order[:m]
        m = 0
        used = 0
        kind = None
        for k in range(n):
            seq, stamp, payload = records[k]
            try:
                c, v, f = unpack_reading(payload)
                if c >= len(meta):
                    raise ValueError("SenML channel %d not in 0..%d" % (c, len(meta) - 1))
            except ValueError as e:
                import eventlog  # only then: the log's code is no heap of a clean batch

                self.rejected += 1
                eventlog.warn("uplink", "reading seq=%d left out: %s", seq, e)
                continue
            tk = self.clk.senml_time(stamp, seq)
            kd = _kind(tk)
            if kind is None:
                kind = kd
            elif kd != kind:
                raise ValueError("SenML batch mixes %s and %s times (drain's kind=time_kind)" % (kind, kd))
            if rank[c] == 255:
                rank[c] = used
                used += 1
            ch[k] = c
            fl[k] = f
            val[k] = v
            t[k] = tk if kind != "undated" else 0
            # insertion sort by (channel rank, time), stable: records come nearly in order
            j = m
            m += 1
            while j and (rank[ch[order[j - 1]]] > rank[c] or
                         rank[ch[order[j - 1]]] == rank[c] and t[order[j - 1]] > t[k]):
                order[j] = order[j - 1]
                j -= 1
            order[j] = k
        if kind is None:
            return None
        start = cose.room(self.kid)
        size = self._write(None, start, records, kind, m, order, ch, fl, val, t) + cose.TAIL
        if self.buf is None or len(self.buf) < size:
            self.buf = None  # the old one is garbage before the new one is made
            gc.collect()  # kept for the batches after: one piece, before the temporaries
            self.buf = bytearray(size)
        i = self._write(self.buf, start, records, kind, m, order, ch, fl, val, t)
        return cose.seal(self.key, self.kid, self.counter.next(), self.buf, start, i, self.tag)

    def _write(self, buf, i, records, kind, m, order, ch, fl, val, t):
        """The pack of the m records order[:m] at buf[i]; -> the end index.
        buf None: nothing written, the end index all the same (the size).
        Keys in the order of RFC 8949 section 4.2.1 (deterministic encoding):
        n, v, t, bn, bt, bu, "i", "is", "flags", "undated_"."""
        meta = self.meta
        named = self.named
        if buf is not None:
            put_head(buf, i, 4, m)
        i += _size(m)
        base = t[order[0]] if kind == "dated" else 0
        unit = None
        prev = -1
        last = -1  # the previous record's id
        step = 1
        for x in range(m):
            k = order[x]
            c = ch[k]
            bn, nm, u, scale, digits, factor = meta[c]
            seq = records[k][0]
            dt = t[k] - base
            f = fl[k]
            if x == 0 or seq <= last:
                ids = 1  # "i"
            elif seq - last != step:
                ids = 2  # "is"
                step = seq - last
            else:
                ids = 0
            last = seq
            newbn = x == 0 if named else c != prev
            prev = c
            if buf is not None:
                put_head(buf, i, 5, named + 1 + (dt != 0) + newbn + (x == 0 and kind == "dated") + (u != unit)
                         + (ids != 0) + (f != 0) + (kind == "undated"))
            i += 1
            if named:
                if buf is not None:
                    buf[i] = 0x00  # n
                i = _put(buf, i + 1, nm)
            if buf is not None:
                buf[i] = 0x02  # v: an int when the scale divides, else a decimal fraction (tag 4)
            v = val[k]
            if v % scale == 0:
                i = _int(buf, i + 1, v // scale)
            else:  # exactly v / scale = mant * 10**e, mant not a multiple of 10
                mant = v * factor
                e = -digits
                while mant % 10 == 0:
                    mant //= 10
                    e += 1
                if buf is not None:
                    buf[i + 1] = 0xC4  # tag 4
                    buf[i + 2] = 0x82  # [e, mant]
                    put_int(buf, i + 3, e)
                i = _int(buf, i + 3 + _size(e), mant)
            if dt:
                if buf is not None:
                    buf[i] = 0x06  # t
                i = _int(buf, i + 1, dt)
            if newbn:
                if buf is not None:
                    buf[i] = 0x21  # -2: bn
                i = _put(buf, i + 1, self.base if named else bn)
            if x == 0 and kind == "dated":
                if buf is not None:
                    buf[i] = 0x22  # -3: bt
                i = _int(buf, i + 1, base)
            if u != unit:
                if buf is not None:
                    buf[i] = 0x23  # -4: bu
                i = _put(buf, i + 1, u)
                unit = u
            if ids == 1:
                i = _int(buf, _put(buf, i, b"\x61i"), seq)
            elif ids == 2:
                i = _int(buf, _put(buf, i, b"\x62is"), step)
            if f:
                i = _int(buf, _put(buf, i, b"\x65flags"), f)
            if kind == "undated":
                i = _put(buf, i, b"\x68undated_\xf5")  # true: must be understood (RFC 8428 section 4.4)
        return i


def time_kind(clk):
    """drain()'s `kind` for encoder(): "dated", "relative" or "undated"."""
    return lambda record: _kind(clk.senml_time(record[1], record[0]))


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
    records of different kinds (time_kind: dated, relative, undated)."""
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
