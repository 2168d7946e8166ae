"""The simulated ESP32's flash layout and its second-stage bootloader: the
partition table of the flashed build, the otadata that says which app slot
boots, and the choice the ESP-IDF bootloader makes at each boot, as MicroPython
builds it (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, SKIP_VALIDATE_IN_DEEP_SLEEP).

esp32.Partition reads and writes through here; simclock calls boot() at every
boot. Functions return esp_err_t codes (0 = ESP_OK), as esp_ota_ops.c does;
esp32.py turns them into OSError. State lives on the board: which build is
flashed (board.partition_table), the flash itself (board.partitions) and the
app slot the bootloader started (board.running_app).
"""

import binascii
import struct

import espimage
from norflash import NorFlash, SECTOR

APP = 0
DATA = 1
FACTORY = 0x00
OTA_0 = 0x10
OTA_DATA = 0x00  # data subtype of otadata
# (label, type, subtype, offset, size). The vfs row is the one MicroPython's
# main.c registers at start-up from the end of the table to the end of flash.
TABLES = {
    "factory": (  # ESP32_GENERIC: partitions-4MiBplus.csv
        ("nvs", 1, 2, 0x9000, 0x6000),
        ("phy_init", 1, 1, 0xF000, 0x1000),
        ("factory", 0, 0, 0x10000, 0x1F0000),
        ("vfs", 1, 0x81, 0x200000, 0x200000),
    ),
    "ota": (  # ESP32_GENERIC-OTA: partitions-4MiB-ota.csv
        ("nvs", 1, 2, 0x9000, 0x4000),
        ("otadata", 1, 0, 0xD000, 0x2000),
        ("phy_init", 1, 1, 0xF000, 0x1000),
        ("ota_0", 0, 0x10, 0x10000, 0x180000),
        ("ota_1", 0, 0x11, 0x190000, 0x180000),
        ("vfs", 1, 0x81, 0x310000, 0xF0000),
    ),
}

# esp_ota_img_states_t
NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF
_ENTRY = "<I20sII"  # esp_ota_select_entry_t: ota_seq, seq_label, ota_state, crc
_ENTRY_SIZE = 32

# esp_err_t
ESP_FAIL = -1
ERR_INVALID_ARG = 0x102
ERR_NOT_FOUND = 0x105
ERR_OTA_VALIDATE_FAILED = 0x1503


# ------------------------------------------------------------------ table and flash
def rows(board):
    return TABLES[board.partition_table]


def find(board, type=None, subtype=None, label=None):
    for r in rows(board):
        if (type is None or r[1] == type) and (subtype is None or r[2] == subtype) \
                and (label is None or r[0] == label):
            return r
    return None


def first_app(board):
    """The slot esptool flashed the firmware to: factory, else ota_0."""
    return find(board, APP, FACTORY) or find(board, APP, OTA_0)


def flash(board, row):
    """The NOR flash behind a partition; it outlives every reset and power cut.
    The first app slot starts with the firmware image flashed by esptool."""
    label = row[0]
    f = board.partitions.get(label)
    if f is None:
        f = board.partitions[label] = NorFlash(row[4] // SECTOR)
        if row is first_app(board):
            f.program(0, espimage.build())
    return f


def read(board, row, pos, n):
    buf = bytearray(n)
    if row[0] in board.partitions:
        board.partitions[row[0]].read(pos, buf)
    else:
        f = flash(board, row) if row is first_app(board) else None
        if f is None:
            return b"\xff" * n  # never written: erased
        f.read(pos, buf)
    return bytes(buf)


def _pristine(board, row):
    return row[0] not in board.partitions and row is first_app(board)


def image_error(board, row):
    """None when the partition holds a valid app image, else the bootloader's reason."""
    if _pristine(board, row):
        return None  # untouched since esptool flashed it: no need to build it to know
    return espimage.check(lambda pos, n: read(board, row, pos, n), row[4], row[3])


# ------------------------------------------------------------------ otadata
def crc(seq):
    # esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4), as otatool.py computes it
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


def read_otadata(board):
    """[[seq, state, crc], [seq, state, crc]], or None without an otadata partition."""
    row = find(board, DATA, OTA_DATA)
    if row is None:
        return None
    out = []
    for i in range(2):
        seq, _, state, c = struct.unpack(_ENTRY, read(board, row, i * SECTOR, _ENTRY_SIZE))
        out.append([seq, state, c])
    return out


def write_entry(board, i, e):
    """Erase otadata sector i and write one entry, as rewrite_ota_seq() does."""
    f = flash(board, find(board, DATA, OTA_DATA))
    f.erase(i)
    f.program(i * SECTOR, struct.pack(_ENTRY, e[0], b"\xff" * 20, e[1], e[2]))


def _invalid(e):
    return e[0] == 0xFFFFFFFF or e[1] == INVALID or e[1] == ABORTED


def _valid(e):
    return not _invalid(e) and e[2] == crc(e[0])


def active(entries):
    """bootloader_common_get_active_otadata: the valid entry with the higher seq, else -1."""
    v0, v1 = _valid(entries[0]), _valid(entries[1])
    if v0 and v1:
        return 0 if entries[0][0] >= entries[1][0] else 1
    return 0 if v0 else (1 if v1 else -1)


def ota_slots(board):
    """OTA app rows in slot order (ota_0, ota_1, ...)."""
    out = []
    while True:
        r = find(board, APP, OTA_0 + len(out))
        if r is None:
            return out
        out.append(r)


# ------------------------------------------------------------------ esp_ota_ops
def boot_partition(board):
    """esp_ota_get_boot_partition(): the row, or None (no otadata: not an OTA build)."""
    e = read_otadata(board)
    if e is None:
        return None
    slots = ota_slots(board)
    a = active(e)
    if (_invalid(e[0]) and _invalid(e[1])) or not slots or a == -1:
        return first_app(board)
    return slots[(e[a][0] - 1) % len(slots)]


def next_update(board, row):
    """esp_ota_get_next_update_partition(): the OTA slot after row, else the first."""
    slots = ota_slots(board)
    for i in range(len(slots)):
        if slots[i] is row and i + 1 < len(slots):
            return slots[i + 1]
    return slots[0] if slots else None


def set_boot(board, row):
    """esp_ota_set_boot_partition()."""
    if image_error(board, row) is not None:
        return ERR_OTA_VALIDATE_FAILED
    if row[1] != APP:
        return ERR_INVALID_ARG
    if row[2] == FACTORY:
        od = find(board, DATA, OTA_DATA)
        if od is None:
            return ERR_NOT_FOUND
        f = flash(board, od)
        for s in range(od[4] // SECTOR):
            f.erase(s)
        return 0
    e = read_otadata(board)
    if e is None:
        return ERR_NOT_FOUND
    n = len(ota_slots(board))
    slot = row[2] - OTA_0
    a = active(e)
    if a == -1:
        i, seq = 0, slot + 1
    elif (e[a][0] - 1) % n == slot:
        i, seq = a, e[a][0]  # already the boot slot: only its state is renewed
    else:
        i, base = 1 - a, (slot + 1) % n
        seq = base
        while e[a][0] > seq:
            seq += n
    write_entry(board, i, [seq, NEW, crc(seq)])  # NEW: the bootloader will watch its first boot
    return 0


def mark_valid(board):
    """esp_ota_mark_app_valid_cancel_rollback()."""
    e = read_otadata(board)
    if e is None:
        return ERR_NOT_FOUND
    a = active(e)
    if a == -1 or not ota_slots(board):
        return ESP_FAIL  # "Running firmware is factory"
    if e[a][1] != VALID:
        write_entry(board, a, [e[a][0], VALID, crc(e[a][0])])
    return 0


# ------------------------------------------------------------------ the bootloader
def boot(board, deep_sleep_wake):
    """The second-stage bootloader at one boot: sets board.running_app (a label);
    False when no slot holds a bootable app (the chip goes no further)."""
    if deep_sleep_wake and board.running_app is not None:
        # SKIP_VALIDATE_IN_DEEP_SLEEP: the app that ran before the sleep, unchecked
        r = find(board, label=board.running_app)
        if r is not None and (_pristine(board, r) or read(board, r, 0, 1) == bytes([espimage.MAGIC])):
            return True
    slots = ota_slots(board)
    e = read_otadata(board)
    index = -1  # FACTORY_INDEX
    initial = False
    if e is not None:
        for i in range(2):  # a new app that did not confirm itself: given up
            if e[i][1] == PENDING_VERIFY:
                e[i][1] = ABORTED
                write_entry(board, i, e[i])
        if (_invalid(e[0]) and _invalid(e[1])) or not slots:
            if find(board, APP, FACTORY) is None:
                index = 0
                initial = (e[0][0] == 0xFFFFFFFF or e[0][2] != crc(e[0][0])) and \
                    (e[1][0] == 0xFFFFFFFF or e[1][2] != crc(e[1][0]))
        else:
            a = active(e)
            if a != -1:
                index = (e[a][0] - 1) % len(slots)
                if e[a][1] == NEW:
                    e[a][1] = PENDING_VERIFY
                    write_entry(board, a, e[a])
    # from the chosen slot down to factory, then the later slots
    order = list(range(index, -2, -1)) + list(range(index + 1, len(slots)))
    for i in order:
        r = find(board, APP, FACTORY) if i == -1 else (slots[i] if i < len(slots) else None)
        if r is None or image_error(board, r) is not None:
            continue
        if i >= 0 and initial:  # esptool's otadata is blank: record the slot booted
            write_entry(board, 0, [i + 1, VALID, crc(i + 1)])
        board.running_app = r[0]
        return True
    board.running_app = None
    return False
