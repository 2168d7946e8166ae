"""What the application keeps across deep sleep, in RTC memory.

RTC memory survives deep sleep, reset and the watchdog, not power loss, and
after a power-on or a new firmware it may hold anything: the record is
CRC-checked (lib/rtcmem) and a bad one starts afresh, counted in `why`.

Layout of the 2048 bytes (offset, size), shared with the libraries:
    app state 0, 256 | outbox fast path 256, 1024 | clock 1280, 64 |
    sequence counter 1344, 64 | filter states 1408, 384 | Wi-Fi cache 1792, 64
"""

import struct

import machine

import rtcmem

APP = (0, 256)
OUTBOX = (256, 1024)
CLOCK = (1280, 64)
SEQ = (1344, 64)
FILTERS = (1408, 384)
WIFI = (1792, 64)

# name, struct code: one record, fixed order (a new field goes at the end and
# bumps VERSION, so an old record is not misread)
FIELDS = (
    ("boots", "I"),  # boots since power-on
    ("crash_streak", "B"),  # consecutive wakes that crashed or hung
    ("crashes", "H"),  # crashes since power-on
    ("safe_left", "B"),  # safe-mode wakes still to go (0: not in safe mode)
    ("safe_entries", "H"),  # times safe mode was entered since power-on
    ("samples", "H"),  # samples taken since the last uplink
    ("up_fails", "B"),  # consecutive failed uplinks (backoff)
    ("up_next", "I"),  # no uplink attempt before this RTC second (backoff)
    ("synced", "I"),  # schedule: RTC unix seconds at the last NTP sync
    ("ppm", "i"),  # schedule: sleep-clock drift estimate
    ("awake_ms", "I"),  # how long the last wake lasted (health record)
    ("alarms", "H"),  # one bit per configured alarm: currently raised
    ("auth_fails", "H"),  # broker or TLS refusals since power-on
    ("power", "B"),  # battery mode of the last wake: 0 ok, 1 low, 2 critical
    ("batt_mv", "H"),  # last battery reading
    ("wdt_resets", "H"),  # watchdog resets since power-on
    ("lost_rtc", "H"),  # readings lost with RTC memory (power cuts), reported once
    ("cfg_crc", "I"),  # configuration the last crash happened with
    ("rssi", "b"),  # last Wi-Fi RSSI
    ("rejected", "H"),  # readings the encoder could not send, since power-on
    ("refused", "H"),  # readings the outbox refused (flash failing), since power-on
    ("last_stamp", "I"),  # the last reading's timestamp: the next is always later
    ("exhausted", "H"),  # readings the outbox refused: no sequence number left, since power-on
    ("ntp_refused", "H"),  # NTP answers the clock refused (forged or broken), since power-on
    ("ntp_streak", "B"),  # syncs refused in a row: after one, the drift bound is the unknown one
    ("down_busy", "B"),  # a pushed file waits for its switch or runs on trial (app.mailbox reads data/down)
    ("dr_forged", "H"),  # downlink messages refused, by reason (app.mailbox), since power-on
    ("dr_replay", "H"),
    ("dr_oversized", "H"),
    ("dr_malformed", "H"),
    ("dr_invalid", "H"),
    ("dr_stale", "H"),
    ("dr_reverted", "H"),  # pushed files that went back to the previous one
    ("treq", "I"),  # the nonce of the time request in the last health record (0: none)
    ("treq_ms", "Q"),  # the RTC's Unix ms when it was made
    ("treq_unanswered", "B"),  # waits for a time answer that came to nothing, since power-on
    ("upd", "B"),  # app.update's data/update as last seen: 0 not read since RTC memory was lost,
    # 1 nothing to do or report, 2 a download in progress, 3 idle with a refusal to report
    ("upd_miss", "B"),  # sessions in a row that fetched none of an update's chunks (app.update)
)
FMT = "<" + "".join(code for _, code in FIELDS)
VERSION = 8


# the largest value of each struct code: what bump() saturates at
_TOP = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF, "b": 0x7F, "h": 0x7FFF,
        "i": 0x7FFFFFFF}
# and the smallest: what save() clamps to (struct.pack raises under CPython and
# wraps on the VM: a value out of its field must neither crash nor read back small)
_BOTTOM = {"B": 0, "H": 0, "I": 0, "Q": 0, "b": -0x80, "h": -0x8000, "i": -0x80000000}


class State:
    """The record as attributes, one per field of FIELDS (0 in a fresh one)."""

    # declared here for readers and editors; FIELDS has their order, size and meaning
    boots = crash_streak = crashes = safe_left = safe_entries = samples = up_fails = 0
    up_next = synced = ppm = awake_ms = alarms = auth_fails = power = batt_mv = 0
    wdt_resets = lost_rtc = cfg_crc = rssi = rejected = refused = last_stamp = 0
    exhausted = ntp_refused = ntp_streak = down_busy = treq = treq_ms = treq_unanswered = upd = upd_miss = 0
    dr_forged = dr_replay = dr_oversized = dr_malformed = dr_invalid = dr_stale = dr_reverted = 0
    hold_min = None  # minutes of a maintenance hold asked for in this wake (app.mailbox): not kept, not in FIELDS

    def __init__(self, rtc=None):
        self.region = rtcmem.Region(rtc or machine.RTC(), APP[0], APP[1], VERSION)
        payload, self.why = self.region.load()
        if payload is not None and len(payload) == struct.calcsize(FMT):
            values = struct.unpack(FMT, payload)
            for i in range(len(FIELDS)):
                setattr(self, FIELDS[i][0], values[i])
        elif payload is not None:
            self.why = "bad-size"

    def bump(self, name, n=1):
        """Add n to a counter, saturating at what its field holds (255 for a
        B, 65535 for an H, ...): a counter that wrapped would read as few."""
        for field, code in FIELDS:
            if field == name:
                setattr(self, name, min(getattr(self, name) + n, _TOP[code]))
                return
        raise AttributeError(name)

    def save(self):
        """Every field clamped to what it holds (a battery reading of 70000 mV
        is kept as 65535, not as 4464 nor as a crash)."""
        self.region.save(struct.pack(FMT, *[max(_BOTTOM[code], min(_TOP[code], getattr(self, name)))
                                            for name, code in FIELDS]))

    def schedule(self):
        """The schedule's part, as the dict app.schedule.Schedule keeps."""
        return {"synced": self.synced, "ppm": self.ppm}

    def keep_schedule(self, d):
        self.synced, self.ppm = d["synced"], d["ppm"]
