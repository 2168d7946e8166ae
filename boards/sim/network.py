"""Fake `network` (ESP32 WLAN station) with scripted access points.

The radio has no real link here: an access point is a dict on board.aps that
says what happens when the node tries it, and every step takes virtual time, so
connect deadlines, backoff and energy can be tested. Fields of an AP:
  ssid, bssid (hex), channel, rssi, password, up (default True),
  dhcp_ms (None: no DHCP answer), ip.
Phase times default to what is reported for ESP32 + MicroPython
(../shared/reference/energy.md): ~1.6 s connect with DHCP, ~0.7 s of it the WPA2
passphrase derivation, well under 200 ms with static IP + BSSID + channel.
A board profile may override them (board.net_timing, set by the boot runner).
While the station is active the ledger books time as "radio" (simstate.py);
socket.py carries traffic only while status() is STAT_GOT_IP.
"""

from simstate import board

STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

# Phase times (ms), calibrated so the totals match energy.md: 1.64 s with DHCP,
# 0.74 s with a static IP, 80 ms with static IP + known BSSID + stored PSK.
# A board profile may override them.
TIMING = {
    "start": 100,  # WLAN.active(True): radio and driver up
    "scan_per_channel": 120,  # WLAN.scan(): active scan dwell per channel
    "locate": 60,  # connect() without BSSID and channel finds the AP first
    "pbkdf2": 600,  # WPA2 passphrase -> PSK on every wake, skipped for a 64-hex key
    "assoc": 80,  # authentication + association + 4-way handshake
    "dhcp": 900,  # default DHCP answer time when the AP does not set dhcp_ms
}
CHANNELS = 13


def _ms(name):
    return board.net_timing.get(name, TIMING[name])


def _hex(b):
    return "".join("%02x" % x for x in b)


class WLAN:
    def __init__(self, interface_id=STA_IF):
        board.alive()
        if interface_id != STA_IF:
            raise ValueError("only the station interface is simulated")
        if board.wlan is None:
            board.wlan = {
                "active": False, "status": STAT_IDLE, "ap": None, "t_done": 0,
                "result": STAT_IDLE, "static": None, "ip": None, "hostname": "esp32",
            }
        self._s = board.wlan

    def active(self, is_active=None):
        board.alive()
        s = self._s
        if is_active is None:
            return s["active"]
        board.account()  # what came before was booked at the old radio state
        if not is_active:
            self.disconnect()
            s["active"] = False
        elif not s["active"]:
            s["active"] = True
            board.advance(_ms("start") * 1000)  # radio and driver coming up: radio time

    def _need_active(self):
        board.alive()
        if not self._s["active"]:
            raise OSError("Wifi Not Started")

    def scan(self):
        self._need_active()
        board.advance(CHANNELS * _ms("scan_per_channel") * 1000)
        found = []
        for ap in board.aps:
            if ap.get("up", True):
                found.append((ap["ssid"].encode(), bytes.fromhex(ap["bssid"]),
                              ap.get("channel", 1), ap.get("rssi", -60),
                              AUTH_WPA2_PSK if ap.get("password") else AUTH_OPEN, False))
        return found

    def connect(self, ssid=None, key=None, bssid=None):
        """Starts connecting and returns at once, as on the ESP32; status() and
        isconnected() follow in virtual time. (The ESP32 port takes no channel:
        a known BSSID is what spares the search.)"""
        self._need_active()
        s = self._s
        ms = 0
        ap = None
        for cand in board.aps:
            if cand["ssid"] == ssid and cand.get("up", True):
                if bssid is None or bytes(bssid) == bytes.fromhex(cand["bssid"]):
                    ap = cand
                    break
        s["t_assoc"] = None
        if ap is None:
            ms += CHANNELS * _ms("scan_per_channel")  # searched every channel
            result = STAT_NO_AP_FOUND
        else:
            if bssid is None:
                ms += _ms("locate")
            pw = ap.get("password") or ""
            if pw and not (key is not None and len(key) == 64):
                ms += _ms("pbkdf2")
            ms += _ms("assoc")
            s["t_assoc"] = board.world_us + ms * 1000  # associated from here (before DHCP)
            if pw and key != pw:
                s["t_assoc"] = None
                result = STAT_WRONG_PASSWORD
            elif s["static"] is not None:
                result = STAT_GOT_IP
            elif ap.get("dhcp_ms", _ms("dhcp")) is None:
                result = STAT_CONNECTING  # associated, DHCP never answers
            else:
                ms += ap.get("dhcp_ms", _ms("dhcp"))
                result = STAT_GOT_IP
        s["ap"] = ap
        s["status"] = STAT_CONNECTING
        s["result"] = result
        s["t_done"] = board.world_us + ms * 1000

    def disconnect(self):
        board.alive()
        s = self._s
        s["ap"] = None
        s["t_assoc"] = None
        s["status"] = STAT_IDLE
        s["result"] = STAT_IDLE
        s["ip"] = None

    def status(self, param=None):
        board.alive()
        s = self._s
        if s["status"] == STAT_CONNECTING and board.world_us >= s["t_done"]:
            s["status"] = s["result"]
            if s["status"] == STAT_GOT_IP:
                s["ip"] = s["static"][0] if s["static"] else s["ap"].get("ip", "192.168.1.50")
        if s["status"] == STAT_GOT_IP and not s["ap"].get("up", True):
            s["status"] = STAT_BEACON_TIMEOUT  # the AP went away under us
            s["ip"] = None
        if param is None:
            return s["status"]
        if param == "rssi":
            # the ESP32 answers once associated, before DHCP has given an address
            t = s.get("t_assoc")
            if t is None or board.world_us < t or not s["ap"].get("up", True) \
                    or s["status"] == STAT_BEACON_TIMEOUT:
                raise OSError("STA is not connected")
            return s["ap"].get("rssi", -60)
        raise ValueError("unknown status param")

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self, config=None):
        board.alive()
        s = self._s
        if config is not None:
            s["static"] = tuple(config)
            return
        if s["static"] is not None:
            return s["static"]
        if s["ip"]:
            return (s["ip"], "255.255.255.0", "192.168.1.1", "192.168.1.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        board.alive()
        s = self._s
        if kw:
            for k in kw:
                if k in ("hostname", "dhcp_hostname"):
                    s["hostname"] = kw[k]
                elif k not in ("txpower", "pm", "reconnects"):
                    raise ValueError("unknown config param")
            return
        name = args[0]
        if name == "mac":
            return bytes(board.uid)
        if name in ("hostname", "dhcp_hostname"):
            return s["hostname"]
        if name == "channel":
            return s["ap"].get("channel", 1) if s["ap"] else 0
        if name == "ssid":
            return s["ap"]["ssid"] if s["ap"] else ""
        raise ValueError("unknown config param")
