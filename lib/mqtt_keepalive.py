"""What only a session that lasts needs, loaded when used: keepalive (a
session longer than its keepalive) and messages published to us (a persistent
session's subscriptions). A wake that connects, publishes and leaves never
loads it.

check(): keepalive between publishes. Handles what the broker has already
sent (never waits), sends PINGREQ once the session has been idle for 3/4 of
the keepalive, and fails the session (MQTTError) when a ping is not answered
within timeout_ms.

incoming(): a PUBLISH to the client (a persistent session's, QoS 0 or 1,
acknowledged) goes to client.inbox, made by the first one, 16 at most.

Both raise the client's error class, handed in as `error` (mqtt.MQTTError):
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


def incoming(c, first, body, error):
    i = 2 + struct.unpack("!H", body[:2])[0] if len(body) > 1 else 0
    q = first & 2  # 2 bytes of packet id at QoS 1
    if first & 6 > 2 or not i or len(body) < i + q:  # QoS 2 is never asked for
        c.close()
        raise error("malformed PUBLISH 0x%02x" % first)
    if q:
        c._send(b"\x40\2" + body[i:i + 2])
    try:
        inbox = c.inbox
    except AttributeError:
        inbox = c.inbox = []
    if len(inbox) < 16:
        inbox.append((body[2:i], body[i + q:]))
