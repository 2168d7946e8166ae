"""Fuzz every input the node and its tools take, on CPython and on the VM.

Kinds: config (config.check on parsed data, config.load on the file),
secrets (secrets.json through config.check_secrets and config.load), mqtt
(lib/mqtt's packet reader fed through a fake socket), cbor (cbor.loads,
cbor.decode), cose (cose.verify), outbox (recovery of mutated segment, state
and RTC records, then append, reopen, ack), ntp (clock.Clock.sync given
hostile answers), monitor (petrel monitor's line splitting and escaping:
CPython only, it is a host tool) and the downlink (issue 16): downraw (sealed
messages mutated as bytes and CBOR heads, at downmsg.open_message), downsealed
(hostile bodies sealed with the node's key: the field readers, then one
mailbox.receive) and downmail (lists of both through mailbox.receive over a
few wakes, the node's files and counters checked after each). boards/sim/ntptime.py parses no packet (it
reads the simulated world's clock), so NTP is fuzzed at Clock.sync.

Inputs start from valid ones (the board profile's channels in a config like
simnode.node_config's, real MQTT packets, real uplink messages, real outbox
files) and are mutated (bit flips, truncation, splices, type swaps, huge
numbers, deep nesting, NaN/Infinity literals, long strings), plus random
bytes. Input i of a kind is made from (seed, kind, i) alone by a PRNG of our
own, so the same input comes out on both interpreters and any one can be
replayed (--repro).

Every input must be answered with a valid object or the component's one
documented error (config.ConfigError, mqtt.MQTTError, ValueError for CBOR and
COSE; nothing at all for config.load and the outbox's recovery; OSError from
Clock.sync only when NTP raised it) within MAX_S, and within a memory bound
(CPython: RLIMIT_AS, RSS growth; VM: a fixed heap, bytes allocated per input).
Anything else is an escape, reported once per (exception type, location) with
the shortest input that raised it.

    .venv/bin/python host_tests/fuzz_node.py --inputs 100000 --vm-inputs 10000 --seed 1   # make fuzz
    .venv/bin/python host_tests/fuzz_node.py --repro config 1 4711 [--vm]                 # one input, traceback

The driver runs each kind in a worker process (CPython, or `petrel vm run` on
the VM: this file, with --worker) and kills a worker whose input takes longer
than HANG_S (a hang), then goes on from the next input. host/test_fuzz_node.py
runs a slice in make test. This module's top half runs on MicroPython.
"""

import sys

MP = sys.implementation.name == "micropython"
MAX_S = 1.0  # every input answered within this (CPython: CPU time; the VM: its clock, wall time)
HANG_S = 10  # no answer this long: the worker is killed, the input counted as a hang
VM_HEAP = "2M"  # the VM's fixed heap: a runaway allocation is a MemoryError there

if MP:  # the VM's own clock: `time` is the simulated board's virtual one
    _sim_utime = sys.modules.get("utime")
    sys.modules.pop("utime", None)
    import utime as _rt

    if _sim_utime is not None:
        sys.modules["utime"] = _sim_utime

    def now_us():
        return _rt.ticks_us()

    def elapsed_us(t0):
        return _rt.ticks_diff(_rt.ticks_us(), t0)
else:
    import time as _rt  # CPython's: this file is not on the firmware side

    def now_us():
        # CPU time, as fuzz_collector does: on a shared machine the wall time holds
        # other processes' turns (a 10 ms input measured 1.8 s under a load of 4).
        # A hang is still caught: the driver's watchdog is wall time.
        return int(_rt.process_time() * 1000000)

    def elapsed_us(t0):
        return now_us() - t0


def _here():
    f = globals().get("__file__") or sys.argv[0]
    i = f.rfind("/")
    return f[:i] if i > 0 else "."


HERE = _here()  # host_tests
ROOT = HERE[: HERE.rfind("/")] if HERE.rfind("/") > 0 else ".."


# ------------------------------------------------------------ a PRNG of our own
class Rng:
    """xorshift32: the same numbers on both interpreters."""

    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 0x9E3779B9
        for _ in range(4):
            self.u32()

    def u32(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.u32() % n if n > 0 else 0

    def chance(self, p):
        return self.u32() < p * 4294967296

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def bytes(self, n):
        return bytes(self.u32() & 255 for _ in range(n))


def input_rng(seed, kind, i):
    h = 2166136261
    for c in "%d/%s/%d" % (seed, kind, i):
        h = ((h ^ ord(c)) * 16777619) & 0xFFFFFFFF
    return Rng(h)


# ------------------------------------------------------------ byte mutations
SPECIAL = (0x00, 0x18, 0x1B, 0x3B, 0x5B, 0x5F, 0x7B, 0x7F, 0x80, 0x9B, 0x9F, 0xBB, 0xBF, 0xC4, 0xD1, 0xF9, 0xFB,
           0xFF, 0x0A, 0x0D, 0x22, 0x5C)


def mutate_bytes(rng, data, other=b""):
    """One or a few byte-level mutations of data (other: splice material)."""
    data = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        what = rng.below(100)
        if what < 30:
            for _ in range(rng.choice((1, 1, 2, 8))):
                if data:
                    data[rng.below(len(data))] ^= 1 << rng.below(8)
        elif what < 42:
            if data:
                data[rng.below(len(data))] = rng.choice(SPECIAL)
        elif what < 55:
            data = data[: rng.below(len(data) + 1)]
        elif what < 68:
            cut = rng.below(len(data) + 1)
            data = data[:cut] + other[rng.below(len(other) + 1):]
        elif what < 80:
            i = rng.below(len(data) + 1)
            data[i:i] = rng.bytes(1 + rng.below(8))
        elif what < 90:
            i = rng.below(len(data) + 1)
            data[i:i] = bytes(data[i: i + 1 + rng.below(64)]) * (2 + rng.below(40))
        else:
            if data:
                i = rng.below(len(data))
                data = data[:i] + data[i + 1 + rng.below(16):]  # no slice deletion on the VM
    return bytes(data)


# ------------------------------------------------------------ hostile JSON
class Raw:
    """JSON text written as is: literals json.dumps cannot make (NaN, 1e999)."""

    def __init__(self, text):
        self.text = text


def jdump(x):
    """JSON text of x, with Raw literals; the same text on both interpreters."""
    if isinstance(x, Raw):
        return x.text
    if x is None:
        return "null"
    if x is True:
        return "true"
    if x is False:
        return "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, str):
        out = ['"']
        for ch in x:
            o = ord(ch)
            if ch == '"' or ch == "\\":
                out.append("\\" + ch)
            elif o < 0x20:
                out.append("\\u%04x" % o)
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(x, dict):
        return "{" + ", ".join(jdump(str(k)) + ": " + jdump(v) for k, v in x.items()) + "}"
    return "[" + ", ".join(jdump(v) for v in x) + "]"


def _nest(depth, leaf):
    """leaf nested depth deep in lists and objects, as JSON text (no recursion to write it)."""
    opens = "".join("[" if k % 2 else '{"a": ' for k in range(depth))
    closes = "".join("]" if k % 2 else "}" for k in range(depth - 1, -1, -1))
    return Raw(opens + leaf + closes)


def odd_json(rng):
    """A hostile JSON value (fresh each call: mutations must not change a table)."""
    n = rng.below(44)
    if n < 20:
        return (0, -1, 1, 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 63, 10 ** 30, -(10 ** 30), 1000000, 120, 10 ** 6 + 1,
                0.5, 1e-9, 1e308, -1e308, 5e-324, -0.0, 65535, 86401)[n]
    if n < 30:
        return Raw(("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "-1" + "0" * 60,
                    "1e-999", "0.1e2147483648", "123456789012345678901234567890.5")[n - 20])
    if n < 40:
        return ("", "x", "inf%", "nan%", "1e999%", "-5%", "1e999s", "nanms", "10s", "é\u202e\x00")[n - 30]
    return ("y" * (1 + rng.below(3000)), True, None, _nest(1 + rng.below(300), "1"))[n - 40]


FILTER_SAMPLES = (
    {"offset": 0.5}, {"multiply": 1.2}, {"calibrate_linear": [[0, 0], [10, 11]]},
    {"calibrate_linear": {"method": "exact", "datapoints": [[0, 1], [5, 6], [10, 12]]}},
    {"calibrate_polynomial": {"degree": 2, "datapoints": [[0, 0], [1, 1], [2, 4], [3, 9]]}},
    {"filter_out": [85, -40]}, {"clamp": {"min_value": -40, "max_value": 85, "ignore_out_of_range": True}},
    {"round": 1}, {"median": {"window_size": 5, "send_every": 3}}, {"quantile": {"window_size": 7, "quantile": 0.9}},
    {"min": {"window_size": 4}}, {"max": {"window_size": 4}}, {"sliding_window_moving_average": {"window_size": 5}},
    {"exponential_moving_average": {"alpha": 0.2, "send_every": 2}}, {"skip_initial": 2}, {"throttle": "10s"},
    {"throttle_average": "1min"}, {"heartbeat": {"period": "5min", "optimistic": True}},
    {"timeout": {"period": "10min", "value": 0}}, {"debounce": "500ms"}, {"delta": 0.1}, {"delta": "5%"},
    {"or": [{"throttle": "10s"}, {"delta": 1}]}, {"hampel": {"window_size": 7, "n_sigmas": 3}},
)
FILTER_KEYS = ("value", "datapoints", "degree", "method", "values", "min_value", "max_value", "accuracy_decimals",
               "count", "window_size", "send_every", "send_first_at", "quantile", "alpha", "period", "optimistic",
               "n_sigmas", "replace", "ignore_out_of_range")


def _copy(x):
    if isinstance(x, list):
        return [_copy(y) for y in x]
    if isinstance(x, dict):
        return dict((k, _copy(v)) for k, v in x.items())
    return x


def _load_board_channels():
    import json

    with open(ROOT + "/boards/esp32-node.json") as f:
        return json.load(f)["hardware"]["channels"]


def base_config(channels):
    """What simnode.node_config writes for a node (TLS-PSK), the board's channels."""
    return {"device_id": "node-1", "sample_s": 300, "uplink_every": 12, "batch": 36, "network_budget_ms": 10000,
            "channels": _copy(channels), "alarms": [{"channel": "t", "above": 30, "hysteresis": 0.5}],
            "wifi": {"ssid": "petrel-lab"}, "broker": {"host": "localhost", "port": 8883, "tls": "psk",
                                                      "psk_identity": "node-1"},
            "power": {"low_mv": 2700, "critical_mv": 2500}, "safe_mode": {"after_crashes": 3},
            "senml_layout": "compact"}


def _containers(x, out):
    """Every dict and list inside x (x included)."""
    if isinstance(x, (dict, list)):
        out.append(x)
        for v in (x.values() if isinstance(x, dict) else x):
            _containers(v, out)
    return out


def mutate_tree(rng, cfg):
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        what = rng.below(100)
        chans = cfg.get("channels") if isinstance(cfg, dict) else None
        if what < 25 and isinstance(chans, list) and chans and isinstance(chans[0], dict):
            ch = rng.choice(chans)
            if not isinstance(ch, dict):
                continue
            flt = ch.setdefault("filters", [])
            if not isinstance(flt, list):
                continue
            f = _copy(rng.choice(FILTER_SAMPLES))
            name = list(f)[0]
            if rng.chance(0.7):  # a hostile option
                if isinstance(f[name], dict) and rng.chance(0.7):
                    f[name][rng.choice(FILTER_KEYS)] = odd_json(rng)
                else:
                    f[name] = odd_json(rng)
            flt.insert(rng.below(len(flt) + 1), f)
        elif what < 30 and isinstance(chans, list) and chans and isinstance(chans[0], dict):
            d = rng.choice((10, 50, 200, 400))  # nested `or` filters, written as text
            chans[0]["filters"] = [Raw('{"or": [' * d + '{"delta": 1}' + "]}" * d)]
        elif what < 34 and isinstance(chans, list) and chans and isinstance(chans[0], dict):
            deg = rng.choice((3, 20, 60, 120, 200))
            chans[0]["filters"] = [{"calibrate_polynomial": {"degree": deg, "datapoints": [
                [i, i * 1.5 + 0.25] for i in range(deg + 1)]}}]
        elif what < 38 and isinstance(chans, list) and chans and isinstance(chans[0], dict):
            name = rng.choice(("skip_initial", "round", "median", "delta", "offset", "clamp", "timeout"))
            v = rng.choice((2 ** 31, 2 ** 31 - 1, 2 ** 32, 10 ** 30, 1000000, 10 ** 9, Raw("1e999"), Raw("NaN"),
                            "inf%", Raw("Infinity"), 2 ** 53))
            if name == "median":
                v = {"window_size": rng.choice((5, v)), "send_every": v}
            elif name == "clamp":
                v = {"min_value": v, "max_value": v}
            elif name == "timeout":
                v = {"period": "1s", "value": v}
            chans[0].setdefault("filters", []).append({name: v}) if isinstance(chans[0].get("filters", []),
                                                                               list) else None
        elif what < 44 and isinstance(cfg.get("alarms"), list) and cfg["alarms"]:
            a = cfg["alarms"][0]
            if isinstance(a, dict):
                a[rng.choice(("above", "below", "hysteresis", "channel"))] = rng.choice(
                    (Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), 10 ** 30, -1, "30", None))
        else:
            boxes = _containers(cfg, [])
            box = rng.choice(boxes)
            if isinstance(box, dict):
                keys = list(box)
                r = rng.below(10)
                if keys and r < 6:
                    box[rng.choice(keys)] = odd_json(rng)
                elif keys and r < 8:
                    del box[rng.choice(keys)]
                else:
                    box[rng.choice(("x", "format", "sample_s", "topic", "filters", "unit", "scale", "sensor"))] = \
                        odd_json(rng)
            elif box:
                r = rng.below(10)
                if r < 5:
                    box[rng.below(len(box))] = odd_json(rng)
                elif r < 7:
                    del box[rng.below(len(box))]
                else:
                    for _ in range(rng.choice((1, 16, 40))):
                        box.append(_copy(box[0]))
    return cfg


def json_input(rng, base):
    """A configuration-like JSON text: a mutated tree, then maybe its bytes."""
    r = rng.below(100)
    if r < 3:
        return rng.bytes(rng.below(300))
    tree = mutate_tree(rng, _copy(base)) if r < 95 else _copy(base)
    text = jdump(tree).encode()
    if rng.chance(0.25):
        text = mutate_bytes(rng, text, jdump(base).encode())
    return text


# ------------------------------------------------------------ escape bookkeeping
class Violation(Exception):
    """An input answered wrongly (not an exception of the component's own):
    args (what, detail); escapes are told apart by `what` alone."""


def must(cond, what, detail=""):
    if not cond:
        raise Violation(what, detail)


def where(e):
    """'Type at file:line' of where e was raised (the innermost frame)."""
    if isinstance(e, Violation):
        return "wrong answer: %s" % e.args[0]  # the details (values) go with the reproducer
    loc = "?"
    if MP:
        import io

        s = io.StringIO()
        sys.print_exception(e, s)
        for line in s.getvalue().split("\n"):
            line = line.strip()
            if line.startswith('File "'):
                loc = line
    else:
        import traceback

        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            loc = 'File "%s", line %d, in %s' % (tb[-1].filename, tb[-1].lineno, tb[-1].name)
    loc = loc.replace(ROOT + "/", "")
    return "%s at %s" % (type(e).__name__, loc)


def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and x - x == 0


# ------------------------------------------------------------ kinds
class Kind:
    """gen(rng) -> one input; check(input): return normally, raise the documented
    error (allowed), or anything else (an escape). size(input): for 'shortest'."""

    allowed = ()
    vm = True
    share = 1  # of make fuzz's inputs a kind: the slow whole-node kinds take fewer

    def setup(self, tmp):
        self.tmp = tmp

    def size(self, x):
        return len(x)

    def show(self, x):
        return repr(x)


def _quiet_log():
    """eventlog formats as ever (a bad format argument is still found) and prints nothing."""
    import eventlog

    def log(lvl, tag, fmt="", *args):
        if args:
            fmt % args

    eventlog.log = log


class ConfigKind(Kind):
    name = "config"

    def setup(self, tmp):
        import json

        from app import config

        _quiet_log()
        self.tmp = tmp
        self.config = config
        self.base = base_config(_load_board_channels())
        self.good = json.dumps(self.base)
        self.paths = (tmp + "/config.json", tmp + "/secrets.json", tmp + "/config.good.json")
        self.allowed = (config.ConfigError,)

    def gen(self, rng):
        return json_input(rng, self.base)

    def check(self, text):
        import json

        config = self.config
        try:
            data = json.loads(text.decode())
        except (ValueError, RuntimeError, MemoryError, UnicodeError):  # the parser's, not ours: load() copes
            data = None
        ok = False
        if data is not None:
            try:
                valid_config(config.check(data), "config.json")
                ok = True
            except config.ConfigError:
                pass
        # the node's path: the file, a last good one beside it
        with open(self.paths[2], "w") as f:
            f.write(self.good)
        with open(self.paths[0], "wb") as f:
            f.write(text)
        cfg = config.load(*self.paths)
        must(cfg.source == ("config.json" if ok else "config.good.json"),
             "config.load did not use the file, or used a bad one",
             "used %s, check passed: %s" % (cfg.source, ok))
        valid_config(cfg, cfg.source)


def valid_config(cfg, source):
    """What a wake does with a configuration must work: alarms compare, chains run."""
    must(cfg.sample_s >= 10 and isinstance(cfg.device_id, str), "config fields")
    for a in cfg.alarms:
        for v in (a.below, a.above, a.hysteresis):
            must(v is None or finite(v), "a non-finite alarm threshold accepted", repr(v))
    must(isinstance(cfg.channels_crc, int), "no fingerprint of the channels")
    for ch in cfg.channels:
        now = 0
        for v in (21.5, -40.0, 85.0, None, 3.3, 21.25, 1000.0, -273.0, 21.5, 22.0):
            # what cycle pushes: an int in 1/scale of the unit, None when the sensor failed
            out = ch.chain.push(None if v is None else int(round(v * ch.scale)), now)
            must(out is None or isinstance(out, int), "a chain pushed a non-int", repr(out))
            out = ch.chain.tick(now + 500)
            must(out is None or isinstance(out, int), "a chain ticked a non-int", repr(out))
            now += 60000
        ch.chain.snapshot()


class SecretsKind(Kind):
    name = "secrets"

    def setup(self, tmp):
        import json

        from app import config

        _quiet_log()
        self.tmp = tmp
        self.config = config
        self.good = json.dumps(base_config(_load_board_channels()))
        self.base = {"hmac_key": "a1" * 32, "psk_key": "0f" * 16, "wifi_psk": "5c" * 32}
        self.paths = (tmp + "/config.json", tmp + "/secrets.json", tmp + "/config.good.json")
        self.allowed = (config.ConfigError,)
        with open(self.paths[0], "w") as f:
            f.write(self.good)

    def gen(self, rng):
        base = _copy(self.base)
        if rng.chance(0.3):
            base[rng.choice(("hmac_key", "psk_key", "wifi_psk", "x"))] = rng.choice(
                ("ab" * rng.below(200), "zz" * 16, "a1" * 32 + "é", "0" * 15, "0" * 129, "0" * 128, "0" * 16))
        return json_input(rng, base)

    def check(self, text):
        import json

        config = self.config
        try:
            data = json.loads(text.decode())
        except (ValueError, RuntimeError, MemoryError, UnicodeError):
            data = None
        if data is not None:
            try:
                config.check_secrets(data)
            except config.ConfigError as e:
                must("secrets.json" in str(e), "error does not name the file")
        with open(self.paths[1], "wb") as f:
            f.write(text)
        cfg = config.load(*self.paths)
        must(cfg.source == "config.json", "a bad secrets file cost the configuration", cfg.source)
        for k in ("hmac_key", "psk_key", "wifi_psk"):
            v = cfg.secret(k, None)
            if v is not None:
                must(isinstance(v, str) and 16 <= len(v) <= 128 and len(v) % 2 == 0, "a malformed secret kept", k)
                bytes.fromhex(v)


class FakeSock:
    """The broker's side of a socket: the input's bytes, in chunks of its choice."""

    def __init__(self, stream, rng, end):
        self.stream = stream
        self.pos = 0
        self.rng = rng
        self.end = end  # at the end: "closed" (b"") or "timeout" (OSError)
        self.sent = []

    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def sendall(self, msg):
        self.sent.append(bytes(msg))

    def recv(self, n):
        import errno

        if self.pos >= len(self.stream):
            if self.end == "timeout":
                raise OSError(errno.ETIMEDOUT)
            return b""
        k = 1 + self.rng.below(n)
        out = self.stream[self.pos: self.pos + k]
        self.pos += len(out)
        return out

    def close(self):
        pass


class FakeSocketModule:
    def __init__(self):
        self.next = None

    def getaddrinfo(self, host, port):
        return [(2, 1, 0, "", (host, port))]

    def socket(self):
        return self.next


def _mqtt_packets(rng):
    """What a broker sends a node that publishes 3 messages at QoS 1."""
    def publish(topic, msg, qos, pid):
        body = bytes((len(topic) >> 8, len(topic) & 255)) + topic + (bytes((pid >> 8, pid & 255)) if qos else b"")
        body += msg
        return bytes((0x30 | qos << 1,)) + _len(len(body)) + body

    pkts = [b"\x40\x02\x00\x01", b"\x40\x02\x00\x02", b"\x40\x02\x00\x03", b"\xd0\x00",
            publish(b"petrel/node-1/down", b"cfg", 0, 0), publish(b"petrel/node-1/down", b"x" * 200, 1, 7)]
    out = []
    for _ in range(1 + rng.below(6)):
        out.append(rng.choice(pkts))
    return out


def _len(n):
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


class MqttKind(Kind):
    name = "mqtt"

    def setup(self, tmp):
        import mqtt

        _quiet_log()
        self.mqtt = mqtt
        self.fake = FakeSocketModule()
        mqtt.socket = self.fake
        self.allowed = (mqtt.MQTTError,)

    def gen(self, rng):
        connack = bytes((0x20, 2, rng.choice((0, 1)), 0))
        pkts = _mqtt_packets(rng)
        stream = connack + b"".join(pkts)
        r = rng.below(100)
        if r < 5:
            stream = rng.bytes(rng.below(64))
        elif r < 15:  # hostile heads: remaining length past max_packet, malformed, 5 bytes
            stream = connack + rng.choice((b"\x40\xff\xff\xff\x7f", b"\x40\x80\x80\x80\x80\x01", b"\x30\xff\x7f",
                                           b"\x32\x05\x00\x09ab", b"\x34\x02\x00\x01", b"\x40\x02\x99\x99",
                                           b"\x30\x00", b"\x32\x02\x00\x00", b"\x20\x02\x00\x00"))
        elif r < 90:
            stream = mutate_bytes(rng, stream, b"".join(_mqtt_packets(rng)))
        return (stream, rng.u32(), rng.choice(("closed", "timeout")), rng.choice((4096, 4096, 64)))

    def size(self, x):
        return len(x[0])

    def check(self, x):
        stream, chunk_seed, end, max_packet = x
        mqtt = self.mqtt
        c = mqtt.MQTTClient("node-1", "broker", 1883, insecure=True, timeout_ms=2000, window=4,
                            max_packet=max_packet)
        sock = self.fake.next = FakeSock(stream, Rng(chunk_seed), end)
        pids = []
        try:
            c.connect()
            for k in range(3):
                pids.append(c.publish("petrel/node-1/up", b"r" * (k + 1), qos=1))
            c.wait_all()
            while sock.pos < len(stream):  # what else the broker sent
                c._process(_sim_deadline(2000))
        except mqtt.MQTTError:
            must(c.sock is None, "MQTTError left the connection open")
            raise
        finally:
            must(len(set(c.acked)) == len(c.acked) and all(p in pids for p in c.acked), "PUBACKs for ids never sent counted", repr(c.acked))
            must(len(getattr(c, "inbox", ())) <= 16, "inbox unbounded")


def _sim_deadline(ms):
    import mqtt  # its `time` is the board's on both interpreters (ours is the host's under CPython)

    return mqtt.time.ticks_add(mqtt.time.ticks_ms(), ms)


def _uplink_messages(n, rng):
    """Real uplink messages (COSE_Mac0 around SenML CBOR) from lib/uplink's encoder."""
    import uplink

    class Clk:  # one time kind a batch, as drain's kind= makes them
        def __init__(self, kind):
            self.kind = kind

        def senml_time(self, stamp, seq=None):
            return (stamp, -stamp, None)[self.kind]

    class Ctr:
        k = 1000

        def next(self):
            self.k += 1
            return self.k

    chans = [("t", "Cel", 100), ("rh", "%RH", 10), ("bat", "V", 1000), ("x", "Cel", 1024)]
    out = []
    for m in range(n):
        enc = uplink.encoder("node-1", chans, KEY, Ctr(), Clk(m % 3), layout=("compact", "named")[m % 2])
        recs = [(1000 + m * 40 + i, 1767225600 + 60 * i if m % 3 == 0 else 600 + 60 * i,
                 uplink.pack_reading(i % 4, (i * 7919) % 20000 - 5000, (0, 1, 6)[i % 3]))
                for i in range(1 + rng.below(36))]
        out.append(enc(recs))
    return out


KEY = bytes(range(32))


class CborKind(Kind):
    name = "cbor"

    def setup(self, tmp):
        import cbor
        import cose

        self.cbor = cbor
        rng = Rng(7)
        msgs = _uplink_messages(6, rng)
        self.seeds = [cose.verify(KEY, m)[2] for m in msgs] + msgs
        self.seeds.append(cbor.dumps({"fw": "0.7.0", "batt": 3010, "q": 4, "uplink_s": 3600, "rssi": -67,
                                      "awake_ms": 812.5, "crashes": [1, 2], "t": cbor.Tag(1, 1767225600)}))
        self.seeds.append(cbor.dumps([1.5, -0.0, 1e300, float("inf"), b"\x00\xff", "é", None, True, [], {}]))
        self.allowed = (ValueError,)

    def gen(self, rng):
        r = rng.below(100)
        if r < 5:
            return rng.bytes(rng.below(200))
        if r < 12:  # hostile heads: huge lengths, deep nesting, tags on tags
            return rng.choice((b"\x5b" + b"\xff" * 8, b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00",
                               b"\xbb" + b"\x7f" * 8, b"\x81" * (10 + rng.below(2000)),
                               b"\xc6" * (10 + rng.below(2000)) + b"\x00", b"\xa1" * 300 + b"\x00",
                               b"\x7a\xff\xff\xff\xff", b"\xf9\x7e\x00", b"\xfb" + b"\xff" * 8,
                               b"\x1b" + b"\xff" * 8, b"\x3b" + b"\xff" * 8, b"\xc2\x58\x40" + b"\xff" * 64))
        return mutate_bytes(rng, rng.choice(self.seeds), rng.choice(self.seeds))

    def check(self, data):
        obj = self.cbor.loads(data)
        must(_cbor_ok(obj, 0, self.cbor), "loads gave a non-CBOR type", repr(type(obj)))
        obj, end = self.cbor.decode(data, 0)
        must(0 < end <= len(data), "decode ended outside the input", "%d of %d" % (end, len(data)))


def _cbor_ok(x, depth, cbor):
    if depth > cbor.MAX_DEPTH + 1:
        return False
    if isinstance(x, list):
        return all(_cbor_ok(y, depth + 1, cbor) for y in x)
    if isinstance(x, dict):
        return all(_cbor_ok(k, depth + 1, cbor) and _cbor_ok(v, depth + 1, cbor) for k, v in x.items())
    if isinstance(x, cbor.Tag):
        return isinstance(x.tag, int) and _cbor_ok(x.value, depth + 1, cbor)
    return x is None or isinstance(x, (bool, int, float, str, bytes))


class CoseKind(Kind):
    name = "cose"

    def setup(self, tmp):
        import cbor
        import cose

        self.cbor = cbor
        self.cose = cose
        self.seeds = _uplink_messages(6, Rng(11))
        self.seeds.append(cose.mac0(KEY, b"node-1", 5, b"\xa1\x00\x01", alg=cose.HMAC_256_64))
        self.allowed = (ValueError,)

    def gen(self, rng):
        cbor = self.cbor
        r = rng.below(100)
        if r < 5:
            return rng.bytes(rng.below(120))
        if r < 50:
            return mutate_bytes(rng, rng.choice(self.seeds), rng.choice(self.seeds))
        # a structural mutation, MACed with the right key so it reaches the checks after the tag
        odd = (0, -1, 1, 4, 5, 2 ** 63, 2 ** 64 - 1, -(2 ** 64), True, None, "5", b"node-1", b"", [], {}, 1.5,
               float("nan"), cbor.Tag(2, b"\x01" * 9), "k" * 300)
        hdr = {1: 5, -65537: 1 + rng.below(1000)}
        unprot = {4: b"node-1"}
        payload = b"\x80"
        for _ in range(1 + rng.below(3)):
            w = rng.below(6)
            if w == 0 and isinstance(hdr, dict):
                hdr[rng.choice((1, -65537, 4, 33, -65536))] = rng.choice(odd)
            elif w == 1:
                unprot[rng.choice((4, 1, -65537, 99))] = rng.choice(odd)
            elif w == 2 and isinstance(hdr, dict):
                hdr.pop(rng.choice((1, -65537)), None)
            elif w == 3:
                unprot.pop(4, None)
            elif w == 4:
                payload = rng.choice((b"", rng.bytes(rng.below(300)), b"\xff" * 1000))
            else:
                hdr = rng.choice(odd)
        try:
            protected = cbor.dumps(hdr) if not isinstance(hdr, bytes) else hdr
        except (ValueError, TypeError):
            protected = b"\xa0"
        alg = hdr.get(1, 5) if isinstance(hdr, dict) else 5
        tag = self.cose._tag(KEY, alg if alg in (4, 5) else 5, protected, payload, b"")
        try:
            return cbor.dumps(cbor.Tag(17, [protected, unprot, payload, tag]))
        except (ValueError, TypeError):
            return cbor.dumps(cbor.Tag(17, [protected, {4: b"node-1"}, payload, tag]))

    def check(self, data):
        kid, seq, payload = self.cose.verify(KEY, data, algs=(self.cose.HMAC_256_64, self.cose.HMAC_256_256))
        must(isinstance(kid, bytes) and isinstance(payload, bytes), "verify gave a kid or payload not bytes", repr(type(kid)))
        must(isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0, "verify gave a bad seq", repr(seq))


U32_ODD = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 1 << 30, 12, 40)


class OutboxKind(Kind):
    name = "outbox"

    def setup(self, tmp):
        import os

        import machine
        import outbox
        import rtcmem
        import uplink

        _quiet_log()
        self.os = os
        self.outbox = outbox
        self.uplink = uplink
        self.dir = tmp + "/outbox"
        self.rtcmem = rtcmem
        self.region = rtcmem.Region(machine.RTC(), 256, 1024)
        self.images = []  # (rtc?, {name: bytes}, rtc bytes)
        for mode in range(4):
            self._clean()
            rtc = self.region if mode % 2 else None
            self.region.clear()
            ob = outbox.Outbox(self.dir, capacity=8192, segment_bytes=512, rtc=rtc)
            if mode >= 2:
                ob.start_at(1 << 29)
            for i in range(60):
                ob.append(uplink.pack_reading(i % 3, 2000 + i, i & 1), 1767225600 + 60 * i)
                if i == 20:
                    ob.ack(ob.peek(10)[-1][0])
            files = {}
            for name in os.listdir(self.dir):
                with open(self.dir + "/" + name, "rb") as f:
                    files[name] = f.read()
            self.images.append((mode % 2 == 1, files, self.region.load()[0]))
        self.allowed = ()

    def _clean(self):
        os = self.os
        try:
            names = os.listdir(self.dir)
        except OSError:
            os.mkdir(self.dir)
            return
        for name in names:
            p = self.dir + "/" + name
            try:
                os.remove(p)
            except OSError:
                os.rmdir(p)

    def gen(self, rng):
        import struct
        from binascii import crc32

        outbox = self.outbox
        rtc, files, rtcbytes = self.images[rng.below(len(self.images))]
        files = dict(files)
        names = sorted(files)
        for _ in range(1 + rng.below(3)):
            w = rng.below(100)
            name = rng.choice(names)
            if w < 35:
                other = files[rng.choice(names)]
                files[name] = mutate_bytes(rng, files[name], other)
            elif w < 50 and name.endswith(".q"):  # a record valid by its CRC, hostile in content
                seq = rng.choice(U32_ODD)
                t = rng.choice(U32_ODD)
                rec = outbox.encode(seq, t, rng.choice((b"", b"\x00" * 6, rng.bytes(rng.below(256)))))
                data = files[name]
                at = rng.choice((len(data), 4, len(data) // 2))
                files[name] = data[:at] + rec + data[at:]
            elif w < 65:  # a state file valid by its CRC, hostile counters
                body = outbox.STATE_MAGIC + struct.pack("<IIIIII", *[rng.choice(U32_ODD) if rng.chance(0.5) else 0
                                                                    for _ in range(6)])
                files["state"] = body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)
            elif w < 72:
                files[rng.choice(("state.tmp", "99999999.q", "00000001.q", "junk", "0000001.q",
                                  "00000002.q.tmp"))] = rng.choice((b"", b"PQ\x01\x00", rng.bytes(40)))
            elif w < 77:
                files.pop(name, None)
                names = sorted(files) or ["state"]
                files.setdefault("state", b"")
            elif w < 85:
                rtcbytes = mutate_bytes(rng, rtcbytes or b"", b"")
            elif w < 95:  # an RTC record valid by its CRC: hostile next seq and records
                recs = b"".join(outbox.encode(rng.choice(U32_ODD), rng.choice(U32_ODD), b"\x00" * 6)
                                for _ in range(rng.below(4)))
                rtcbytes = struct.pack("<I", rng.choice(U32_ODD)) + recs
            else:
                files[name] = b""
        if rtcbytes is not None:  # what fits the region (Region.save refuses more)
            rtcbytes = rtcbytes[: self.region.size - self.rtcmem.OVERHEAD]
        return (rtc, files, rtcbytes)

    def size(self, x):
        return sum(len(v) for v in x[1].values()) + len(x[2] or b"")

    def check(self, x):
        rtc, files, rtcbytes = x
        self._clean()
        for name, data in files.items():
            with open(self.dir + "/" + name, "wb") as f:
                f.write(data)
        self.region.clear()
        if rtcbytes is not None:
            self.region.save(rtcbytes)
        region = self.region if rtc else None

        def open_():
            return self.outbox.Outbox(self.dir, capacity=8192, segment_bytes=512, rtc=region)

        ob = open_()  # recovery never raises
        recs = ob.peek(100000)
        seqs = [r[0] for r in recs]
        must(all(seqs[k] < seqs[k + 1] for k in range(len(seqs) - 1)), "peek out of order")
        must(all(s > ob.floor for s in seqs), "peek below the floor")
        drops = ob.drops
        payload = self.uplink.pack_reading(1, 2345, 0)
        try:
            seq = ob.append(payload, 1767229200)
        except (ValueError, OSError):  # refused (outbox.Exhausted: no number left), nothing lost
            seq = None
        if seq is not None:
            must(not seqs or seq > seqs[-1], "append reused a sequence number", str(seq))
            recs.append((seq, 1767229200, payload))
        ob2 = open_()  # a reboot
        after = ob2.peek(100000)
        for r in recs:
            must(r in after or (ob2.drops > drops and r[0] <= ob2.floor), "a reading lost at reopen", str(r))
        if after:
            ob2.ack(after[-1][0])
            ob3 = open_()
            back = [r[0] for r in ob3.peek(100000)]
            must(back == [], "acked readings came back", "acked up to %d; back: %r; state acked %d floor %d" % (
                after[-1][0], back[:5], ob2.acked, ob2.floor))


class NtpKind(Kind):
    """clock.Clock.sync with ntp_time returning hostile answers (boards/sim/ntptime
    parses no bytes: it reads the simulated world's clock)."""

    name = "ntp"
    BUILD = 1764000000

    def setup(self, tmp):
        import clock
        import machine
        import rtcmem
        import simstate

        _quiet_log()
        self.clock = clock
        self.board = simstate.board
        self.rtc = machine.RTC()
        self.rtcmem = rtcmem
        self.path = tmp + "/clock"
        self.allowed = (OSError,)

    def gen(self, rng):
        truth = 1767225600 + rng.below(86400 * 365)
        answers = []
        for _ in range(3):
            r = rng.below(100)
            if r < 30:
                a = truth + rng.choice((0, 1, 3, -2, 7, 90000, -90000))
            elif r < 45:
                a = rng.choice((2 ** 31, 2 ** 32, 2 ** 32 - 1, 2 ** 40, 2 ** 64, 10 ** 30, -1, -(2 ** 31), 0,
                                -(10 ** 30), 4102444800, 3000000000))
            elif r < 60:
                a = rng.choice((float("nan"), float("inf"), float("-inf"), 1.5e9 + 0.25, 1e300, -1e300,
                                float(truth) + 0.5, 5e-324))
            elif r < 70:
                a = "raise"
            else:
                a = truth + rng.choice((10 * 365 * 86400, 40 * 365 * 86400, -5 * 365 * 86400, 86400 * 2))
            answers.append(a)
        # 0: power-on (RTC at 2000); 1: synced an hour ago (answers about now = truth + 3600);
        # 2: RTC right but the floor on flash an hour ahead (clock unknown)
        state = rng.below(3)
        return (truth, state, answers, rng.below(1000), rng.choice((None, 0, 20, -50)))

    def size(self, x):
        return len(repr(x[2]))

    def check(self, x):
        import errno

        truth, state, answers, seq, ppm = x
        clock = self.clock
        epoch = clock.EPOCH_TO_UNIX
        try:
            import os

            os.remove(self.path)
        except OSError:
            pass
        store = self.rtcmem.Region(self.rtc, 1280, 64)
        store.clear()
        if state == 0:
            self.board.set_rtc_us(5 * 1000000)
        else:
            self.board.set_rtc_us((truth - epoch) * 1000000)
        clk = clock.Clock(self.BUILD, store=store, path=self.path)
        if state == 2:
            clk.floor = truth + 3600
        clk.begin(1 + seq)
        if state == 1:  # a good sync, then an hour of running
            clk.sync(lambda: truth - epoch)
            self.board.advance(3600 * 1000000)
        known = clk.known()
        before = clk.unix()
        floor0 = clk.floor
        it = iter(answers)

        def ntp_time():
            a = next(it, "raise")
            if a == "raise":
                raise OSError(errno.ETIMEDOUT)
            return a - epoch

        try:
            got = clk.sync(ntp_time, ppm) if ppm is not None else clk.sync(ntp_time)
            must(got is True or got is False, "sync gave a non-bool", repr(got))
        finally:
            must(isinstance(clk.floor, int) and floor0 <= clk.floor <= self.BUILD + clock.MAX_AHEAD,
                 "the floor not an int between its old value and build + 30 years", repr(clk.floor))
            if known:
                must(abs(clk.floor - before) <= clock.BIG_STEP or clk.floor == floor0,
                     "NTP moved a synced clock by more than a day", "%d s" % (clk.floor - before))
            t = clk.stamp()
            must(isinstance(t, int) and 0 <= t <= 0xFFFFFFFF, "stamp() not a u32 int", repr(t))
            clk.senml_time(t, 1 + seq)
            clock.Clock(self.BUILD, store=store, path=self.path)  # the next wake reads what was kept


class MonitorKind(Kind):
    """petrel monitor's reader (CPython only: a host tool)."""

    name = "monitor"
    vm = False
    MAX_HELD = 1 << 16  # an unfinished line held back: bounded (here: what a bound must stay under)

    def setup(self, tmp):
        import io

        from petrel import monitor

        self.monitor = monitor
        self.io = io
        self.seeds = [
            b"I 000123 wake: cause=deepsleep boot=42 batt_mv=3910\r\n",
            b"W 000456 outbox: full dropped=3 total_drops=9\n",
            b"ets Jun  8 2016 00:22:57\r\nrst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
            b"Traceback (most recent call last):\n  File \"main.py\", line 3, in <module>\nOSError: [Errno 5] EIO\n",
            b"E 000789 config: config.json: key 'sample_s' must be an integer in 10..86400, got '5m'\n",
            "I 000001 x: caf\u00e9 \u202e\u009b31m\n".encode(),
        ]
        self.allowed = ()

    def gen(self, rng):
        r = rng.below(1000)
        if r < 2:  # a stream with no newline at all
            return (b"A" * (1 << (19 + rng.below(4))), rng.u32())
        if r < 100:
            return (rng.bytes(rng.below(2000)), rng.u32())
        data = b"".join(rng.choice(self.seeds) for _ in range(1 + rng.below(8)))
        if r < 150:
            data += rng.choice((b"\x1b[2J", b"\x9b", "\u202e".encode(), "\u009b".encode(), b"\x07\x08", b"\x7f",
                                "\u2066".encode(), b"\xc2\x9b", b"\xe2\x80\xae")) * (1 + rng.below(50))
        return (mutate_bytes(rng, data, rng.choice(self.seeds)), rng.u32())

    def size(self, x):
        return len(x[0])

    def check(self, x):
        data, chunk_seed = x
        rng = Rng(chunk_seed)
        out = self.io.StringIO()
        mon = self.monitor.Monitor(level=rng.choice("EWID"), out=out)
        split = getattr(mon, "lines", None)  # the LineSplitter, where monitor has one
        i = 0
        held = 0
        while i < len(data):
            k = 1 + rng.below(4096)
            mon.feed(data[i:i + k])
            held = max(held, len(split.part) if split is not None else len(mon.pending))
            i += k
        mon.flush()
        must(held <= self.MAX_HELD, "an unfinished line held unbounded", "%d bytes" % held)
        for ch in out.getvalue():
            o = ord(ch)
            must(not (o < 0x20 and ch not in "\n\t" or 0x7F <= o <= 0x9F or 0x202A <= o <= 0x202E
                      or 0x2066 <= o <= 0x2069), "a control character reached the terminal", "U+%04X" % o)


# ------------------------------------------------------------ the downlink (issue 16)
# lib/downmsg.py opens what the fleet side sends (every refusal a
# downmsg.Refused(reason, detail), nothing else); firmware/app/mailbox.py's
# receive() takes lists of them and must never raise for anything in a message.
DOWN_KID = b"node-1"  # base_config's device_id: the node's kid and topic
DOWN_TOPIC = b"petrel/node-1/down/"
DOWN_HMAC = "a1" * 32
DOWN_SECRETS = {"hmac_key": DOWN_HMAC, "psk_key": "0f" * 16, "wifi_psk": "5c" * 32}
DOWN_BUILD = 1764000000
ODD_INTS = (0, 1, -1, 23, 24, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53,
            2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -(2 ** 63), -(2 ** 64))


class Pairs:
    """A CBOR map written from its pairs as given (a key twice, 17 pairs)."""

    def __init__(self, pairs):
        self.pairs = pairs


class RawC:
    """CBOR bytes written as they are (a head no encoder makes)."""

    def __init__(self, data):
        self.data = data


def chead(major, n, width=-1):
    """A CBOR head; width -1: the shortest, else 0 (in the head, n < 24), 1, 2, 4 or 8 bytes."""
    if width < 0:
        width = 0 if n < 24 else 1 if n < 256 else 2 if n < 65536 else 4 if n < 2 ** 32 else 8
    if width == 0:
        return bytes((major << 5 | (n & 31),))
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes((major << 5 | ai,)) + bytes((n >> (8 * k)) & 255 for k in range(width - 1, -1, -1))


def cenc(x):
    """CBOR of x, ints of any 65-bit value included (our own: hostile on purpose)."""
    if isinstance(x, RawC):
        return x.data
    if isinstance(x, Pairs):
        return chead(5, len(x.pairs)) + b"".join(cenc(k) + cenc(v) for k, v in x.pairs)
    if x is None or x is True or x is False:
        return bytes((0xF6 if x is None else 0xF5 if x else 0xF4,))
    if isinstance(x, int):
        return chead(0, x) if x >= 0 else chead(1, -1 - x)
    if isinstance(x, float):
        import cbor

        return cbor.dumps(x)
    if isinstance(x, (bytes, bytearray)):
        return chead(2, len(x)) + bytes(x)
    if isinstance(x, str):
        b = x.encode()
        return chead(3, len(b)) + b
    if isinstance(x, dict):
        return chead(5, len(x)) + b"".join(cenc(k) + cenc(v) for k, v in x.items())
    return chead(4, len(x)) + b"".join(cenc(v) for v in x)


def cheads(b, i=0, out=None, depth=0):
    """The heads of the well-formed CBOR item at b[i:] -> (out [(start, end, major, arg)], next index);
    byte strings holding CBOR (protected, payload) are walked into."""
    out = [] if out is None else out
    start = i
    major, ai = b[i] >> 5, b[i] & 31
    i += 1
    n = ai
    if 24 <= ai <= 27:
        w = 1 << (ai - 24)
        n = 0
        for j in range(i, i + w):
            n = n << 8 | b[j]
        i += w
    out.append((start, i, major, n))
    if n > len(b):  # a length past the message (on the VM range() of it would overflow)
        raise IndexError("past the end")
    if major in (2, 3):
        if major == 2 and depth < 3 and n:
            try:
                inner = []
                end = cheads(b, i, inner, depth + 1)[1]
                if end == i + n:
                    out.extend(inner)
            except (IndexError, KeyError):
                pass
        return out, i + n
    if major == 4:
        for _ in range(n):
            i = cheads(b, i, out, depth + 1)[1]
    elif major == 5:
        for _ in range(2 * n):
            i = cheads(b, i, out, depth + 1)[1]
    elif major == 6:
        i = cheads(b, i, out, depth + 1)[1]
    return out, i


def mutate_heads(rng, msg):
    """A CBOR-aware mutation: one head's argument, width or major type changed."""
    heads = cheads(msg)[0]
    start, end, major, n = rng.choice(heads)
    r = rng.below(100)
    if r < 55:  # another length or value: off by one, at a width edge, huge
        n2 = rng.choice((0, 1, n - 1, n + 1, n + 16, 23, 24, 255, 256, 65535, 2 ** 31, 2 ** 32 - 1, 2 ** 63,
                         2 ** 64 - 1, len(msg), len(msg) - start, 17, 16, 4, 5))
        n2 = max(0, min(n2, 2 ** 64 - 1))
        w = rng.choice((-1, -1, 1, 2, 4, 8))
        if w > 0 and n2 >= 1 << (8 * w):
            w = -1
        head = chead(major, n2, w)
    elif r < 75:  # the same value at a longer width (not minimal: the MAC covers bytes, not values)
        head = chead(major, n, rng.choice((1, 2, 4, 8))) if n < 256 else chead(major, n, 8)
    elif r < 88:  # indefinite or reserved lengths, simple values
        head = bytes((major << 5 | rng.choice((28, 29, 30, 31)),))
    else:  # another major type, the same argument
        head = chead(rng.below(8), n)
    return msg[:start] + head + msg[end:]


class _Down:
    """What the downlink kinds share: the node's keys, its valid messages, a sealer."""

    def down_setup(self):
        import cose
        import downmsg

        _quiet_log()
        self.cose = cose
        self.downmsg = downmsg
        self.k_mac, self.k_enc = downmsg.keys(bytes.fromhex(DOWN_HMAC))
        self.base = base_config(_load_board_channels())

    def encrypt(self, iv, plain, pad=True):
        try:
            import cryptolib
        except ImportError:
            import ucryptolib as cryptolib
        if pad:
            n = 16 - len(plain) % 16
            plain = plain + bytes((n,)) * n
        return cryptolib.aes(self.k_enc, 2, iv).encrypt(plain)

    def seal(self, aad_kind, body, version, prot=None, unprot=None, k_mac=None):
        """A COSE_Mac0 of ours (tag 17, [protected, unprotected, payload, tag]),
        any body and headers, tagged with the right key (unless k_mac)."""
        protected = cenc(prot if prot is not None else {1: 5, -65537: version})
        payload = cenc(body)
        tag = self.cose._tag(k_mac or self.k_mac, 5, protected, payload, b"petrel down " + aad_kind.encode())
        return b"\xd1\x84" + cenc(protected) + cenc(unprot if unprot is not None else {4: DOWN_KID}) + \
            cenc(payload) + cenc(tag)

    def valid_body(self, rng, kind):
        if kind == "config":
            cfg = _copy(self.base)
            cfg["sample_s"] = rng.choice((60, 300, 600))
            return {"k": "config", "cfg": jdump(cfg).encode()}
        if kind == "secrets":
            iv = rng.bytes(16)
            plain = jdump({rng.choice(("wifi_psk", "psk_key")): "%08x" % rng.u32() * rng.choice((2, 4, 8))})
            return {"k": "secrets", "iv": iv, "ct": self.encrypt(iv, plain.encode())}
        if kind == "hold":
            return {"k": "hold", "min": 1 + rng.below(120), "exp": 1767225600 + rng.below(10 ** 8)}
        return {"k": "time", "t": 1767225600000 + rng.below(10 ** 9), "n": 1 + rng.below(1000)}

    def version(self, rng):
        return rng.choice((1, 2, 1 + rng.below(50), 1767225600000 + rng.below(10 ** 6), 2 ** 63 - 1, 2 ** 64 - 1))

    def refusal(self, e):
        """A Refused must say why with one of the reasons, and a text detail."""
        must(len(e.args) == 2 and e.args[0] in self.downmsg.REASONS and isinstance(e.args[1], str),
             "a refusal without a known reason", repr(e.args)[:200])

    def fields(self, kind, body):
        """The kind's field reader: a value of the right form, or Refused."""
        dm = self.downmsg
        try:
            if kind == "config":
                t = dm.config_text(body)
                must(isinstance(t, str) and len(t) <= dm.MAX_CONFIG, "config_text", repr(t)[:100])
            elif kind == "secrets":
                s = dm.secrets(body, self.k_enc)
                must(isinstance(s, dict), "secrets not a dict", repr(type(s)))
            elif kind == "hold":
                mins, exp = dm.hold(body)
                must(type(mins) is int and 1 <= mins <= dm.MAX_HOLD_MIN and type(exp) is int, "hold fields",
                     repr((mins, exp)))
            else:
                t, n = dm.time_answer(body)
                must(type(t) is int and type(n) is int, "time fields", repr((t, n)))
        except dm.Refused as e:
            self.refusal(e)


class DownRawKind(Kind, _Down):
    """(a) valid downlink messages of each kind mutated as bytes after sealing
    (bit flips, truncation, insertion, splices, CBOR heads and lengths,
    huge lengths, another kind's topic): refused by reason, or, where only
    unauthenticated bytes changed, opened as the very message that was sealed."""

    name = "downraw"

    def setup(self, tmp):
        self.down_setup()

    def gen(self, rng):
        kind = rng.choice(self.downmsg.KINDS)
        body = self.valid_body(rng, kind)
        version = self.version(rng)
        msg = self.seal(kind, body, version)
        other = self.seal(kind, self.valid_body(rng, rng.choice(self.downmsg.KINDS)), self.version(rng))
        topic = kind
        r = rng.below(100)
        if r < 35:
            msg = mutate_bytes(rng, msg, other)
        elif r < 70:
            for _ in range(rng.choice((1, 1, 2, 3))):
                try:
                    msg = mutate_heads(rng, msg)
                except (IndexError, KeyError):  # a walk past a mutated head: the mutation is done
                    break
        elif r < 76:
            msg = msg[: rng.below(len(msg))]
        elif r < 82:  # oversized: padded past the bound, or a payload head claiming gigabytes
            msg = rng.choice((msg + b"\x00" * (self.downmsg.MAX_MESSAGE + 1 - len(msg) + rng.below(4)),
                              b"\xd1\x84\x40\xa0\x5b" + b"\xff" * 8 + msg[8:], b"\xd1\x9b" + b"\xff" * 8 + msg[2:],
                              b"\xd1\x84" + b"\x5a\xff\xff\xff\xff" + msg[2:]))
        elif r < 88:  # a message of one kind on another kind's topic
            topic = rng.choice([k for k in self.downmsg.KINDS if k != kind] + ["", "down", "config/x"])
        elif r < 92:
            msg = rng.bytes(rng.below(200))
        elif r < 94:
            msg = None  # the client read past it (larger than its max_packet)
        else:  # the unprotected header (not MACed) rewritten
            unprot = rng.choice(({4: b"node-2"}, {}, {4: "node-1"}, Pairs([(4, DOWN_KID), (4, DOWN_KID)]),
                                 {4: DOWN_KID, 1: 5, 33: b"x" * 300}, [4, DOWN_KID], dict((k, k) for k in range(17)),
                                 {4: DOWN_KID, -65537: 2 ** 64 - 1}, RawC(b"\xbf\x04\x46node-1\xff")))
            msg = self.seal(kind, body, version, unprot=unprot)
        return (topic, msg, kind, version, body)

    def size(self, x):
        return len(x[1] or b"")

    def check(self, x):
        topic, msg, kind, version, body = x
        dm = self.downmsg
        try:
            v, got = dm.open_message(topic, msg, self.k_mac, DOWN_KID)
        except dm.Refused as e:
            self.refusal(e)
            return
        # opened: only bytes outside the MAC changed, so it is the message sealed
        must(topic == kind and v == version and got == body, "a mutated message opened as another",
             repr((topic, v, got))[:200])
        self.fields(kind, got)


def _secrets_plain(rng, base_text):
    """The plaintext of a secrets push: shapes right and wrong."""
    r = rng.below(100)
    hexes = ("00" * 8, "ab" * 16, "5c" * 32, "0f" * 64, "zz" * 16, "0" * 15, "ab" * 65, "", "AB" * 16, "é" * 8)
    if r < 25:
        d = {}
        for _ in range(1 + rng.below(3)):
            d[rng.choice(("wifi_psk", "psk_key", "down_key", "hmac_key", "x", "", "wifi_psk\u0000"))] = \
                rng.choice(hexes) if rng.chance(0.7) else odd_json(rng)
        return jdump(d).encode()
    if r < 35:
        return jdump(rng.choice(([], "wifi_psk", 5, None, [{"wifi_psk": "00" * 8}], {"wifi_psk": {"a": 1}},
                                 {"wifi_psk": ["00" * 8]}, {"hmac_key": DOWN_HMAC}))).encode()
    if r < 45:
        return rng.choice((b"\xff\xfe{}", b'{"wifi_psk": "\xc3\x28"}', b"", b"{", b"null", b'{"a": NaN}',
                           b'{"wifi_psk": "00000000000000000000000000000000", "wifi_psk": "zz"}'))
    if r < 55:
        return _nest(rng.choice((10, 50, 200, 2000)), '"x"').text.encode()
    if r < 60:
        return b'{"wifi_psk": "' + b"ab" * rng.choice((100, 1000, 1400)) + b'"}'
    return json_input(rng, {"wifi_psk": "5c" * 32, "psk_key": "0f" * 16}) if rng.chance(0.5) else base_text


class DownSealedKind(Kind, _Down):
    """(b) structurally mutated bodies (and protected headers) SEALED with the
    node's key: past the MAC to the field checks, then through mailbox.receive
    on a node's flash folder to the config and secrets checkers."""

    name = "downsealed"
    share = 0.25  # each input runs a node's receive (~6 ms): 25,000 in make fuzz

    def setup(self, tmp):
        self.down_setup()
        self.node = _NodeBox(tmp, self)

    def body(self, rng, kind):
        """A body of kind with hostile fields, or the fields of another kind."""
        b = self.valid_body(rng, kind)
        r = rng.below(100)
        if kind == "config" and r < 70:
            w = rng.below(100)
            if w < 45:
                text = json_input(rng, self.base)  # the config fuzzer's own variants
            elif w < 60:  # the broker's file names and TLS: reach _needs
                cfg = _copy(self.base)
                broker = cfg["broker"]
                broker[rng.choice(("ca", "cert", "key", "psk_identity", "tls"))] = rng.choice(
                    ("ca.der", "a\u0000b", "/", "..", "x" * 128, "x" * 129, "data/down", "config.json", "é",
                     "psk", "mtls", "tls", "", "/nope/ca.der"))
                if rng.chance(0.3):
                    broker.pop("psk_identity", None)
                text = jdump(cfg).encode()
            elif w < 70:
                text = _nest(rng.choice((5, 30, 100, 500, 1000)), "1").text.encode()
            elif w < 80:
                text = rng.choice((b"\xff\xfe", b"{\"device_id\": \"\xc3\x28\"}", b"", b"null", b"[]", b"1e999",
                                   b"{}", b"\xed\xa0\x80", jdump(self.base).encode() + b"\x00"))
            elif w < 90:  # at the size bound, and past it
                text = jdump(self.base).encode()
                text = text[:-1] + b" " * (self.downmsg.MAX_CONFIG - len(text) + rng.choice((-1, 0, 1, 500)))
                text += b"}"
            else:
                text = jdump(rng.choice((dict(self.base, device_id="node-2"), dict(self.base, topic="x/y"),
                                         dict(self.base, broker={"host": "b", "ca": "nope.der"}),
                                         dict(self.base, broker={"host": "b", "tls": "psk", "psk_identity": "i"}),
                                         dict(self.base, channels=[])))).encode()
            b["cfg"] = text
        elif kind == "secrets" and r < 80:
            w = rng.below(100)
            iv = rng.bytes(16)
            if w < 60:
                b["iv"], b["ct"] = iv, self.encrypt(iv, _secrets_plain(rng, jdump(DOWN_SECRETS).encode()))
            elif w < 80:  # bad padding under a valid MAC
                plain = _secrets_plain(rng, b'{"wifi_psk": "' + b"00" * 8 + b'"}')
                plain += rng.choice((b"", b"\x00", b"\x11" * 17, b"\x10" * 15 + b"\x11", b"\x02\x01"))
                plain += b" " * ((16 - len(plain) % 16) % 16)
                if rng.chance(0.5):
                    plain = plain[:-1] + bytes((rng.choice((0, 17, 255, 16, 1, 2)),))
                b["iv"], b["ct"] = iv, self.encrypt(iv, plain, pad=False)
            else:
                b["iv"] = rng.choice((b"", b"x" * 15, b"x" * 17, "x" * 16, 16, None, iv))
                b["ct"] = rng.choice((b"", b"x" * 15, b"x" * 17, b"x" * 16, b"x" * 3008, "x" * 16, 0, b["ct"]))
        elif kind in ("hold", "time") and r < 80:
            for _ in range(1 + rng.below(2)):
                b[rng.choice(("min", "exp") if kind == "hold" else ("t", "n"))] = rng.choice(
                    ODD_INTS + (True, False, None, 1.5, float("nan"), float("inf"), "5", b"5", [], {}, 60, 120, 121,
                                rng.below(200), 1767225600, 1767225600000 + rng.below(10 ** 9)))
        r = rng.below(100)
        if r < 6:
            b["k"] = rng.choice(("config", "Config", b"config", 1, None, "secrets", ""))
        elif r < 10:
            b.pop("k", None)
        elif r < 14:
            b.pop(rng.choice(list(b)), None)
        elif r < 18:
            b[rng.choice(("x", 1, -1, b"k", "cfg", "iv", "min", "t"))] = rng.choice((0, b"", "", 2 ** 64 - 1))
        elif r < 21:
            return Pairs(list(b.items()) + [("k", b["k"])] if "k" in b else [])
        elif r < 24:
            return Pairs(list(b.items()) + [("x%d" % j, j) for j in range(17)])
        elif r < 27:
            return rng.choice(([b], "config", 5, b"", None, RawC(b"\xbf\x61k\x66config\xff"), Pairs([])))
        return b

    def gen(self, rng):
        kind = rng.choice(self.downmsg.KINDS)
        version = self.version(rng)
        body = self.body(rng, kind)
        prot = None
        if rng.chance(0.12):  # the protected header, well MACed
            prot = rng.choice(({1: 5}, {1: 5, -65537: rng.choice(ODD_INTS)}, {1: 4, -65537: 5},
                               {1: 5, -65537: "5"}, {1: 5, -65537: b"\x05"}, {1: 5, -65537: 1.5},
                               Pairs([(1, 5), (-65537, 9), (-65537, 10)]), {-65537: 9}, {1: "HS256", -65537: 9},
                               {1: 5, -65537: 9, 4: DOWN_KID}, [1, 5], dict((k, 5) for k in range(17)),
                               RawC(b"\xa2\x01\x05\x3a\x00\x01\x00\x00\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00")))
        retained = rng.chance(0.3)
        msg = self.seal(kind, body, version, prot=prot)
        treq = 0
        if kind == "time" and rng.chance(0.6):  # the node asked: the answer reaches Clock.trusted
            b = body if isinstance(body, dict) else {}
            n = b.get("n")
            treq = n if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2 ** 32 else 1 + rng.below(100)
        rounds = [([(DOWN_TOPIC + kind.encode(), msg, retained)], treq, rng.below(4))]
        return (kind, msg, rounds)

    def size(self, x):
        return len(x[1])

    def show(self, x):
        return repr((x[0], x[1]))

    def check(self, x):
        kind, msg, rounds = x
        dm = self.downmsg
        try:
            v, body = dm.open_message(kind, msg, self.k_mac, DOWN_KID)
            must(type(v) is int and v >= 0 and isinstance(body, dict), "opened", repr(v))
            self.fields(kind, body)
        except dm.Refused as e:
            self.refusal(e)
        self.node.run(rounds)


class DownMailKind(Kind, _Down):
    """(c) mailbox.receive on lists of valid and mutated messages, with random
    retained flags and versions, on one node through several wakes: after
    each, nothing escaped, counters and versions only grew, the running
    config.json and secrets.json unchanged unless a valid push was staged and
    boot() switched it (the uplink key never pushed), data/down still loads."""

    name = "downmail"
    share = 0.1  # up to 4 wakes of up to 6 messages each (~20 ms): 10,000 in make fuzz

    def setup(self, tmp):
        self.down_setup()
        self.raw = DownRawKind()
        self.raw.down_setup()
        self.sealed = DownSealedKind()
        self.sealed.down_setup()
        self.node = _NodeBox(tmp, self)

    def item(self, rng, sent):
        r = rng.below(100)
        retained = rng.chance(0.4)
        if r < 30:
            kind = rng.choice(self.downmsg.KINDS)
            v = self.version(rng) if rng.chance(0.5) else 1 + rng.below(20)
            return (DOWN_TOPIC + kind.encode(), self.seal(kind, self.valid_body(rng, kind), v), retained)
        if r < 45 and sent:  # one already sent, again (a replay, or the broker's retained copy)
            t, m, _ = rng.choice(sent)
            return (t, m, retained)
        if r < 65:
            topic, msg = self.raw.gen(rng)[:2]
            return (DOWN_TOPIC + topic.encode(), msg, retained)
        if r < 90:
            kind, msg = self.sealed.gen(rng)[:2]
            return (DOWN_TOPIC + kind.encode(), msg, retained)
        topic = rng.choice((b"petrel/node-2/down/config", b"petrel/node-1/down", b"petrel/node-1/up",
                            DOWN_TOPIC + b"\xff\xfe", DOWN_TOPIC + b"config/x", "petrel/node-1/down/hold", b"",
                            DOWN_TOPIC + "é".encode(), DOWN_TOPIC + b"config\x00"))
        kind = rng.choice(self.downmsg.KINDS)
        return (topic, self.seal(kind, self.valid_body(rng, kind), 1 + rng.below(20)), retained) if rng.chance(0.7) \
            else (topic, None, retained)

    def gen(self, rng):
        rounds = []
        sent = []
        for _ in range(1 + rng.below(4)):
            items = []
            for _ in range(rng.below(7)):
                it = self.item(rng, sent)
                items.append(it if rng.chance(0.9) else it[:2])  # a 2-tuple: no retained flag
                sent.append(it[:2] + (False,))
            rounds.append((items, rng.choice((0, 0, 1 + rng.below(20))), rng.below(4)))
        return rounds

    def size(self, x):
        return sum(len(it[1] or b"") for r in x for it in r[0])

    def check(self, rounds):
        self.node.run(rounds)


class _NodeBox:
    """A node's flash folder where mailbox.receive runs, checked after each call."""

    def __init__(self, tmp, down):
        import os

        import machine
        import rtcmem
        import simstate

        from app import config, mailbox, state

        self.os = os
        self.down = down
        self.config, self.mailbox, self.state = config, mailbox, state
        self.board = simstate.board
        self.rtcmem, self.machine = rtcmem, machine
        import clock
        import json

        self.clock, self.json = clock, json
        # a host folder on both interpreters, as test_mailbox's: littlefs on the
        # Python block device segfaults the unix VM after a while (a harness
        # fault, not the node's); the firmware's file steps on littlefs are
        # host/test_downlink_node.py's
        self.dir = tmp + "/node"
        try:
            os.mkdir(self.dir)
        except OSError:  # a worker after a hang: the folder is there
            pass
        os.chdir(self.dir)
        self.cfg_text = jdump(down.base)
        self.sec_text = jdump(DOWN_SECRETS)
        dm = down.downmsg
        self.opener = dm.open_message
        self.caught = []

        def open_message(*args):  # what mailbox's own safety net would hide is an escape here
            try:
                return self.opener(*args)
            except dm.Refused:
                raise
            except Exception as e:
                self.caught.append(e)
                raise

        dm.open_message = open_message

    def _read(self, name):
        try:
            with open(name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def _write(self, name, data):
        with open(name, "wb") as f:
            f.write(data)

    def fresh(self):
        os = self.os
        for sub in ("data/", ""):
            try:
                names = os.listdir(sub or ".")
            except OSError:
                continue
            for name in names:
                if name != "data":
                    os.remove(sub + name)
        try:
            os.mkdir("data")
        except OSError:
            pass
        self._write("config.json", self.cfg_text.encode())
        self._write("secrets.json", self.sec_text.encode())
        self._write("ca.der", b"x")
        self.board.power_on()  # RTC memory afresh: the state record, the clock's
        self.board.set_rtc_us((1767225600 - 946684800) * 1000000)
        self.st = self.state.State()
        self.clk = self.clock.Clock(DOWN_BUILD, self.rtcmem.Region(self.machine.RTC(), 1280, 64))

    def counters(self):
        return [getattr(self.st, "dr_" + r) for r in self.down.downmsg.REASONS]

    def mailbox_file(self):
        """data/down, checked by its CRC (Mailbox.load would start afresh silently)."""
        import struct
        from binascii import crc32

        raw = self._read(self.mailbox.PATH)
        if raw is None:
            return None
        n = struct.calcsize(self.mailbox._FMT)
        must(len(raw) >= n + 4 and struct.unpack("<I", raw[-4:])[0] == crc32(raw[:-4]) & 0xFFFFFFFF,
             "data/down does not load", repr(raw[:40]))
        return self.mailbox.Mailbox.load()

    def run(self, rounds):
        config, mailbox = self.config, self.mailbox
        self.fresh()
        running = (self._read("config.json"), self._read("secrets.json"))
        applied = [0, 0, 0, 0]
        for items, treq, after in rounds:
            counts = self.counters()
            st = self.st
            if treq:
                st.treq, st.treq_ms = treq, self.clock.unix_ms() - (0, 1000, 7 * 3600 * 1000, -5000)[after]
            cfg = config.load("config.json", "secrets.json", "config.good.json")
            must(cfg.source == "config.json", "the running configuration does not load", cfg.source)
            del self.caught[:]
            mailbox.receive(st, cfg, self.clk, list(items))
            must(not self.caught, "an exception in the opener (mailbox's safety net took it)",
                 repr(self.caught[:1]))
            after_counts = self.counters()
            must(all(a >= b for a, b in zip(after_counts, counts)), "a refusal counter went down",
                 repr((counts, after_counts)))
            must(st.hold_min is None or type(st.hold_min) is int and 1 <= st.hold_min <= 120, "hold_min",
                 repr(st.hold_min))
            st.hold_min = None
            must(isinstance(self.clk.unix(), int), "the clock unreadable after a time answer")
            must((self._read("config.json"), self._read("secrets.json")) == running,
                 "receive changed the running config.json or secrets.json")
            m = self.mailbox_file()
            if m is None:
                continue
            # per kind but time's, which is fresh by its nonce (mailbox keeps its last, compares none)
            must(all(a >= b for a, b in zip(m.applied[:3], applied[:3])), "an applied version went down",
                 repr((applied, m.applied)))
            applied = list(m.applied)
            staged = (self._read("config.new.json") if m.pending & 1 else None,
                      self._read("secrets.new.json") if m.pending & 2 else None)
            if staged[0] is not None:  # staged: the node's own checker passes it
                try:
                    config.check(self.json.loads(staged[0].decode()))
                except config.ConfigError as e:
                    must(False, "an invalid config.json staged", str(e))
            if staged[1] is not None:
                sec = self.json.loads(staged[1].decode())
                config.check_secrets(sec)
                must(sec.get("hmac_key") == DOWN_HMAC, "the uplink key changed by a push")
            must((m.pending & 1) == (staged[0] is not None) * 1 and (m.pending & 2) == (staged[1] is not None) * 2,
                 "pending without its staged file", repr(m.pending))
            if not m.pending:
                continue
            mailbox.boot(st, "deepsleep")  # the next wake: switched
            now = (self._read("config.json"), self._read("secrets.json"))
            for k in (0, 1):
                must(now[k] == (staged[k] if staged[k] is not None else running[k]),
                     "boot did not switch to what was staged", "file %d" % k)
            cfg = config.load("config.json", "secrets.json", "config.good.json")
            must(cfg.source == "config.json" and cfg.secret("hmac_key") == DOWN_HMAC,
                 "the switched files do not load", cfg.source)
            if after % 2:  # confirmed by an uplink
                mailbox.after_uplink(st, True)
                running = now
            else:  # cut off: reverted after failed uplinks
                for _ in range(mailbox.TRIAL_UPLINKS):
                    mailbox.after_uplink(st, False)
                must((self._read("config.json"), self._read("secrets.json")) == running,
                     "a failed trial did not go back to the previous files")
            must(not mailbox.Mailbox.load().busy(), "still busy after the trial ended")


class SelfTestKind(Kind):
    """The harness's own check (host/test_fuzz_node.py): input 3 escapes with a
    TypeError, input 5 hangs, input 7 is over MAX_S; the rest answer."""

    name = "selftest"
    allowed = (ValueError,)

    def gen(self, rng):
        return rng.bytes(4)

    def check(self, x):
        i = self.index
        if i == 3:
            raise TypeError("an escape")
        if i == 5:
            while True:
                pass
        if i == 7:
            t0 = now_us()
            while elapsed_us(t0) < MAX_S * 1100000:
                pass
        if i % 2:
            raise ValueError("the documented error")


KINDS = (ConfigKind, SecretsKind, MqttKind, CborKind, CoseKind, OutboxKind, NtpKind, MonitorKind, DownRawKind,
         DownSealedKind, DownMailKind)


def kind_named(name):
    for k in KINDS + (SelfTestKind,):
        if k.name == name:
            return k()
    raise SystemExit("unknown kind %r" % name)


# ------------------------------------------------------------ the worker (both interpreters)
def _mem():
    """Bytes in use now: the VM's heap after a collection; CPython: RSS (KiB * 1024)."""
    if MP:
        import gc

        gc.collect()
        return gc.mem_alloc()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _prepare_cpython():
    sys.path.insert(0, ROOT + "/tools")
    from petrel import harness

    harness.install()
    import resource

    with open("/proc/self/statm") as f:
        vsize = int(f.read().split()[0]) * 4096
    limit = vsize + (1 << 30)  # a runaway allocation: MemoryError, not the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def worker(kind_name, seed, start, count, tmp, verbose=False):
    """Run inputs start..start+count-1; one line per event on stdout:
    B i (before input i), E i size key | repr (an escape: the first of its key
    or a shorter one), S i us (over MAX_S), R summary."""
    import gc

    if not MP:
        _prepare_cpython()
    kind = kind_named(kind_name)
    kind.setup(tmp)
    write = sys.stdout.write
    best = {}
    slowest = (0, -1)
    peak = 0  # VM: bytes allocated during one input; CPython: peak RSS growth after warm-up
    warm = min(200, count // 10)
    base = None
    done = 0
    for i in range(start, start + count):
        write("B %d\n" % i)
        kind.index = i
        x = kind.gen(input_rng(seed, kind_name, i))
        if not MP:
            sys.stdout.flush()
        if MP:
            gc.collect()
            m0 = gc.mem_alloc()
        t0 = now_us()
        try:
            kind.check(x)
        except kind.allowed:
            pass
        except Exception as e:  # an escape: anything but the documented error
            if verbose:
                if MP:
                    sys.print_exception(e)
                else:
                    import traceback

                    traceback.print_exc()
            key = where(e)
            size = kind.size(x)
            if key not in best or size < best[key]:
                best[key] = size
                text = kind.show(x)
                if len(text) > 600:
                    text = text[:600] + "...(%d chars)" % len(text)
                msg = e.args[1] if isinstance(e, Violation) else str(e)
                write("E %d %d %s | %s | %s\n" % (i, size, key, msg[:200].replace("\n", " "), text))
        dt = elapsed_us(t0)
        if MP:
            peak = max(peak, gc.mem_alloc() - m0)
        if dt > slowest[0]:
            slowest = (dt, i)
        if dt > MAX_S * 1000000:
            write("S %d %d\n" % (i, dt))
        done += 1
        if done == warm:
            base = _mem()
            if not MP:
                import resource

                maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth = _mem() - base if base is not None else 0
    if not MP and base is not None:
        import resource

        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss0) * 1024
    write("R %d %d %d %d %d\n" % (done, slowest[0], slowest[1], peak, growth))
    if not MP:
        sys.stdout.flush()


# ------------------------------------------------------------ the driver (CPython)
def _spawn(kind, seed, start, count, tmp, vm, verbose=False):
    import os
    import subprocess

    args = ["worker", kind, str(seed), str(start), str(count), tmp] + (["verbose"] if verbose else [])
    if vm:
        cmd = [ROOT + "/.venv/bin/petrel", "vm", "run", "--heapsize", VM_HEAP, HERE + "/fuzz_node.py"] + args
    else:
        cmd = [sys.executable, HERE + "/fuzz_node.py"] + args
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if not verbose else None,
                            cwd=ROOT, start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def run_kind(kind, seed, n, vm=False, out=None, hang_s=HANG_S):
    """n inputs of one kind on one interpreter -> stats dict."""
    import os
    import select
    import signal
    import tempfile

    st = dict(kind=kind, interp="vm" if vm else "cpython", inputs=0, escapes={}, hangs=[], slow=[],
              slowest=(0, -1), peak=0, growth=0, workers=0, stderr="")
    start = 0
    with tempfile.TemporaryDirectory(prefix="petrel-fuzz-") as tmp:
        while start < n:
            p = _spawn(kind, seed, start, n - start, tmp, vm)
            st["workers"] += 1
            current = None
            buf = b""
            summary = None
            noise = ""
            while True:
                r, _, _ = select.select([p.stdout], [], [], hang_s)
                if not r:  # no word for hang_s: the input in hand hangs
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    break
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    p.wait()
                    break
                buf += chunk
                lines = buf.split(b"\n")
                buf = lines.pop()
                for line in lines:
                    line = line.decode("utf-8", "replace")
                    tag, _, rest = line.partition(" ")
                    if tag == "B":
                        current = int(rest)
                    elif tag == "E":
                        i, size, text = rest.split(" ", 2)
                        key, _, detail = text.partition(" | ")
                        e = st["escapes"].setdefault(key, dict(count=0, size=None))
                        if e["size"] is None or int(size) < e["size"]:
                            e.update(size=int(size), index=int(i), detail=detail)
                    elif tag == "S":
                        i, us = rest.split()
                        st["slow"].append((int(i), int(us)))
                    elif tag == "R":
                        summary = [int(v) for v in rest.split()]
                    else:  # not ours: a traceback on the VM's stdout
                        noise = (noise + line + "\n")[-2000:]
            err = noise + (p.stderr.read().decode("utf-8", "replace") if p.stderr else "")
            p.stdout.close()
            if p.stderr:
                p.stderr.close()
            if summary is not None:
                done, slow_us, slow_i, peak, growth = summary
                st["inputs"] += done
                if slow_us > st["slowest"][0]:
                    st["slowest"] = (slow_us, slow_i)
                st["peak"] = max(st["peak"], peak)
                st["growth"] = max(st["growth"], growth)
                break
            if current is None:  # died before its first input: the harness itself is broken
                st["stderr"] = err[-2000:]
                st["hangs"].append(("worker died", err[-300:]))
                break
            # killed (a hang) or died (a crash of the interpreter: counted the same)
            st["inputs"] += current - start + 1
            st["hangs"].append((current, "killed after %d s" % hang_s if p.returncode == -9 else
                                "worker exited %s: %s" % (p.returncode, err.strip()[-300:])))
            start = current + 1
            if out:
                out.write("  %s/%s: input %d did not finish: %s\n" % (kind, st["interp"], current,
                                                                      st["hangs"][-1][1]))
    # escapes counted: the worker reports only firsts and shorter ones; count occurrences per key
    return st


def report(st, seed, out):
    us, i = st["slowest"]
    mem = ("%d KiB peak RSS growth, %d KiB RSS growth after warm-up" % (st["peak"] // 1024, st["growth"] // 1024)
           if st["interp"] == "cpython" else
           "%d KiB allocated by one input at most, heap in use %+d B after warm-up" % (st["peak"] // 1024,
                                                                                     st["growth"]))
    out.write("%-8s %-7s %7d inputs, %d escapes, %d hangs, %d over %.0f s; slowest %.1f ms (input %d); %s\n" % (
        st["kind"], st["interp"], st["inputs"], len(st["escapes"]), len(st["hangs"]), len(st["slow"]), MAX_S,
        us / 1000, i, mem))
    for key, e in sorted(st["escapes"].items()):
        out.write("  ESCAPE %s\n    %s\n    shortest: input %d (%d bytes): %s\n    replay: .venv/bin/python "
                  "host_tests/fuzz_node.py --repro %s %d %d%s\n" % (
                      key, e["detail"].split(" | ")[0], e["index"], e["size"], e["detail"].split(" | ", 1)[-1],
                      st["kind"], seed, e["index"], " --vm" if st["interp"] == "vm" else ""))
    for h in st["hangs"]:
        out.write("  HANG input %s: %s\n" % h)
    for i, us in st["slow"][:10]:
        out.write("  SLOW input %d: %.2f s\n" % (i, us / 1e6))
    if st["stderr"]:
        out.write("  worker stderr: %s\n" % st["stderr"])


def failed(st):
    return bool(st["escapes"] or st["hangs"] or st["slow"] or st["inputs"] == 0)


def campaign(n, vm_n, seed=1, kinds=None, out=None, jobs=1):
    """Every kind: n inputs on CPython, vm_n on the VM (0: none) -> [stats],
    jobs workers at a time (each is one process; the driver only waits)."""
    from concurrent.futures import ThreadPoolExecutor

    runs = []
    for k in KINDS:
        if kinds and k.name not in kinds:
            continue
        for vm, count in ((False, n), (True, vm_n)):
            count = max(1, int(count * k.share)) if count > 0 else 0
            if count > 0 and (k.vm or not vm):
                runs.append((k.name, count, vm))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_kind, name, seed, count, vm, out) for name, count, vm in runs]
        results = []
        for f in futures:  # reported in order, each as soon as it and those before it are done
            st = f.result()
            if out:
                report(st, seed, out)
                out.flush()
            results.append(st)
    return results


def main(argv):
    if argv[:1] == ["worker"]:  # no dashes: `petrel vm run` would take them for its own
        kind, seed, start, count, tmp = argv[1:6]
        worker(kind, int(seed), int(start), int(count), tmp, verbose="verbose" in argv)
        return 0
    import argparse
    import os
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100000, help="per kind on CPython (downsealed: a quarter, "
                    "downmail: a tenth)")
    ap.add_argument("--vm-inputs", type=int, default=10000, help="per kind on the VM (0: none)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", help="comma-separated (default: all): " + ", ".join(k.name for k in KINDS))
    ap.add_argument("--repro", nargs=3, metavar=("KIND", "SEED", "INDEX"), help="run one input, show its traceback")
    ap.add_argument("--vm", action="store_true", help="with --repro: on the VM")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="workers at a time (default: CPUs)")
    a = ap.parse_args(argv)
    if a.repro:
        kind, seed, i = a.repro
        with tempfile.TemporaryDirectory(prefix="petrel-fuzz-") as tmp:
            p = _spawn(kind, int(seed), int(i), 1, tmp, a.vm, verbose=True)
            # the traceback (stderr), then the worker's lines: E has the input itself
            sys.stdout.write(p.communicate()[0].decode("utf-8", "replace"))
        return 0
    t = _rt.time()
    results = campaign(a.inputs, a.vm_inputs, a.seed, a.kinds.split(",") if a.kinds else None, out=sys.stdout,
                       jobs=a.jobs)
    bad = [s for s in results if failed(s)]
    print("fuzz: %d kinds x interpreters, %d inputs in %.0f s (seed %d, %d CPUs): %s" % (
        len(results), sum(s["inputs"] for s in results), _rt.time() - t, a.seed, os.cpu_count(),
        "%d failed: %s" % (len(bad), ", ".join("%s/%s" % (s["kind"], s["interp"]) for s in bad)) if bad
        else "no escapes, no hangs"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
