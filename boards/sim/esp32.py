"""Fake `esp32`: deep-sleep wake sources, NVS and flash partitions.

NVS keeps what was committed through power loss; uncommitted changes die with
a reset. Partitions are NOR flash: erase sets 0xFF, a program can only clear bits.
"""

import errno

from norflash import NorFlash, SECTOR
from simstate import board

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True

# GPIOs that the RTC domain can watch while the chip sleeps.
_RTC_PINS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)


def _rtc_pin(pin):
    n = pin if isinstance(pin, int) else pin.id
    if n not in _RTC_PINS:
        raise ValueError("invalid pin for wake")
    return n


def wake_on_ext0(pin, level):
    board.alive()
    board.ext0 = None if pin is None else (_rtc_pin(pin), 1 if level else 0)


def wake_on_ext1(pins, level):
    board.alive()
    if pins is None or len(pins) == 0:
        board.ext1 = None
    else:
        board.ext1 = (tuple(_rtc_pin(p) for p in pins), bool(level))


def wake_on_touch(wake):
    board.alive()


# ------------------------------------------------------------------ NVS
_KEY_MAX = 15  # NVS_KEY_NAME_MAX_SIZE - 1
# The port raises OSError(-esp_err, name) for ESP-IDF errors (check_esp_err).
_NOT_FOUND = (-0x1102, "ESP_ERR_NVS_NOT_FOUND")
_KEY_TOO_LONG = (-0x1109, "ESP_ERR_NVS_KEY_TOO_LONG")
_INVALID_LENGTH = (-0x110C, "ESP_ERR_NVS_INVALID_LENGTH")


class NVS:
    def __init__(self, namespace):
        board.alive()
        if not namespace or len(namespace) > _KEY_MAX:
            raise OSError(*_KEY_TOO_LONG)
        self.ns = namespace
        if namespace not in board.nvs_open:
            board.nvs_open[namespace] = {}

    def _key(self, key):
        if not key or len(key) > _KEY_MAX:
            raise OSError(*_KEY_TOO_LONG)
        return key

    def _get(self, key):
        board.alive()
        pending = board.nvs_open[self.ns]
        if key in pending:
            v = pending[key]
        else:
            v = board.nvs.get(self.ns, {}).get(key)
        if v is None:
            raise OSError(*_NOT_FOUND)
        return v

    def set_i32(self, key, value):
        board.alive()
        if value < -(1 << 31) or value >= (1 << 31):
            raise OverflowError("value does not fit in 32 bits")
        board.nvs_open[self.ns][self._key(key)] = int(value)

    def get_i32(self, key):
        v = self._get(key)
        if not isinstance(v, int):
            raise OSError(*_NOT_FOUND)  # NVS keys are typed: none of this type
        return v

    def set_blob(self, key, value):
        board.alive()
        board.nvs_open[self.ns][self._key(key)] = bytes(value)

    def get_blob(self, key, buffer):
        v = self._get(key)
        if isinstance(v, int):
            raise OSError(*_NOT_FOUND)
        if len(buffer) < len(v):
            raise OSError(*_INVALID_LENGTH)
        for i in range(len(v)):
            buffer[i] = v[i]
        return len(v)

    def erase_key(self, key):
        self._get(key)
        board.nvs_open[self.ns][key] = None

    def commit(self):
        board.alive()
        pending = board.nvs_open[self.ns]
        store = board.nvs.setdefault(self.ns, {})
        for k in pending:
            if pending[k] is None:
                store.pop(k, None)
            else:
                store[k] = pending[k]
        board.nvs_open[self.ns] = {}
        if board.host is not None:
            board.host.event("nvs", board.snapshot()["nvs"])


# ------------------------------------------------------------------ Partition
class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1
    BLOCK_SIZE = 4096
    # (label, type, subtype, offset, size): MicroPython's default ESP32 4 MiB table
    TABLE = (
        ("nvs", 1, 2, 0x9000, 0x6000),
        ("phy_init", 1, 1, 0xF000, 0x1000),
        ("factory", 0, 0, 0x10000, 0x1F0000),
        ("vfs", 1, 0x81, 0x200000, 0x200000),
    )

    def __init__(self, id, block_size=4096):
        board.alive()
        if id in (Partition.BOOT, Partition.RUNNING):
            id = "factory"
        for row in Partition.TABLE:
            if row[0] == id:
                self.row = row
                break
        else:
            raise ValueError("partition not found")
        self.block_size = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None):
        return [Partition(r[0]) for r in Partition.TABLE
                if r[1] == type and (subtype == 0xFF or r[2] == subtype)
                and (label is None or r[0] == label)]

    def info(self):
        r = self.row
        return (r[1], r[2], r[3], r[4], r[0], False)

    def flash(self):
        """The NOR flash behind this partition (boards/sim/norflash.py); it
        outlives every reset and power cut, as flash does."""
        label = self.row[0]
        if label not in board.partitions:
            board.partitions[label] = NorFlash(self.row[4] // SECTOR)
        return board.partitions[label]

    def readblocks(self, block_num, buf, offset=0):
        board.alive()
        self.flash().read(block_num * self.block_size + offset, buf)

    def writeblocks(self, block_num, buf, offset=None):
        board.alive()
        f = self.flash()
        if offset is None:  # whole blocks: erase first, as MicroPython does
            for b in range(len(buf) // self.block_size):
                self.ioctl(6, block_num + b)
        f.program(block_num * self.block_size + (offset or 0), buf)

    def ioctl(self, cmd, arg):
        board.alive()
        if cmd == 4:
            return self.row[4] // self.block_size
        if cmd == 5:
            return self.block_size
        if cmd == 6:
            first = arg * self.block_size // SECTOR
            for n in range(first, first + max(1, self.block_size // SECTOR)):
                self.flash().erase(n)
            return 0
        return 0

    def set_boot(self):
        board.alive()

    def get_next_update(self):
        raise OSError(errno.ENOENT)  # the default table has no OTA slots

    @staticmethod
    def mark_app_valid_cancel_rollback():
        board.alive()
