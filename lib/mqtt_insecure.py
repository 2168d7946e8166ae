"""The warning of a plain-TCP connect (MQTTClient(insecure=True)), said at
every connect. A module of its own: mqtt_setup is loaded by every session,
and this code (about 350 B of heap on the 64-bit VM, with its names) only by
one that runs without TLS."""

import eventlog


def warn(host, port):
    eventlog.warn("mqtt", "INSECURE plain TCP to %s:%d", host, port)
