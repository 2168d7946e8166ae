# lib/eventlog and lib/rtcmem: the serial log format and the RTC-memory record.
import machine
import time

import eventlog
import rtcmem


class Capture:
    def __init__(self):
        self.lines = []


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
    # printing goes to the UART; here we only check the filter decision
    eventlog.level = eventlog.WARN
    try:
        eventlog.info("x", "%d", 1)  # filtered: must not raise or format
        eventlog.level = eventlog.DEBUG
    finally:
        eventlog.level = eventlog.INFO


def test_rtc_record_round_trip():
    rtc = machine.RTC()
    assert rtcmem.load(rtc) == (None, "empty")
    rtcmem.save(rtc, b"\x01\x02\x03")
    assert rtcmem.load(rtc) == (b"\x01\x02\x03", "ok")
    assert rtcmem.load(rtc, version=2) == (None, "bad-version")


def test_rtc_record_detects_every_single_bit_flip():
    rtc = machine.RTC()
    rtcmem.save(rtc, b"state:" + bytes(range(40)))
    good = rtc.memory()
    for i in range(len(good)):
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            rtc.memory(bad)
            payload, why = rtcmem.load(rtc)
            assert payload is None and why != "ok"


def test_rtc_record_rejects_truncation_and_oversize():
    rtc = machine.RTC()
    rtcmem.save(rtc, b"abcdef")
    good = rtc.memory()
    for n in range(1, len(good)):
        rtc.memory(good[:n])
        assert rtcmem.load(rtc)[0] is None
    try:
        rtcmem.save(rtc, b"x" * 2040)
    except ValueError:
        pass
    else:
        raise AssertionError("a record over 2048 bytes must be refused")
    rtcmem.save(rtc, b"x" * 2039)  # exactly 2048 with header and CRC
    assert len(rtc.memory()) == 2048


def test_log_time_is_ms_since_boot():
    time.sleep_ms(1234)
    assert 1234 <= time.ticks_ms() < 1240
