"""app.breakin: the break-in window after a power-on or hard reset."""

import time

from app import breakin


class Console:
    """What the UART has received, and a poll object on it."""

    def __init__(self, data):
        self.data = data
        self.at = 0
        self.read_at_ms = []

    def poll(self, timeout):
        return [(self, 1)] if self.at < len(self.data) else []

    def read(self, n):
        self.read_at_ms.append(time.ticks_ms())
        c = self.data[self.at:self.at + n]
        self.at += n
        return c


def test_no_ctrl_c_lets_the_window_pass_in_its_time():
    con = Console("")
    t0 = time.ticks_ms()
    assert breakin.window(1500, con, con) is False
    assert 1500 <= time.ticks_diff(time.ticks_ms(), t0) < 1500 + 2 * breakin.SLICE_MS


def test_ctrl_c_breaks_in_at_once_and_other_bytes_do_not():
    con = Console("ab\r\x03")
    t0 = time.ticks_ms()
    assert breakin.window(1500, con, con) is True
    assert time.ticks_diff(time.ticks_ms(), t0) < breakin.SLICE_MS  # not the whole window
    assert con.at == 4
    assert breakin.window(300, Console("xyz\r\n"), Console("xyz\r\n")) is False


def test_a_console_that_ends_is_read_no_more_and_the_window_still_passes():
    con = Console("q")  # then end of input: read returns nothing
    con.poll = lambda timeout: [(con, 1)]  # an ended stream polls readable for ever
    t0 = time.ticks_ms()
    assert breakin.window(400, con, con) is False
    assert len(con.read_at_ms) == 2  # the byte, then the end; never again
    assert time.ticks_diff(time.ticks_ms(), t0) >= 400


def test_no_console_at_all_is_no_error():
    # a stream that cannot be polled (a host run's captured stdin)
    t0 = time.ticks_ms()
    assert breakin.window(200, object()) is False
    assert time.ticks_diff(time.ticks_ms(), t0) >= 200


def test_a_flood_of_other_bytes_does_not_hold_the_window_open():
    con = Console("x" * 100000)  # a noisy line
    t0 = time.ticks_ms()
    assert breakin.window(400, con, con) is False
    assert 400 <= time.ticks_diff(time.ticks_ms(), t0) < 400 + 2 * breakin.SLICE_MS
    # read a slice's worth at a time, the clock checked between: never stuck reading
    assert len(con.read_at_ms) <= (400 // breakin.SLICE_MS + 1) * breakin.READS_PER_SLICE
