"""A CRC-checked record in RTC memory, the state a node keeps across deep sleep.

RTC memory survives deep sleep and reset but not power loss, and after a
power-on or a firmware change it may hold anything. load() therefore returns
the payload only when magic, version, length and CRC-32 all agree, and says why
not otherwise, so a node never acts on garbage.

    record = b"PR" | version (1) | length (2, LE) | payload | crc32 (4, LE)
"""

import struct
from binascii import crc32

MAGIC = b"PR"
MAX = 2048  # RTC user memory on the ESP32
_HEAD = 5
_TAIL = 4


def save(rtc, payload, version=1):
    if _HEAD + len(payload) + _TAIL > MAX:
        raise ValueError("RTC record too big: %d bytes" % len(payload))
    body = MAGIC + struct.pack("<BH", version, len(payload)) + payload
    rtc.memory(body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))


def load(rtc, version=1):
    """-> (payload, "ok") or (None, why) with why in
    empty | bad-magic | bad-version | bad-length | bad-crc."""
    raw = rtc.memory()
    if not raw:
        return None, "empty"
    if len(raw) < _HEAD + _TAIL or raw[:2] != MAGIC:
        return None, "bad-magic"
    ver, n = struct.unpack("<BH", raw[2:_HEAD])
    if ver != version:
        return None, "bad-version"
    if len(raw) != _HEAD + n + _TAIL:
        return None, "bad-length"
    body = raw[: _HEAD + n]
    if struct.unpack("<I", raw[_HEAD + n :])[0] != crc32(body) & 0xFFFFFFFF:
        return None, "bad-crc"
    return body[_HEAD:], "ok"
