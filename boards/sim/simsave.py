"""Snapshot and restore of the simulated board: one part of simstate.Board.

Runners that start a fresh process per boot (a VM per wake, the virtual board)
carry the board across as JSON: snapshot() gives everything that outlives one
process (the world, the RTC domain, what deep sleep keeps, the ledger);
restore() takes it back and starts the CPU afresh, as a boot does.

The flash partitions esp32.Partition wrote (board.partitions: otadata, an OTA
slot with a firmware update) go along, as the sectors ever programmed in hex,
with the build's table and the slot the bootloader started: a node on the VM
takes a firmware update across its boots as one on CPython does. A board that
never wrote a partition (every ESP32_GENERIC node) adds an empty dict. The
host hands a VM the whole flash; the VM hands back only the sectors its boot
changed (each chip's CRC32 per sector, taken at restore, tells which), and the
host, which holds the rest, merges them: a boot that wrote 7 chunks of 2 KiB
sends ~30 KB of hex, not two whole firmware images (a 200 KB JSON string at
the halt ran the VM's 8 MB heap out, fragmented, one run in four).

A mixin: Board (simboard.py) holds the state. From the clock part it uses
_clear_cpu() (simclock.py), from the ledger account() (simledger.py).
"""

import sys
from binascii import crc32, hexlify, unhexlify

from norflash import NorFlash


class Snapshot:
    """snapshot()/restore() of simstate.Board as JSON-able data (a mixin)."""

    # the VM boots hand back changed sectors only; the host (CPython) always hands out whole chips
    flash_delta = sys.implementation.name == "micropython"

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
            "partitions": self._flashes_out(),
        }

    def restore(self, d):
        for k in d:
            if k != "partitions":  # merged into the chips held: _flashes_in
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
        self._flashes_in(d.get("partitions", {}))
        self._clear_cpu()
        for pin in self.held:
            self.outputs[pin] = self.held[pin]

    def _flashes_out(self):
        """{label: chip as JSON}: whole, or on the VM after a restore only
        the sectors changed since (a "delta" for the host to merge)."""
        base = getattr(self, "_flash_base", None)
        # only against the chips restored: a board reset since holds others
        delta = self.flash_delta and base is not None and base[0] is self.partitions
        base = base[1] if delta else None
        out = {}
        for label in self.partitions:
            chip = self.partitions[label]
            was = base.get(label) if delta else None
            out[label] = _flash_out(chip, was)
        return out

    def _flashes_in(self, parts):
        """Whole chips replace the board's; a delta is merged into the chip
        the board holds (the host's, from the snapshot it handed out)."""
        chips = {}
        for label in parts:
            e = parts[label]
            chip = self.partitions.get(label) if e.get("delta") else None
            if e.get("delta") and chip is None:
                raise ValueError("flash %s: changed sectors without the chip they change" % label)
            chips[label] = _flash_in(e, chip)
        for label in self.partitions:  # a delta names only the chips its boot knew
            if label not in chips and any(parts[k].get("delta") for k in parts):
                chips[label] = self.partitions[label]
        self.partitions = chips
        self._flash_base = (chips, dict((label, _sums(chips[label])) for label in chips))


def _sums(chip):
    return dict((n, crc32(chip.sectors[n])) for n in chip.sectors)


def _flash_out(chip, was=None):
    """A NorFlash as JSON: its size and wear counters, and its programmed
    sectors (was: {sector: CRC32} the receiver holds -> only those that
    differ, and "gone" for those erased since)."""
    d = {"blocks": chip.blocks, "block_size": chip.block_size, "programs": chip.programs,
         "erases": chip.erases, "bytes_programmed": chip.bytes_programmed}
    if was is None:
        d["sectors"] = dict((str(n), hexlify(chip.sectors[n]).decode()) for n in chip.sectors)
        return d
    d["delta"] = True
    d["sectors"] = dict((str(n), hexlify(chip.sectors[n]).decode()) for n in chip.sectors
                        if was.get(n) != crc32(chip.sectors[n]))
    d["gone"] = [n for n in was if n not in chip.sectors]
    return d


def _flash_in(d, chip=None):
    if chip is None:
        chip = NorFlash(d["blocks"], d["block_size"])
    chip.programs, chip.erases, chip.bytes_programmed = d["programs"], d["erases"], d["bytes_programmed"]
    for n in d.get("gone", ()):
        chip.sectors.pop(n, None)
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

