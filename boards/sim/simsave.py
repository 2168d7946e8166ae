"""Snapshot and restore of the simulated board: one part of simstate.Board.

Runners that start a fresh process per boot (a VM per wake, the virtual board)
carry the board across as JSON: snapshot() gives everything that outlives one
process (the world, the RTC domain, what deep sleep keeps, the ledger);
restore() takes it back and starts the CPU afresh, as a boot does.

The flash partitions esp32.Partition wrote (board.partitions: otadata, an OTA
slot with a firmware update) go along, as the sectors ever programmed in hex,
with the build's table and the slot the bootloader started: a node on the VM
takes a firmware update across its boots as one on CPython does. A board that
never wrote a partition (every ESP32_GENERIC node) adds an empty dict; an OTA
node carries otadata (one sector) and what it wrote to its update slot (a
1.5 MiB firmware: 3 MB of hex per boot, a few tens of KB: a few ms).

A mixin: Board (simboard.py) holds the state. From the clock part it uses
_clear_cpu() (simclock.py), from the ledger account() (simledger.py).
"""

from binascii import hexlify, unhexlify

from norflash import NorFlash


class Snapshot:
    """snapshot()/restore() of simstate.Board as JSON-able data (a mixin)."""

    def snapshot(self):
        """Everything that outlives one process, as plain JSON-able data."""
        nvs = {}
        for ns in self.nvs:
            d = {}
            for k in self.nvs[ns]:
                v = self.nvs[ns][k]
                d[k] = v if isinstance(v, int) else {"blob": _hex(v)}
            nvs[ns] = d
        self.account()
        return {
            "world_us": self.world_us,
            "true_unix_at_start": self.true_unix_at_start,
            "uid": _hex(self.uid),
            "inputs": _keys_str(self.inputs),
            "analog": _keys_str(self.analog),
            "ntp_ok": self.ntp_ok,
            "ntp_forge_s": self.ntp_forge_s,
            "nvs": nvs,
            "events": [e for e in self.events if e[1] != "call"],
            "boot_us": self.boot_us,
            "sleep_drift_ppm": self.sleep_drift_ppm,
            "read_cost_us": self.read_cost_us,
            "boots": self.boots,
            "start_ticks_ms": self.start_ticks_ms,
            "start_ticks_us": self.start_ticks_us,
            "rtc_mem": _hex(self.rtc_mem),
            "rtc_at_ref_us": self.rtc_at_ref_us,
            "rtc_ref_world_us": self.rtc_ref_world_us,
            "held": _keys_str(self.held),
            "ext0": self.ext0,
            "ext1": self.ext1,
            "reset_cause": self.reset_cause,
            "wake_reason": self.wake_reason,
            "aps": self.aps,
            "scenario": self.scenario,
            "tls_psk_us": self.tls_psk_us,
            "tls_cert_us": self.tls_cert_us,
            "rtt_us": self.rtt_us,
            "radio_kbps": self.radio_kbps,
            "net_timing": self.net_timing,
            "link_required": self.link_required,
            "tx_bytes": self.tx_bytes,
            "rx_bytes": self.rx_bytes,
            "ledger": self.ledger,
            "ledger_us": self.ledger_us,
            "boot_mark": self.boot_mark,
            "partition_table": self.partition_table,
            "running_app": self.running_app,
            "partitions": dict((label, _flash_out(self.partitions[label])) for label in self.partitions),
        }

    def restore(self, d):
        for k in d:
            setattr(self, k, d[k])
        self.uid = _unhex(d["uid"])
        self.rtc_mem = _unhex(d["rtc_mem"])
        self.inputs = _keys_int(d["inputs"])
        self.analog = _keys_int(d["analog"])
        self.held = _keys_int(d["held"])
        if d["ext0"] is not None:
            self.ext0 = tuple(d["ext0"])
        if d["ext1"] is not None:
            self.ext1 = (tuple(d["ext1"][0]), d["ext1"][1])
        nvs = {}
        for ns in d["nvs"]:
            nvs[ns] = {}
            for k in d["nvs"][ns]:
                v = d["nvs"][ns][k]
                nvs[ns][k] = v if isinstance(v, int) else _unhex(v["blob"])
        self.nvs = nvs
        parts = d.get("partitions", {})
        self.partitions = dict((label, _flash_in(parts[label])) for label in parts)
        self._clear_cpu()
        for pin in self.held:
            self.outputs[pin] = self.held[pin]


def _flash_out(chip):
    """A NorFlash as JSON: its size, wear counters and programmed sectors."""
    return {"blocks": chip.blocks, "block_size": chip.block_size, "programs": chip.programs,
            "erases": chip.erases, "bytes_programmed": chip.bytes_programmed,
            "sectors": dict((str(n), hexlify(chip.sectors[n]).decode()) for n in chip.sectors)}


def _flash_in(d):
    chip = NorFlash(d["blocks"], d["block_size"])
    chip.programs, chip.erases, chip.bytes_programmed = d["programs"], d["erases"], d["bytes_programmed"]
    for n in d["sectors"]:
        chip.sectors[int(n)] = bytearray(unhexlify(d["sectors"][n]))
    return chip


def _hex(b):
    return "".join("%02x" % x for x in b)


def _unhex(s):
    return bytes(int(s[i : i + 2], 16) for i in range(0, len(s), 2))


def _keys_str(d):
    return dict((str(k), d[k]) for k in d)


def _keys_int(d):
    return dict((int(k), d[k]) for k in d)

