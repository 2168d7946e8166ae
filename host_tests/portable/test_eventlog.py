# lib/eventlog: the serial log format, read back by parse(), and its levels.
import time

import eventlog


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


def test_log_time_is_ms_since_boot():
    time.sleep_ms(1234)
    assert 1234 <= time.ticks_ms() < 1240
