# lib/eventlog and lib/rtcmem: the serial log format and the RTC-memory record.
import machine
import time

import eventlog
import rtcmem


class Capture:
    """Stands in for print inside eventlog (a module global shadows the builtin
    on both interpreters), so a test sees exactly the lines that would go out."""

    def __init__(self):
        self.lines = []

    def __enter__(self):
        eventlog.print = self.write
        return self

    def __exit__(self, *exc):
        del eventlog.print
        eventlog.level = eventlog.INFO

    def write(self, line):
        self.lines.append(line)

    def tags(self):
        return [eventlog.parse(line)[2] for line in self.lines]


def test_log_line_format_round_trips():
    line = "I %06d wake: cause=%s boot=%d batt_mv=%d" % (123, "deepsleep", 42, 3910)
    lvl, ms, tag, fields, msg = eventlog.parse(line)
    assert (lvl, ms, tag) == ("I", 123, "wake")
    assert fields == {"cause": "deepsleep", "boot": "42", "batt_mv": "3910"}
    assert msg == "cause=deepsleep boot=42 batt_mv=3910"


def test_log_parse_rejects_other_lines():
    for junk in ("", "Traceback (most recent call last):", "rst:0x5 (DEEPSLEEP_RESET)",
                 "X 000001 tag: msg", "I abc tag: x", ">>> "):
        assert eventlog.parse(junk) is None


def test_log_levels_filter():
    with Capture() as out:
        eventlog.level = eventlog.WARN
        eventlog.error("e", "n=%d", 1)
        eventlog.warn("w", "n=%d", 2)
        eventlog.info("i", "n=%d", 3)
        eventlog.debug("d", "n=%d", 4)
        assert out.tags() == ["e", "w"]
        assert out.lines[1] == "W 000000 w: n=2"
        out.lines = []
        eventlog.level = eventlog.DEBUG
        eventlog.debug("d", "n=%d", 4)
        eventlog.info("i")
        assert out.tags() == ["d", "i"]


def test_log_formats_nothing_for_a_level_that_is_off():
    # "%d" % "x" raises: a filtered call must return before formatting
    with Capture() as out:
        eventlog.level = eventlog.ERROR
        eventlog.warn("w", "n=%d", "x")
        eventlog.debug("d", "n=%d", "x")
        assert out.lines == []


def test_rtc_record_round_trip():
    r = rtcmem.Region(machine.RTC(), 0, 64)
    assert r.load() == (None, "empty")
    r.save(b"\x01\x02\x03")
    assert r.load() == (b"\x01\x02\x03", "ok")
    assert rtcmem.Region(machine.RTC(), 0, 64, version=2).load() == (None, "bad-version")
    r.clear()
    assert r.load() == (None, "empty")


def test_rtc_regions_do_not_disturb_each_other():
    rtc = machine.RTC()
    a = rtcmem.Region(rtc, 0, 100)
    b = rtcmem.Region(rtc, 100, 1948)
    b.save(b"outbox" * 100)
    a.save(b"app")
    assert a.load() == (b"app", "ok")
    assert b.load() == (b"outbox" * 100, "ok")
    a.save(b"app2" * 20)
    b.clear()
    assert a.load() == (b"app2" * 20, "ok") and b.load() == (None, "empty")
    assert len(rtc.memory()) <= 2048


def test_rtc_record_detects_every_single_bit_flip():
    rtc = machine.RTC()
    r = rtcmem.Region(rtc, 0, 64)
    r.save(b"state:" + bytes(range(40)))
    good = rtc.memory()
    for i in range(9 + 46):
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            rtc.memory(bad)
            payload, why = r.load()
            assert payload is None and why != "ok"


def test_rtc_record_rejects_truncation_and_oversize():
    rtc = machine.RTC()
    r = rtcmem.Region(rtc)
    r.save(b"abcdef")
    good = rtc.memory()
    for n in range(1, 15):
        rtc.memory(good[:n])
        assert r.load()[0] is None
    try:
        r.save(b"x" * 2040)
    except ValueError:
        pass
    else:
        raise AssertionError("a record over 2048 bytes must be refused")
    r.save(b"x" * 2039)  # exactly 2048 with header and CRC
    assert len(rtc.memory()) == 2048
    try:
        rtcmem.Region(rtc, 2000, 100)
    except ValueError:
        pass
    else:
        raise AssertionError("a region past 2048 bytes must be refused")


def test_log_time_is_ms_since_boot():
    time.sleep_ms(1234)
    assert 1234 <= time.ticks_ms() < 1240
