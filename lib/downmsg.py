"""The downlink's messages on the node: what the fleet side sends a sleeping
node, opened and checked before anything is done with it. Loaded only on a wake that
received something (a wake with an empty mailbox never imports it).

    k_mac, k_enc = downmsg.keys(hmac_key, down_key)     # down_key: None = derived
    version, body = downmsg.open_message("config", msg, k_mac, b"p-a1b2c3")
    text = downmsg.config_text(body)
    secrets = downmsg.secrets(body, k_enc)              # {"wifi_psk": "..."}
    minutes, exp = downmsg.hold(body)
    t_ms, nonce = downmsg.time_answer(body)
    m = downmsg.update_manifest(body)                   # m.t, m.v, m.n, m.z, m.h, m.c, m.f, m.p

The wire format (README, "Managing nodes in the field"): a COSE_Mac0
(RFC 9052) under the device's downlink MAC key, its sequence number the
message's version (one counter per device on the fleet side, strictly
increasing), external_aad b"petrel down <kind>" so a message of one kind can
never be taken for another, nor an uplink message for a downlink one; the
payload a CBOR map {"k": kind, ...}. Secrets are encrypted, then MACed:
AES-256-CBC under K_enc with a random IV and PKCS#7 padding, so the broker
and anyone subscribed see only ciphertext, and a forged ciphertext is refused
by its MAC before it is decrypted.

Keys: a provisioned down_key (secrets.json) is the root; without one the
root is derived from the uplink key (HMAC-SHA256(hmac_key, "petrel downlink
key")), distinct from it. K_mac and K_enc are derived from the root.

Every refusal is a Refused(reason, detail) with a reason of REASONS; nothing
in a message can raise anything else (the callers count and report them).
"""

import cose

KINDS = ("config", "secrets", "hold", "time", "update")
REASONS = ("forged", "replay", "oversized", "malformed", "invalid", "stale", "reverted")
MAX_MESSAGE = 3072  # a whole message; a config.json of 2 KiB fits with its envelope
MAX_CONFIG = 2048
MAX_HOLD_MIN = 120


class Refused(Exception):
    """args: (reason, detail): reason one of REASONS, detail for the log
    (never a secret's value)."""


class Later(Refused):
    """A refusal that may pass later (no room yet, a firmware trial on): the
    caller counts it but does not spend the message's version on it, so the
    same message (its retained copy) is taken when it comes again."""


def keys(hmac_key, down_key=None):
    """-> (K_mac, K_enc), 32 bytes each."""
    root = down_key or cose.hmac_sha256(hmac_key, b"petrel downlink key")
    return cose.hmac_sha256(root, b"petrel down mac"), cose.hmac_sha256(root, b"petrel down enc")


def open_message(kind, msg, k_mac, kid):
    """A message from the topic of `kind` -> (version, body dict); Refused
    when it is too big, not a COSE_Mac0 of ours, or its body is not a map of
    that kind. The version is for the caller to compare with its last."""
    if kind not in KINDS:
        raise Refused("malformed", "unknown kind")
    if msg is None:  # read past by the client: larger than its max_packet (mqtt_keepalive.skip)
        raise Refused("oversized", "past the client's max_packet")
    if not isinstance(msg, (bytes, bytearray)) or len(msg) > MAX_MESSAGE:
        raise Refused("oversized", "%d bytes" % len(msg))
    major, n, i = _head(msg, 0)
    if major != 6 or n != 17:
        raise Refused("malformed", "not a COSE_Mac0")
    major, n, i = _head(msg, i)
    if major != 4 or n != 4:
        raise Refused("malformed", "not a COSE_Mac0")
    protected, i = _item(msg, i, 2)
    unprotected, i = _map(msg, i)
    payload, i = _item(msg, i, 2)
    tag, i = _item(msg, i, 2)
    if i != len(msg):
        raise Refused("malformed", "bytes after the message")
    hdr, i = _map(protected, 0)
    version = hdr.get(-65537)
    if i != len(protected) or not isinstance(version, int) or version < 0:
        raise Refused("malformed", "protected header")
    if hdr.get(1) != cose.HMAC_256_256:  # the full tag only
        raise Refused("forged", "alg %r" % (hdr.get(1),))
    if not cose.equal(tag, cose._tag(k_mac, cose.HMAC_256_256, protected, payload, b"petrel down " + kind.encode())):
        raise Refused("forged", "tag does not verify")
    if unprotected.get(4) != kid:
        raise Refused("malformed", "another device's kid")
    body, i = _map(payload, 0)
    if i != len(payload) or body.get("k") != kind:
        raise Refused("malformed", "payload is not a %s" % kind)
    return version, body


# The little of CBOR (RFC 8949) the format uses, read strictly and bounded:
# definite lengths, ints, byte and text strings, maps of those, one tag. The
# node carries no general decoder (deploy leaves cbordec out); nothing here
# allocates more than the message's own bytes.
def _head(b, i):
    """-> (major type, argument, next index)."""
    if i >= len(b):
        raise Refused("malformed", "truncated")
    major, ai = b[i] >> 5, b[i] & 31
    i += 1
    if ai < 24:
        return major, ai, i
    if ai > 27:
        raise Refused("malformed", "indefinite or reserved length")
    n = 1 << (ai - 24)
    if i + n > len(b):
        raise Refused("malformed", "truncated")
    v = 0
    for j in range(i, i + n):
        v = v << 8 | b[j]
    return major, v, i + n


def _item(b, i, want=None):
    """An int, a byte string or a text string -> (value, next index); want: the major type required."""
    major, v, i = _head(b, i)
    if want is not None and major != want:
        raise Refused("malformed", "CBOR type %d where %d belongs" % (major, want))
    if major == 0:
        return v, i
    if major == 1:
        return -1 - v, i
    if major == 2 or major == 3:
        if v > len(b) - i:
            raise Refused("malformed", "truncated")
        s = bytes(b[i:i + v])
        if major == 3:
            try:
                s = s.decode()
            except Exception:  # noqa: BLE001  UnicodeError
                raise Refused("malformed", "text is not UTF-8")
        return s, i + v
    raise Refused("malformed", "CBOR type %d not in the format" % major)


def _map(b, i):
    """A map of such items (16 pairs at most) -> (dict, next index)."""
    major, n, i = _head(b, i)
    if major != 5 or n > 16:
        raise Refused("malformed", "not a small map")
    out = {}
    for _ in range(n):
        k, i = _item(b, i)
        v, i = _item(b, i)
        if k in out:
            raise Refused("malformed", "a key twice")
        out[k] = v
    return out, i


def _field(body, name, types):
    v = body.get(name)
    if not isinstance(v, types) or isinstance(v, bool):
        raise Refused("malformed", "field %s" % name)
    return v


def config_text(body):
    """-> the new config.json's text (checked by the caller's checker)."""
    raw = _field(body, "cfg", bytes)
    if len(raw) > MAX_CONFIG:
        raise Refused("oversized", "config of %d bytes" % len(raw))
    try:
        return raw.decode()
    except Exception:  # noqa: BLE001  UnicodeError
        raise Refused("malformed", "config is not UTF-8")


def secrets(body, k_enc):
    """-> the secrets to set, a dict (its form checked by the caller).
    Decrypted only after the MAC held (open_message): no padding oracle."""
    iv = _field(body, "iv", bytes)
    ct = _field(body, "ct", bytes)
    if len(iv) != 16 or not ct or len(ct) % 16:
        raise Refused("malformed", "ciphertext")
    try:
        import cryptolib
    except ImportError:
        import ucryptolib as cryptolib
    pt = cryptolib.aes(k_enc, 2, iv).decrypt(ct)  # 2: CBC
    n = pt[-1]
    if not 1 <= n <= 16 or pt[-n:] != bytes((n,)) * n:
        raise Refused("malformed", "padding")
    try:
        import json

        out = json.loads(pt[:-n].decode())
    except Exception:  # noqa: BLE001  not UTF-8, not JSON
        raise Refused("malformed", "secrets are not JSON")
    if not isinstance(out, dict):
        raise Refused("malformed", "secrets are not an object")
    return out


def hold(body):
    """-> (minutes, exp): stay awake that long; stale after Unix second exp."""
    minutes = _field(body, "min", int)
    exp = _field(body, "exp", int)
    if not 1 <= minutes <= MAX_HOLD_MIN:
        raise Refused("invalid", "hold of %d min (1..%d)" % (minutes, MAX_HOLD_MIN))
    return minutes, exp


def time_answer(body):
    """-> (the fleet side's Unix ms when it answered, the nonce it answers)."""
    return _field(body, "t", int), _field(body, "n", int)


# An update's manifest (README, "Managing nodes in the field"; app/update.py):
# the image's target, version, name, size, SHA-256, chunk size, the hash of
# chunk 0's message and the chunks' topic prefix
APP_MAX = 262144  # an app image: what a slot folder on the node's littlefs takes
FW_MAX = 2000000  # a firmware image: an OTA app partition (1.5 MiB on ESP32_GENERIC-OTA)
FW_CHUNKS = (512, 1024, 2048)  # a fw chunk never straddles a 4096-byte erase block


class Manifest:
    """t "app" | "fw", v image version (>= 1), n name, z size, h SHA-256 of
    the image, c chunk size, f SHA-256 of chunk 0's message, p topic prefix;
    chunks(): how many."""

    def chunks(self):
        return (self.z + self.c - 1) // self.c


def update_manifest(body, down=None):
    """-> a Manifest; Refused("malformed") for a field of the wrong type,
    Refused("invalid") for one out of its range. down: the node's own
    downlink topics' prefix ("<topic>/down/"), which no chunk topic may be
    under (a chunk would reach the mailbox as a downlink kind)."""
    m = Manifest()
    m.t = _field(body, "t", str)
    m.v = _field(body, "v", int)
    m.n = _field(body, "n", str)
    m.z = _field(body, "z", int)
    m.h = _field(body, "h", bytes)
    m.c = _field(body, "c", int)
    m.f = _field(body, "f", bytes)
    m.p = _field(body, "p", str)
    if m.t not in ("app", "fw"):
        raise Refused("invalid", "target %s (app or fw)" % m.t[:8])
    if m.v < 1 or m.v > 0xFFFFFFFF:
        raise Refused("invalid", "version %d" % m.v)
    if len(m.n.encode()) > 32:
        raise Refused("invalid", "name longer than 32 bytes")
    if not 1 <= m.z <= (APP_MAX if m.t == "app" else FW_MAX):
        raise Refused("invalid", "%s image of %d bytes" % (m.t, m.z))
    if len(m.h) != 32 or len(m.f) != 32:
        raise Refused("malformed", "hash length")
    if (m.t == "app" and not 512 <= m.c <= 3584) or (m.t == "fw" and m.c not in FW_CHUNKS):
        raise Refused("invalid", "chunk of %d bytes for %s" % (m.c, m.t))
    # a prefix the node subscribes under: no wildcard, no empty level, no NUL
    p = m.p
    if not 1 <= len(p.encode()) <= 64 or "+" in p or "#" in p or "\x00" in p or "//" in p \
            or p[0] == "/" or p[-1] == "/":
        raise Refused("invalid", "chunk topic prefix")
    if down and (p + "/").startswith(down):
        raise Refused("invalid", "chunk topic prefix under the node's downlink")
    return m
