"""Fake `esp32`: deep-sleep wake sources, NVS, flash partitions, IDF heaps.

NVS keeps what was committed through power loss; uncommitted changes die with
a reset. Partitions are NOR flash: erase sets 0xFF, a program can only clear bits.
set_boot() validates the app image and writes otadata as ESP-IDF does; the
bootloader at the next boot (simota.py) acts on it, rollback included.
"""

import errno

import simota
from norflash import SECTOR
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
        if isinstance(value, str):
            value = value.encode()  # any buffer: a str gives its UTF-8 bytes on the port
        board.nvs_open[self.ns][self._key(key)] = bytes(memoryview(value))

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


# ------------------------------------------------------------------ IDF heaps
HEAP_DATA = 4  # MALLOC_CAP_8BIT
HEAP_EXEC = 1  # MALLOC_CAP_EXEC
# (caps, total, free, largest free block, minimum free) of an ESP32 without PSRAM
# after boot: the data regions are the docs' example (the 113840-byte one holds the
# MicroPython heap), the IRAM one an estimate. board.idf_heaps replaces them.
_DRAM = 0x180E  # 8BIT | 32BIT | DMA | INTERNAL | DEFAULT
_DIRAM = 0x180F  # the same, executable too
_IRAM = 0x803  # EXEC | 32BIT | INTERNAL
HEAPS = (
    (_DRAM, 240, 0, 0, 0),
    (_DRAM, 7288, 0, 0, 0),
    (_DRAM, 16648, 4, 4, 4),
    (_DRAM, 79912, 35712, 35512, 35108),
    (_DIRAM, 15072, 15036, 15036, 15036),
    (_DIRAM, 113840, 0, 0, 0),
    (_IRAM, 13284, 13248, 13248, 13248),
)


def idf_heap_info(capabilities):
    """[(total, free, largest free block, minimum free)] of each IDF heap region
    that has every capability asked for (heap_caps_match)."""
    board.alive()
    cap = capabilities & 0xFFFFFFFF
    heaps = board.idf_heaps if board.idf_heaps is not None else HEAPS
    return [tuple(h[1:5]) for h in heaps if h[0] & cap == cap]


# ------------------------------------------------------------------ Partition
# esp_err_t -> what check_esp_err() raises: OSError(-err, esp_err_to_name(err))
_ERR_NAMES = {
    simota.ESP_FAIL: "ESP_FAIL",
    simota.ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG",
    simota.ERR_NOT_FOUND: "ESP_ERR_NOT_FOUND",
    simota.ERR_OTA_VALIDATE_FAILED: "ESP_ERR_OTA_VALIDATE_FAILED",
}


def _check(err):
    if err:
        raise OSError(-err, _ERR_NAMES[err])


class Partition:
    """A partition of the flashed build's table (simota.TABLES[board.partition_table])."""

    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        board.alive()
        if isinstance(id, int):
            if id == Partition.BOOT:
                row = simota.boot_partition(board)
            elif id == Partition.RUNNING:
                row = simota.find(board, label=board.running_app)
            else:
                raise ValueError()
        else:  # a label: an app partition first, then data
            row = simota.find(board, 0, None, id) or simota.find(board, 1, None, id)
        if row is None:
            raise OSError(errno.ENOENT)
        self.row = row
        self.block_size = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        return [Partition(r[0], block_size) for r in simota.rows(board)
                if r[1] == type and (subtype == 0xFF or r[2] == subtype)
                and (label is None or r[0] == label)]

    def info(self):
        r = self.row
        return (r[1], r[2], r[3], r[4], r[0], False)

    def __repr__(self):
        r = self.row
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=0>" % (
            r[1], r[2], r[3], r[4], r[0])

    def flash(self):
        """The NOR flash behind this partition (boards/sim/norflash.py); it
        outlives every reset and power cut, as flash does."""
        return simota.flash(board, self.row)

    def readblocks(self, block_num, buf, offset=0):
        board.alive()
        self.flash().read(block_num * self.block_size + offset, buf)

    def writeblocks(self, block_num, buf, offset=None):
        board.alive()
        f = self.flash()
        start = block_num * self.block_size
        if offset is None:  # a simple write: erase first, as the port does
            end = start + len(buf)
            for sec in range(start // SECTOR, (end + SECTOR - 1) // SECTOR):
                lo, hi = max(start, sec * SECTOR), min(end, (sec + 1) * SECTOR)
                keep = None
                if hi - lo < SECTOR:  # blocks smaller than a sector: keep the rest of it
                    keep = bytearray(SECTOR)
                    f.read(sec * SECTOR, keep)
                f.erase(sec)
                if keep is not None:
                    f.program(sec * SECTOR, keep[: lo - sec * SECTOR])
                    f.program(hi, keep[hi - sec * SECTOR :])
            f.program(start, buf)
        else:
            f.program(start + offset, buf)

    def ioctl(self, cmd, arg):
        board.alive()
        if cmd == 4:
            return self.row[4] // self.block_size
        if cmd == 5:
            return self.block_size
        if cmd == 6:
            if self.block_size != SECTOR:
                return -errno.EINVAL
            self.flash().erase(arg)
            return 0
        return 0 if cmd in (1, 2, 3) else None

    def set_boot(self):
        """Boot this app at the next reset (not at a deep-sleep wake, which
        skips the bootloader's choice): the image must validate."""
        board.alive()
        _check(simota.set_boot(board, self.row))

    def get_next_update(self):
        board.alive()
        row = simota.next_update(board, self.row)
        if row is None:
            raise OSError(errno.ENOENT)  # no OTA slots in this table
        return Partition(row[0])

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        board.alive()
        _check(simota.mark_valid(board))
