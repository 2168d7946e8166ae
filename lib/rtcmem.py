"""CRC-checked records in regions of RTC memory: the state a node keeps across
deep sleep.

RTC memory survives deep sleep and reset but not power loss, and after a
power-on or a firmware change it may hold anything. load() therefore returns
the payload only when magic, version, length and CRC-32 all agree, and says why
not otherwise, so a node never acts on garbage.

The ESP32 exposes RTC user memory as one buffer of up to 2048 bytes, written
whole. Several users share it through fixed regions (offset, size); writing one
region leaves the others' bytes as they were.

    record = b"PR" | version (1) | length (2, LE) | payload | crc32 (4, LE)

Petrel's layout of the 2048 bytes (offset, size), in the examples and tests:
    app state 0, 256 | outbox fast path 256, 1024 | clock 1280, 64 |
    sequence counter 1344, 64 | Wi-Fi cache 1792, 64
"""

import struct
from binascii import crc32

MAGIC = b"PR"
MAX = 2048  # RTC user memory on the ESP32
OVERHEAD = 9  # header (5) + CRC (4)


class Region:
    def __init__(self, rtc, offset=0, size=MAX, version=1):
        if offset < 0 or size < OVERHEAD or offset + size > MAX:
            raise ValueError("RTC region %d+%d outside 0..%d" % (offset, size, MAX))
        self.rtc = rtc
        self.offset = offset
        self.size = size
        self.version = version

    def save(self, payload):
        if OVERHEAD + len(payload) > self.size:
            raise ValueError("RTC record too big: %d bytes for a %d-byte region"
                             % (len(payload), self.size))
        body = MAGIC + struct.pack("<BH", self.version, len(payload)) + payload
        record = body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)
        mem = self.rtc.memory()
        end = self.offset + self.size
        if len(mem) < end:
            mem = mem + bytes(end - len(mem))
        self.rtc.memory(mem[: self.offset] + record + bytes(self.size - len(record)) + mem[end:])

    def load(self):
        """-> (payload, "ok") or (None, why), why in
        empty | bad-magic | bad-version | bad-length | bad-crc."""
        raw = self.rtc.memory()[self.offset : self.offset + self.size]
        if len(raw) < OVERHEAD or raw[:2] == b"\x00\x00":
            return None, "empty"
        if raw[:2] != MAGIC:
            return None, "bad-magic"
        ver, n = struct.unpack("<BH", raw[2:5])
        if ver != self.version:
            return None, "bad-version"
        if OVERHEAD + n > len(raw):
            return None, "bad-length"
        body = raw[: 5 + n]
        if struct.unpack("<I", raw[5 + n : 9 + n])[0] != crc32(body) & 0xFFFFFFFF:
            return None, "bad-crc"
        return bytes(body[5:]), "ok"

    def clear(self):
        mem = self.rtc.memory()
        if len(mem) > self.offset:
            end = min(len(mem), self.offset + self.size)
            self.rtc.memory(mem[: self.offset] + bytes(end - self.offset) + mem[end:])
