"""Fake `ntptime`: sets the RTC from the world's true time when the link is up,
or from an attacker's (board.ntp_forge_s seconds off it: NTP is not
authenticated, anyone on the path can answer)."""

import errno

import network

from simstate import board

host = "pool.ntp.org"
timeout = 1
NTP_RTT_MS = 30


def time():
    board.alive()
    up = board.wlan is not None and network.WLAN(network.STA_IF).isconnected()
    if not up or not board.ntp_ok:
        board.advance(timeout * 1000000)
        raise OSError(errno.ETIMEDOUT)
    board.advance(NTP_RTT_MS * 1000)
    return board.true_rtc_us() // 1000000 + board.ntp_forge_s


def settime():
    t = time()
    board.set_rtc_us(t * 1000000)
