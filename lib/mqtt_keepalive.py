"""What only a session that lasts needs, loaded when used: keepalive (a
session longer than its keepalive), subscriptions and messages published to
us. A wake that connects, publishes and leaves never loads it.

check(): keepalive between publishes. Handles what the broker has already
sent (never waits), sends PINGREQ once the session has been idle for 3/4 of
the keepalive, and fails the session (MQTTError) when a ping is not answered
within timeout_ms.

subscribe(): SUBSCRIBE (one topic) in one write, not waited for: its packet
id goes into client.inflight with the value None (a PUBACK for it is a
protocol error), so wait_all() waits for the SUBACK as for a PUBACK.

incoming(): a SUBACK pops its packet id; a refusal (return code 0x80) is
appended to client.refused_subs (a list of packet ids, made by subscribe()):
the session goes on, the caller decides. A PUBLISH to the client (QoS 0 or
1) goes to client.inbox as (topic, message, retained), the list made by the
first one. The inbox holds 16 at most, until the caller takes them: a QoS 1
message that finds it full is not acknowledged (so not accepted: the broker
sends it again at the next connect of a persistent session), a QoS 0 one is
dropped, as QoS 0 allows.

skip(): a PUBLISH larger than max_packet is read past in small pieces
(never held whole), acknowledged at QoS 1 so the broker does not send it
again at every connect (one such message would otherwise end every session
of a persistent one), and noted in the inbox as (topic, None, retained): the
caller counts it as refused.

wait_msg(): wait up to ms for a message to us that match(inbox) finds, each
packet read as it comes; False at the time limit, the session still up (a
timeout between packets ends nothing).

subscribe_many(): one SUBSCRIBE for several topic filters, one write, not
waited for (its SUBACK, one return code per filter, pops it from inflight as
subscribe()'s does; any refused code lists it in refused_subs).

leave(): UNSUBSCRIBE the filters and DISCONNECT in one write, then close:
the UNSUBACK is never read (the broker handles the two packets in order, so
the subscriptions are gone from a persistent session before it ends; sent
together, the broker has both before any answer could come back).

All raise the client's error class, handed in as `error` (mqtt.MQTTError):
this module imports nothing of mqtt's.
"""

import select
import struct
import time


def check(c, error):
    if c.sock is None:
        raise error("not connected")
    now = time.ticks_ms()
    if c.ping_sent is None:
        if time.ticks_diff(now, c.last_send) >= c.keepalive * 750:
            c._send(b"\xc0\0")  # PINGREQ
            c.ping_sent = time.ticks_ms()
    elif time.ticks_diff(now, c.ping_sent) > c.timeout_ms:
        c.close()
        raise error("no answer to a ping within %d ms" % c.timeout_ms)
    p = select.poll()
    p.register(c.raw, select.POLLIN)
    if p.poll(0):  # a packet has arrived: it is read with the usual deadline
        c._process(time.ticks_add(time.ticks_ms(), c.timeout_ms))


def subscribe(c, topic, qos, head, string):
    if qos not in (0, 1):
        raise ValueError("QoS must be 0 or 1")
    if not hasattr(c, "refused_subs"):
        c.refused_subs = []
    deadline = time.ticks_add(time.ticks_ms(), c.timeout_ms)
    while len(c.inflight) >= c.window:  # the same window as publish
        c._process(deadline)
    pid = c.pid
    while pid == c.pid or pid in c.inflight:  # the next id not in flight
        pid = pid % 65535 + 1
    c.pid = pid
    body = bytes((pid >> 8, pid & 255)) + string(topic) + bytes((qos,))
    c._send(head(0x82, len(body)) + body)
    c.inflight[pid] = None  # a SUBSCRIBE's: only a SUBACK takes it
    return pid


def incoming(c, first, body, error):
    if first >> 4 == 9:  # SUBACK: packet id, a return code per filter (subscribe_many: several)
        pid = body[0] << 8 | body[1] if len(body) >= 3 and first == 0x90 else 0
        if pid not in c.inflight or c.inflight[pid] is not None:
            c.close()
            raise error("unexpected SUBACK")
        del c.inflight[pid]
        if 0x80 in body[2:]:
            c.refused_subs.append(pid)
        return
    i = 2 + struct.unpack("!H", body[:2])[0] if len(body) > 1 else 0
    q = first & 2  # 2 bytes of packet id at QoS 1
    if first & 6 > 2 or not i or len(body) < i + q:  # QoS 2 is never asked for
        c.close()
        raise error("malformed PUBLISH 0x%02x" % first)
    _keep(c, (body[2:i], body[i + q:], bool(first & 1)), body[i:i + 2] if q else None)


def _keep(c, item, pid):
    try:
        inbox = c.inbox
    except AttributeError:
        inbox = c.inbox = []
    if len(inbox) < 16:  # else not accepted: a QoS 1 one comes again at the next connect
        inbox.append(item)
        if pid:
            c._send(b"\x40\2" + pid)


def skip(c, first, n, deadline, error):
    q = first & 6
    head = c._recv(2, deadline)
    tl = head[0] << 8 | head[1]
    if q > 2 or 2 + tl + (2 if q else 0) > n:
        c.close()
        raise error("malformed PUBLISH 0x%02x" % first)
    topic = c._recv(tl, deadline) if tl <= 128 else _past(c, tl, deadline)  # ours are short
    pid = c._recv(2, deadline) if q else None
    _past(c, n - 2 - tl - (2 if q else 0), deadline)
    _keep(c, (topic, None, bool(first & 1)), pid)


def _past(c, n, deadline):
    """Read n bytes in small pieces, keeping none. -> b"" """
    while n:
        n -= len(c._recv(min(n, 256), deadline))
    return b""


def wait_msg(c, ms, match, error):
    import errno

    deadline = time.ticks_add(time.ticks_ms(), ms)
    while not match(getattr(c, "inbox", ())):
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0 or c.sock is None:
            return False
        c.raw.settimeout(left / 1000)
        try:
            b = c.sock.recv(1)
        except OSError as e:
            if e.args and e.args[0] in (errno.ETIMEDOUT, errno.EAGAIN):
                return False
            c.close()
            raise error("link: %s" % e)
        if not b:
            c.close()
            raise error("connection closed")
        c._process(time.ticks_add(time.ticks_ms(), c.timeout_ms), b[0])
    return True


def _packet(code, body):
    """Fixed header (the remaining length 7 bits a byte) + body: this
    module's own, so it relies on no framing helper of mqtt's."""
    head = bytearray((code,))
    n = len(body)
    while True:
        head.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return head + body


def _filters(topics, qos=None):
    out = b""
    for t in topics:
        t = t.encode() if isinstance(t, str) else t
        out += bytes((len(t) >> 8, len(t) & 255)) + t
        if qos is not None:
            out += bytes((qos,))
    return out


def _next_pid(c):
    pid = c.pid
    while pid == c.pid or pid in c.inflight:  # the next id not in flight
        pid = pid % 65535 + 1
    c.pid = pid
    return pid


def subscribe_many(c, topics, qos):
    if qos not in (0, 1) or not topics:
        raise ValueError("QoS 0 or 1, one topic at least")
    if not hasattr(c, "refused_subs"):
        c.refused_subs = []
    deadline = time.ticks_add(time.ticks_ms(), c.timeout_ms)
    while len(c.inflight) >= c.window:  # the same window as publish
        c._process(deadline)
    pid = _next_pid(c)
    c._send(_packet(0x82, bytes((pid >> 8, pid & 255)) + _filters(topics, qos)))
    c.inflight[pid] = None  # a SUBSCRIBE's: only a SUBACK takes it
    return pid


def leave(c, topics):
    pid = _next_pid(c)
    c._send(_packet(0xA2, bytes((pid >> 8, pid & 255)) + _filters(topics)) + b"\xe0\0")
    c.close()
