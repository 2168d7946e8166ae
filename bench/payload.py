"""Bytes per reading of the node's uplink message (format v2, lib/senml.py),
from the node's own encoder (uplink.encoder), on the MicroPython VM:

    .venv/bin/petrel vm run bench/payload.py

A batch of n readings of 3 channels (t Cel/100, h %RH/100, p Pa/1, sampled
together every 300 s, outbox sequence numbers in a row), in each time kind
and layout: the SenML payload, the COSE_Mac0 message (HMAC 256/256), and the
whole on the wire (that message in an MQTT 3.1.1 QoS 1 PUBLISH on
petrel/p-a1b2c3/up, in one TLS 1.2 AES-GCM record).

Before format v2 (float32 values, no ids, no flags; measured the same way
with the encoder of commit f292c44): 60 readings 11.77 / 12.80 / 13.70 bytes
(payload / COSE / wire), 14.35 / 15.38 / 16.28 with n in every record;
36 readings 12.28 / 14.00 / 15.50, 14.58 / 16.31 / 17.81.
"""

import uplink

CH = [("t", "Cel", 100), ("h", "%RH", 100), ("p", "Pa", 1)]
DEV = "p-a1b2c3"
TOPIC = "petrel/p-a1b2c3/up"


class Clock:
    """The stamps are already SenML times; "undated" says None for every one."""

    def __init__(self, undated):
        self.undated = undated

    def senml_time(self, stamp, seq=None):
        return None if self.undated else stamp


class Counter:
    def next(self):
        return 100000


def batch(n, kind):
    recs = []
    for k in range(n):
        i = k // 3
        t = 1767225600 + 300 * i if kind == "dated" else -300 * (n // 3 - i)
        recs.append((5000 + k, t, uplink.pack_reading(k % 3, (2153 + 7 * i, 4512 - 13 * i, 100325 + i)[k % 3])))
    return recs


def wire(cose_len):
    body = 2 + len(TOPIC) + 2 + cose_len  # topic length, topic, packet id, payload
    rl = 1 if body < 128 else 2 if body < 16384 else 3
    return 5 + 8 + 16 + 1 + rl + body  # TLS header, explicit nonce, GCM tag; PUBLISH header


def main():
    import cose

    print("readings  kind      layout   payload  COSE   wire   (bytes per reading)")
    for n in (60, 36):
        for kind in ("dated", "relative", "undated"):
            for layout in ("compact", "named"):
                enc = uplink.encoder(DEV, CH, bytes(32), Counter(), Clock(kind == "undated"), layout=layout)
                msg = enc(batch(n, kind))
                payload = len(cose.verify(bytes(32), msg)[2])
                print("%8d  %-8s  %-7s  %7.2f  %5.2f  %5.2f" % (
                    n, kind, layout, payload / n, len(msg) / n, wire(len(msg)) / n))


main()
