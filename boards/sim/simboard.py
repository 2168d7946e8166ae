"""The simulated ESP32 board: its state, and the one `board` every fake shares.

Board is put together from four parts, each in its own module:
  simclock.Clock     halts, boots and the virtual clock (ticks, RTC, timers)
  simpins.Pins       the world's scheduled events and the levels on the pins
  simledger.Ledger   the energy ledger: virtual time booked by phase
  simsave.Snapshot   snapshot()/restore() across processes, as JSON
The state itself is declared here, in __init__, by what survives what (as on
the chip):
- power loss: only the world (wiring, inputs, committed NVS, flash partitions);
- reset / WDT: also RTC time and RTC memory;
- deep sleep: also held pins. (The ext0/ext1 wake configuration is a RAM
  variable of the port: it wakes the chip, then each boot must set it again.)
What any reset clears (the CPU and its peripherals) is in Clock._clear_cpu().

Tests and tools import simstate, which re-exports all of this and loads the
fake clock with it; the fake `time` imports this module instead, so that
neither imports the other.
"""

from simclock import Clock, PWRON_RESET, WAKE_UNDEFINED
from simledger import Ledger, PHASES
from simpins import Pins
from simsave import Snapshot


class Board(Clock, Pins, Ledger, Snapshot):
    def __init__(self):
        # --- the world: survives everything ---
        self.world_us = 0  # true time since the simulation began
        self.true_unix_at_start = 1767225600  # wall time at world 0 (2026-01-01), for NTP
        self.uid = b"\x24\x0a\xc4\x5e\x71\x08"  # efuse MAC: machine.unique_id()
        self.inputs = {}  # pin -> level driven from outside (buttons, sensors)
        self.analog = {}  # pin -> microvolts at the pad
        self.i2c = {}  # bus id -> {addr: device model}
        self.spi = {}  # bus id -> {cs pin: device model}
        self.onewire = {}  # pin -> [1-Wire device models] (see _onewire.py)
        self.aps = []  # scripted Wi-Fi access points (see network.py)
        self.ntp_ok = True  # whether an NTP server answers when the link is up
        self.ntp_forge_s = 0  # an attacker's answers: this many seconds off the true time (0: honest)
        self.nvs = {}  # committed NVS: namespace -> {key: int | bytes}
        self.partitions = {}  # label -> norflash.NorFlash
        # the build esptool flashed, by partition table (simota.TABLES): "factory"
        # (ESP32_GENERIC) or "ota" (ESP32_GENERIC-OTA, two app slots); set before power_on()
        self.partition_table = "factory"
        self.running_app = None  # the app slot the bootloader started (kept in RTC memory)
        self.events = []  # scheduled [at_us, kind, a, b], sorted by time
        self.boot_us = 0  # time from reset to the first line of boot.py
        self.sleep_drift_ppm = 0  # RTC slow clock error during deep sleep
        self.read_cost_us = 1  # each clock read costs this much, so polling loops end
        self.boots = 0  # boots since the simulation began (not visible to firmware)
        # radio model (socket.py); a board profile may override: see BootRunner
        self.tls_psk_us = 50000  # energy.md: a PSK handshake is tens of ms
        self.tls_cert_us = 1000000  # energy.md: ECDSA P-256 handshake ~1.0 s on an ESP32
        self.rtt_us = 10000  # energy.md: MQTT connect + publish ~40 ms = a few round trips
        self.radio_kbps = 2000  # payload rate of MicroPython over Wi-Fi (an estimate)
        self.net_timing = {}  # overrides of network.TIMING (ms)
        self.link_required = False  # sockets need the simulated link even before WLAN is used
        self.tx_bytes = 0  # bytes sent and received through socket.py
        self.rx_bytes = 0
        # the phase ledger: us per phase, booked up to world time ledger_us
        self.ledger = dict((p, 0) for p in PHASES)
        self.ledger_us = self.world_us
        self.phase = None  # a phase forced for a while (boot, sleep, tls, radio)
        self.boot_mark = self.mark()  # the ledger when the current boot began
        self.host = None  # where the board reports NVS commits and halts
        self.scenario = {}  # JSON-able knobs a setup module reads to wire faults (tests)
        # set by a test before a boot: where the ticks counters start
        self.start_ticks_ms = 0
        self.start_ticks_us = 0
        # --- RTC domain: survives reset and deep sleep, not power loss ---
        self.rtc_mem = b""
        self.rtc_at_ref_us = 0  # RTC reading (us since 2000) at rtc_ref_world_us
        self.rtc_ref_world_us = 0
        # --- survive deep sleep only ---
        self.held = {}  # pin -> level kept by Pin(hold=True)
        self.ext0 = None  # (pin, level)
        self.ext1 = None  # (pins, level)
        self.reset_cause = PWRON_RESET
        self.wake_reason = WAKE_UNDEFINED
        self._clear_cpu()


board = Board()
board.power_on()


def reset_world(power=True):
    """A brand-new board on the bench, powered on unless told otherwise (tests
    start here; a runner may wire things before the first power-on)."""
    board.__init__()
    if power:
        board.power_on()
    return board
