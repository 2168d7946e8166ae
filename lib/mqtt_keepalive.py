"""MQTTClient.check(): keepalive between publishes, loaded only when used.

Handles what the broker has already sent (never waits), sends PINGREQ once
the session has been idle for 3/4 of the keepalive, and fails the session
(MQTTError) when a ping is not answered within timeout_ms.
"""

import select
import time

from mqtt import MQTTError


def check(c):
    if c.sock is None:
        raise MQTTError("not connected")
    now = time.ticks_ms()
    if c.ping_sent is None:
        if time.ticks_diff(now, c.last_send) >= c.keepalive * 750:
            c.ping()
    elif time.ticks_diff(now, c.ping_sent) > c.timeout_ms:
        c.close()
        raise MQTTError("no answer to a ping within %d ms" % c.timeout_ms)
    p = select.poll()
    p.register(c.raw, select.POLLIN)
    if p.poll(0):  # a packet has arrived: it is read with the usual deadline
        c._process(time.ticks_add(time.ticks_ms(), c.timeout_ms), "packet")
