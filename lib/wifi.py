"""Wi-Fi station for a node that wakes from deep sleep: connect within a hard
deadline, keep what makes the next connect fast in RTC memory, back off with
jitter after failures, and leave the radio off.

    w = wifi.Wifi("home", PSK, rtc=rtcmem.Region(machine.RTC(), 1792, 64), static=True)
    if w.should_try() and w.connect(8000):
        ...                  # uplink; w.up() says whether the link is still there
    w.off()                  # never enter deep sleep with the radio on
    machine.deepsleep(...)   # after a failure, w.next_attempt_ms() says when to try again

What a connect costs (simulated board, from ../shared/reference/energy.md):
- no cache (first wake, power cut, AP replaced): a scan (~1.6 s), the only way
  MicroPython tells the BSSID, then a connect to the strongest AP with the SSID:
  PBKDF2 of a passphrase (~0.6 s), association (~80 ms), DHCP (~0.9 s);
- cached BSSID and channel, 64-hex PSK, static address: ~80 ms after radio start.

key is the passphrase or, better, the 64-hex PSK: provisioning derives it once
with psk(passphrase, ssid) = PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32) and
stores only that, which spares the node the derivation on every wake.

static: None (DHCP), (ip, mask, gateway, dns), or True: keep the address DHCP
gave with the cached AP and reuse it, going back to DHCP every `renew` connects
so that the lease stays ours.

The RTC record (rtcmem, CRC-checked) holds the cache and the backoff; without
rtc they live as long as the object. Neither key nor PSK is ever logged or
stored in RTC memory.
"""

import os
import struct
import time
from binascii import crc32, hexlify

import eventlog
import network

POLL_MS = 20  # status poll period while connecting
SCAN_MS = 1600  # a full active scan (13 channels x 120 ms): started only if it fits

# ssid crc, bssid (zeros: none), channel, failures, lease uses,
# lease (ip, mask, gw, dns; zeros: none), no retry before (RTC ms since 2000)
_FMT = "<I6sBBB16sQ"
_NONE6 = bytes(6)
_NONE16 = bytes(16)

_WHY = {
    network.STAT_WRONG_PASSWORD: "wrong_password",
    network.STAT_NO_AP_FOUND: "no_ap_found",
    network.STAT_ASSOC_FAIL: "assoc_fail",
    network.STAT_HANDSHAKE_TIMEOUT: "handshake_timeout",
    network.STAT_BEACON_TIMEOUT: "beacon_timeout",
}


def _urandom(n):
    """0..n from the hardware RNG: nodes woken together do not retry together."""
    return int.from_bytes(os.urandom(4), "little") % (n + 1)


def _rtc_ms():
    # RTC time runs through deep sleep; ticks_ms restarts at every boot
    return time.time_ns() // 1000000


def _ipb(s):
    return bytes([int(x) for x in s.split(".")])


def _ips(b):
    return "%d.%d.%d.%d" % tuple(b)


class Wifi:
    def __init__(self, ssid, key, rtc=None, static=None, base_ms=10000, cap_ms=3600000,
                 renew=12, rand=None, log=eventlog.log):
        self.ssid = ssid
        self._key = key
        self.rtc = rtc
        self.static = static
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.renew = renew
        self._rand = rand or _urandom
        self._log = log
        self.wlan = network.WLAN(network.STA_IF)
        # the last connect: ok or why not, how long, and the AP
        self.ok = False
        self.why = None
        self.ms = 0
        self.rssi = None
        self.channel = None
        self.bssid = None
        self.cached = False
        self._t_up = 0
        self._lost = False
        self._load()

    # ------------------------------------------------------------ RTC record
    def _load(self):
        self._tag = crc32(self.ssid.encode()) & 0xFFFFFFFF
        self._bssid = None
        self._ch = 0
        self._lease = None
        self._uses = 0
        self.failures = 0
        self._not_before = 0
        self._rtc_why = None
        if self.rtc is None:
            return
        data, why = self.rtc.load()
        if data is None or len(data) != struct.calcsize(_FMT):
            if why != "empty":  # empty is every power-on; anything else is worth a word
                self._rtc_why = why if data is None else "bad-size"
            return
        tag, bssid, ch, fails, uses, lease, nb = struct.unpack(_FMT, data)
        self.failures = fails
        self._not_before = nb
        if tag != self._tag:  # cache of another network: keep only the backoff
            return
        if bssid != _NONE6:
            self._bssid, self._ch = bssid, ch
        if lease != _NONE16:
            self._lease, self._uses = lease, uses

    def _save(self):
        if self.rtc is not None:
            self.rtc.save(struct.pack(_FMT, self._tag, self._bssid or _NONE6, self._ch,
                                      self.failures, self._uses, self._lease or _NONE16,
                                      self._not_before))

    # ------------------------------------------------------------ connect
    def connect(self, deadline_ms=10000):
        """Bring the link up within deadline_ms of this call. -> True when up.
        On failure the radio is off again, self.why says why and the backoff
        grows; self.ms, rssi, channel, bssid and cached describe the attempt."""
        t0 = time.ticks_ms()
        self.ok = self.cached = self._lost = False
        self.why = self.rssi = self.channel = self.bssid = None
        w = self.wlan
        st = None
        miss = False
        try:
            w.active(True)
            fixed = self.static is not None and self.static is not True
            if fixed:
                w.ifconfig(self.static)
            if self._bssid:
                lease = self.static is True and self._lease and self._uses < self.renew
                if lease:
                    w.ifconfig(tuple(_ips(self._lease[i:i + 4]) for i in (0, 4, 8, 12)))
                    fixed = True
                st = self._attempt(t0, deadline_ms, self._bssid, self._ch)
                if st == network.STAT_GOT_IP:
                    self.cached = True
                    if lease:
                        self._uses += 1
                elif st not in (network.STAT_WRONG_PASSWORD, network.STAT_CONNECTING):
                    # nothing at that BSSID (AP replaced, or down): look around; the
                    # cache stays unless another AP of the SSID answers
                    miss = True
                    w.disconnect()
                    if lease and self._dhcp():
                        fixed = False
            if st is None or miss:
                st = self._fresh(t0, deadline_ms, st)
            if st == network.STAT_GOT_IP:
                self._up(fixed)
            elif st == network.STAT_CONNECTING:
                self.why = "dhcp_timeout" if self._associated() else "deadline"
            else:
                self.why = _WHY.get(st, "status_%d" % st)
        except OSError:  # the radio driver refused: a failure like any other
            self.why = "oserror"
        self.ms = time.ticks_diff(time.ticks_ms(), t0)
        note = (" miss=1" if miss else "") + (" rtc=" + self._rtc_why if self._rtc_why else "")
        self._rtc_why = None
        if self.ok:
            self.failures = 0
            self._not_before = 0
            self._log(eventlog.INFO, "wifi", "ok ms=%d rssi=%d ch=%d cached=%d%s", self.ms,
                      self.rssi if self.rssi is not None else 0, self.channel or 0,
                      1 if self.cached else 0, note)
        else:
            self.off()
            retry = self._failed()
            self._log(eventlog.WARN, "wifi", "fail why=%s ms=%d failures=%d retry_ms=%d%s",
                      self.why, self.ms, self.failures, retry, note)
        self._save()
        return self.ok

    def _fresh(self, t0, deadline_ms, st):
        """No usable cache: scan for the strongest AP with the SSID and connect
        to it, so that its BSSID and channel can be cached."""
        if deadline_ms - time.ticks_diff(time.ticks_ms(), t0) < SCAN_MS:
            if st is not None:  # the cached attempt has spoken; no time to look further
                return st
            return self._attempt(t0, deadline_ms, None, None)  # no scan, no cache
        best = None
        name = self.ssid.encode()
        for ap in self.wlan.scan():
            if ap[0] == name and (best is None or ap[3] > best[3]):
                best = ap
        if best is None:
            return network.STAT_NO_AP_FOUND
        st = self._attempt(t0, deadline_ms, best[1], best[2])
        if st == network.STAT_GOT_IP:
            if bytes(best[1]) != self._bssid:  # another AP: its network may give other addresses
                self._lease = None
            self._bssid = bytes(best[1])
        return st

    def _attempt(self, t0, deadline_ms, bssid, channel):
        w = self.wlan
        if bssid is None:
            w.connect(self.ssid, self._key)
        else:  # the ESP32 port's connect() takes no channel: the BSSID spares the search
            w.connect(self.ssid, self._key, bssid=bssid)
        while True:
            st = w.status()
            left = deadline_ms - time.ticks_diff(time.ticks_ms(), t0)
            if st != network.STAT_CONNECTING or left <= 0:
                return st
            time.sleep_ms(min(POLL_MS, left))

    def _up(self, fixed):
        w = self.wlan
        self.ok = True
        self._t_up = time.ticks_ms()
        self.bssid = self._bssid
        try:
            self.rssi = w.status("rssi")
        except OSError:
            pass
        self.channel = self._ch = w.config("channel")
        if self.static is True and not fixed:  # this address came from DHCP: keep it
            cfg = w.ifconfig()
            self._lease = b"".join([_ipb(x) for x in cfg])
            self._uses = 0

    def _associated(self):
        # On the ESP32, rssi answers once associated, before DHCP; the sim only after
        try:
            self.wlan.status("rssi")
            return True
        except OSError:
            return False

    def _dhcp(self):
        # Back to DHCP after a static address: ipconfig() is MicroPython >= 1.24
        # (the sim has only ifconfig, so there the static address stays for this wake).
        try:
            self.wlan.ipconfig(dhcp4=True)
            return True
        except (AttributeError, OSError, TypeError, ValueError):
            return False

    # ------------------------------------------------------------ session
    def up(self):
        """Whether the link is still up (the MQTT layer gives up cleanly when not).
        Logs the loss once."""
        try:
            ok = self.wlan.active() and self.wlan.isconnected()
        except OSError:
            ok = False
        if self.ok and not ok and not self._lost:
            self._lost = True
            self._log(eventlog.WARN, "wifi", "lost after_ms=%d",
                      time.ticks_diff(time.ticks_ms(), self._t_up))
        return ok

    def off(self):
        """Disconnect and stop the radio: call before deep sleep."""
        try:
            self.wlan.disconnect()
        except OSError:  # not started: nothing to disconnect
            pass
        self.wlan.active(False)

    # ------------------------------------------------------------ backoff
    def _failed(self):
        """Full jitter: the next try at random in 0..min(cap, base * 2**failures)."""
        cap = min(self.cap_ms, self.base_ms << min(self.failures, 24))
        self.failures = min(self.failures + 1, 255)
        delay = self._rand(cap)
        self._not_before = _rtc_ms() + delay
        return delay

    def next_attempt_ms(self):
        """How long to leave the radio off before the next try; 0: try now."""
        left = self._not_before - _rtc_ms()
        # beyond the cap the RTC was set back: do not wait on a clock that lies
        return left if 0 < left <= self.cap_ms else 0

    def should_try(self):
        return self.next_attempt_ms() == 0


def psk(passphrase, ssid):
    """The WPA2 pre-shared key as the 64 hex digits connect() accepts:
    PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32). Seconds of CPU on the ESP32:
    run it once at provisioning and store the result, not the passphrase."""
    import hashlib

    p = passphrase.encode()
    if not 8 <= len(p) <= 63:
        raise ValueError("WPA2 passphrase must be 8..63 characters")
    p += bytes(64 - len(p))
    ipad = bytes([b ^ 0x36 for b in p])
    opad = bytes([b ^ 0x5C for b in p])

    def hmac(msg):  # MicroPython's sha1 has no copy(): hash the pads each time
        h = hashlib.sha1(ipad)
        h.update(msg)
        o = hashlib.sha1(opad)
        o.update(h.digest())
        return o.digest()

    out = b""
    for block in (1, 2):
        u = hmac(ssid.encode() + struct.pack(">I", block))
        acc = int.from_bytes(u, "big")
        for _ in range(4095):
            u = hmac(u)
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(20, "big")
    return hexlify(out[:32]).decode()
