"""An independent MQTT subscriber (paho) on the broker's plain listener, to see
what the node really published."""

import threading
import time


class Subscriber:
    """An independent client (paho) on the broker's plain listener."""

    def __init__(self, broker, topic):
        import paho.mqtt.client as paho

        self.messages = []
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="checker-%d" % time.monotonic_ns())
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        ready = threading.Event()
        self.subscribed = 0  # SUBACKs received: one per (re)connect

        def on_subscribe(*a):
            self.subscribed += 1
            ready.set()

        self.c.on_subscribe = on_subscribe
        # subscribe on every (re)connect: a restarted broker has forgotten us
        self.connects = 0

        def on_connect(c, u, f, rc, p=None):
            self.connects += 1
            c.subscribe(topic, qos=1)

        self.c.on_connect = on_connect
        self.c.connect("127.0.0.1", broker.ports["plain"])
        self.c.loop_start()
        assert ready.wait(5)

    def wait(self, n, timeout=10):
        end = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < end:
            time.sleep(0.02)
        return self.messages

    def reconnected(self, before, timeout=15):
        """After a broker restart: wait until this client is back and its
        subscription acknowledged (before: self.subscribed before the restart)."""
        end = time.monotonic() + timeout
        while self.subscribed <= before and time.monotonic() < end:
            time.sleep(0.02)
        return self.subscribed > before

    def settle(self, quiet=1.0, timeout=20):
        """Wait until no message has arrived for `quiet` seconds."""
        end = time.monotonic() + timeout
        n = -1
        while n != len(self.messages) and time.monotonic() < end:
            n = len(self.messages)
            time.sleep(quiet)
        return self.messages

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
