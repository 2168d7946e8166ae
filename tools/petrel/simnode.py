"""A whole simulated node, as `make sim` and the wake-cycle tests use it: the
firmware laid out on a flash folder with the board profile's hardware as
/board.json, a configuration and per-run secrets, a real Mosquitto with TLS on
loopback, the Wi-Fi access point and the sensors around it (boards/sim/simworld).

    with Broker() as broker:
        node = SimNode(tmp / "flash", broker, interpreter="vm")
        boots = node.run(24)
        node.arrived()          # the readings the broker received, verified
"""

import json
import secrets as _secrets
from pathlib import Path

from . import boards, bootrun, simflash

SSID = "petrel-lab"
DEVICE_ID = "node-1"

# The default application, from the node's board profile: temperature and
# humidity every 5 minutes, the battery with them, uploaded hourly (12 samples).
CHANNELS = boards.load("esp32-node")["hardware"]["channels"]


def node_config(broker, tls="psk", **over):
    cfg = {
        "device_id": DEVICE_ID,
        "sample_s": 300,
        "uplink_every": 12,
        "batch": 36,
        "network_budget_ms": 10000,
        "channels": CHANNELS,
        "alarms": [{"channel": "t", "above": 30, "hysteresis": 0.5}],
        "wifi": {"ssid": SSID},
        "broker": {"host": "localhost", "port": broker.ports[tls], "tls": tls},
    }
    if tls == "psk":
        cfg["broker"]["psk_identity"] = DEVICE_ID
    else:
        cfg["broker"]["ca"] = "certs/ca.der"
    cfg.update(over)
    return cfg


class SimNode:
    def __init__(self, flash, broker, interpreter="vm", tls=None, profile="esp32-node",
                 config=None, serial=None, prepare=None, fs=None):
        """fs: "littlefs" (the VM's default: a NOR flash image with littlefs, as
        on the chip) or "folder" (a host folder; CPython has no littlefs)."""
        self.flash = Path(flash)
        self.fs = fs or ("littlefs" if interpreter == "vm" else "folder")
        self.broker = broker
        self.interpreter = interpreter
        # CPython's ssl has no client TLS-PSK: certificate TLS there
        self.tls = tls or ("psk" if interpreter == "vm" else "tls")
        self.hmac_key = _secrets.token_bytes(32)
        self.wifi_psk = _secrets.token_hex(32)
        simflash.populate(self.flash)
        prof = boards.load(profile)
        (self.flash / "board.json").write_text(json.dumps({"hardware": prof.get("hardware", {})}))
        certs = self.flash / "certs"
        certs.mkdir(exist_ok=True)
        (certs / "ca.der").write_bytes(Path(broker.pki["ca"]).with_suffix(".der").read_bytes())
        self.config = config or node_config(broker, self.tls)
        self.write_config(self.config)
        psk_key = bytes.fromhex(broker.psk[DEVICE_ID]) if DEVICE_ID in broker.psk else b""
        sec = {"hmac_key": self.hmac_key.hex(), "wifi_psk": self.wifi_psk}
        if psk_key:
            sec["psk_key"] = psk_key.hex()
        (self.flash / "secrets.json").write_text(json.dumps(sec))

        def _prepare(board):
            board.aps = [{"ssid": SSID, "bssid": "a4b1c2d3e4f5", "channel": 6, "rssi": -61,
                          "password": self.wifi_psk}]
            board.inputs[0] = 1  # BOOT button released (pulled up)
            board.inputs[33] = 1  # alarm contact open
            if prepare is not None:
                prepare(board)

        self.image = None
        if self.fs == "littlefs":
            self.image = simflash.Image.make(self.flash, self.flash.parent / (self.flash.name + ".img"))
            from norflash import NorFlash

            chip = NorFlash.load(str(self.image.path))
            self._wear0 = (chip.erases, chip.bytes_programmed)
        self.runner = bootrun.BootRunner(self.image or self.flash, interpreter, setup="simworld",
                                         serial=serial, prepare=_prepare, profile=profile)
        self.board = self.runner.board

    def flash_wear(self):
        """(erases, bytes programmed) on the littlefs image since the node was
        laid out, or None on a folder."""
        if self.image is None:
            return None
        from norflash import NorFlash

        now = NorFlash.load(str(self.image.path))
        return now.erases - self._wear0[0], now.bytes_programmed - self._wear0[1]

    def write_config(self, cfg):
        self.write_file("config.json", json.dumps(cfg))

    def write_file(self, name, data):
        """Put a file on the board's flash (what a deploy would do between wakes)."""
        data = data if isinstance(data, bytes) else data.encode()
        if getattr(self, "image", None) is not None:
            self.image.write(name, data)
        else:
            (self.flash / name).parent.mkdir(parents=True, exist_ok=True)
            (self.flash / name).write_bytes(data)

    def read_file(self, name):
        """A file from the board's flash as text, or None."""
        if getattr(self, "image", None) is not None:
            data = self.image.read(name)
        else:
            p = self.flash / name
            data = p.read_bytes() if p.exists() else None
        return None if data is None else data.decode()

    def world_ms(self):
        """The simulated world's true time in Unix ms, as of the current
        boot's start (a boot on the VM runs in its own process): the clock a
        time service in this world answers with (Collector(clock=...)). The
        node takes it within a boot's few seconds (lib/clock.py SLACK_S)."""
        return self.board.true_rtc_us() // 1000 + 946684800000  # the ESP32's epoch is 2000

    def run(self, boots):
        """Play `boots` more boots; -> those boots only."""
        start = len(self.runner.boots)
        return self.runner.run(boots)[start:]
