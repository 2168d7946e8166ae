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
        self.c.on_subscribe = lambda *a: ready.set()
        # subscribe on every (re)connect: a restarted broker has forgotten us
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.c.connect("127.0.0.1", broker.ports["plain"])
        self.c.loop_start()
        assert ready.wait(5)

    def wait(self, n, timeout=10):
        end = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < end:
            time.sleep(0.02)
        return self.messages

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
