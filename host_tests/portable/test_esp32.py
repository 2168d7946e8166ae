# The fake `esp32`: NVS keeps committed values through power loss; flash is NOR.
import errno
import time

import esp32
import espimage
import machine
import simota
import simstate
from ptest import raises, sleep_and_wake

VALIDATE_FAILED = (-5379, "ESP_ERR_OTA_VALIDATE_FAILED")
NOT_FOUND = (-261, "ESP_ERR_NOT_FOUND")


def test_nvs_committed_values_survive_power_loss():
    b = simstate.board
    nvs = esp32.NVS("petrel")
    nvs.set_i32("seq", 41)
    nvs.set_blob("key", b"\x01\x02\x03")
    nvs.commit()
    nvs.set_i32("seq", 42)  # not committed
    b.schedule(b.world_us + 1000, "power_cut")
    sleep_and_wake(machine.deepsleep, 10000)
    assert machine.reset_cause() == machine.PWRON_RESET
    nvs = esp32.NVS("petrel")
    assert nvs.get_i32("seq") == 41
    buf = bytearray(8)
    assert nvs.get_blob("key", buf) == 3 and bytes(buf[:3]) == b"\x01\x02\x03"


def test_nvs_missing_key_and_limits():
    nvs = esp32.NVS("petrel")
    e = raises(OSError, nvs.get_i32, "nope")
    assert e.args == (-0x1102, "ESP_ERR_NVS_NOT_FOUND")  # as the port's check_esp_err raises it
    raises(OverflowError, nvs.set_i32, "big", 1 << 31)
    raises(OSError, nvs.set_i32, "a-key-longer-than-15", 1)
    nvs.set_blob("b", b"12345")
    assert raises(OSError, nvs.get_blob, "b", bytearray(2)).args[0] == -0x110C
    nvs.erase_key("b")
    nvs.commit()
    raises(OSError, nvs.get_blob, "b", bytearray(8))


def test_partition_is_nor_flash():
    p = esp32.Partition("vfs")
    assert p.ioctl(5, 0) == 4096
    assert p.ioctl(4, 0) == 512
    buf = bytearray(4)
    p.readblocks(3, buf)
    assert buf == bytearray(b"\xff" * 4)  # erased
    p.writeblocks(3, b"\x0f\xf0", 0)  # program without erase
    p.writeblocks(3, b"\xf0\xff", 0)  # programming can only clear bits
    p.readblocks(3, buf)
    assert bytes(buf) == b"\x00\xf0\xff\xff"
    p.writeblocks(3, b"\xaa" * 4096)  # whole block: erased first
    p.readblocks(3, buf)
    assert bytes(buf) == b"\xaa" * 4
    assert p.info()[4] == "vfs"
    assert raises(OSError, esp32.Partition, "nope").args[0] == errno.ENOENT  # as the port
    raises(ValueError, esp32.Partition, 2)


def test_ext1_any_high_wakes():
    b = simstate.board
    esp32.wake_on_ext1([machine.Pin(32), machine.Pin(33)], esp32.WAKEUP_ANY_HIGH)
    b.schedule(b.world_us + 2000000, "pin", 33, 1)
    sleep_and_wake(machine.deepsleep, 60000)
    assert machine.wake_reason() == machine.EXT1_WAKE
    raises(ValueError, esp32.wake_on_ext0, machine.Pin(5), 0)  # not an RTC GPIO


def test_wake_sources_must_be_set_again_after_each_wake():
    b = simstate.board
    esp32.wake_on_ext0(machine.Pin(4), esp32.WAKEUP_ALL_LOW)
    b.drive(4, 1)
    b.schedule(b.world_us + 1000000, "pin", 4, 0)
    sleep_and_wake(machine.deepsleep, 60000)
    assert machine.wake_reason() == machine.EXT0_WAKE
    b.schedule(b.world_us + 1000000, "pin", 4, 1)
    b.schedule(b.world_us + 2000000, "pin", 4, 0)  # pressed again, but nobody re-armed ext0
    sleep_and_wake(machine.deepsleep, 60000)
    assert machine.wake_reason() == machine.TIMER_WAKE


def test_nvs_set_blob_takes_any_buffer():
    import array

    nvs = esp32.NVS("petrel")
    buf = bytearray(16)
    for value, want in (("héllo", "héllo".encode()), (bytearray(b"\x01\x02"), b"\x01\x02"),
                        (memoryview(b"abcdef")[1:3], b"bc"), (array.array("h", [1, -1]), b"\x01\x00\xff\xff")):
        nvs.set_blob("k", value)
        n = nvs.get_blob("k", buf)
        assert bytes(buf[:n]) == want, (value, bytes(buf[:n]))
    raises(TypeError, nvs.set_blob, "k", 5)  # not a buffer
    raises(TypeError, nvs.set_blob, "k", [1, 2])


def test_idf_heap_info_by_capability():
    assert (esp32.HEAP_DATA, esp32.HEAP_EXEC) == (4, 1)  # MALLOC_CAP_8BIT, MALLOC_CAP_EXEC
    data = esp32.idf_heap_info(esp32.HEAP_DATA)
    code = esp32.idf_heap_info(esp32.HEAP_EXEC)
    assert len(data) >= 3 and len(code) >= 3
    for total, free, largest, least in data + code:
        assert total > 0 and 0 <= largest <= free <= total and least <= total
    assert esp32.idf_heap_info(-1) == []  # no region has every capability
    assert len(esp32.idf_heap_info(0)) == len(esp32.HEAPS)
    simstate.board.idf_heaps = [(0x180E, 50000, 1000, 800, 600)]  # a model draws it down
    assert esp32.idf_heap_info(esp32.HEAP_DATA) == [(50000, 1000, 800, 600)]
    assert esp32.idf_heap_info(esp32.HEAP_EXEC) == []


def test_factory_build_has_no_ota_data():
    # ESP32_GENERIC: one factory app, no otadata (the port raises what ESP-IDF returns)
    P = esp32.Partition
    assert P(P.RUNNING).info()[:5] == (0, 0, 0x10000, 0x1F0000, "factory")
    assert raises(OSError, P, P.BOOT).args[0] == errno.ENOENT  # esp_ota_get_boot_partition: NULL
    assert raises(OSError, P(P.RUNNING).get_next_update).args[0] == errno.ENOENT
    assert raises(OSError, P.mark_app_valid_cancel_rollback).args == NOT_FOUND
    assert raises(OSError, P(P.RUNNING).set_boot).args == NOT_FOUND  # valid image, but no otadata
    assert raises(OSError, P("vfs").set_boot).args == VALIDATE_FAILED  # a data partition


# ---------------------------------------------------------------- OTA (ESP32_GENERIC-OTA)
def ota_board():
    b = simstate.reset_world(power=False)
    b.partition_table = "ota"
    b.power_on()
    return b


def write_image(p, image):
    p.writeblocks(0, image + b"\xff" * (-len(image) % 4096))


def state(slot):
    for seq, st, crc in simota.read_otadata(simstate.board):
        if crc == simota.crc(seq) and (seq - 1) % 2 == slot:
            return st
    return None


def running():
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


def test_ota_build_boots_ota_0_and_records_it_valid():
    ota_board()
    P = esp32.Partition
    assert running() == "ota_0"
    assert P(P.BOOT).info()[4] == "ota_0"
    assert simota.crc(1) == 0x4743989A  # as otatool.py computes it
    assert state(0) == simota.VALID  # the bootloader wrote otadata for esptool's blank one
    P.mark_app_valid_cancel_rollback()  # fine on every boot
    nxt = P(P.RUNNING).get_next_update()
    assert nxt.info()[:5] == (0, 0x11, 0x190000, 0x180000, "ota_1")
    assert nxt.get_next_update().info()[4] == "ota_0"  # wraps to the first slot
    assert P("otadata").info()[:2] == (1, 0)


def test_set_boot_validates_the_image():
    ota_board()
    P = esp32.Partition
    slot = P("ota_1")
    assert raises(OSError, slot.set_boot).args == VALIDATE_FAILED  # erased
    good = espimage.build(version="2.0.0")
    bad = bytearray(good)
    bad[-33] ^= 1  # the checksum byte
    twice = bytearray(good)
    twice[40] ^= 1
    twice[41] ^= 1  # checksum still right: only the SHA-256 tells
    for image in (bytes(bad), bytes(twice), espimage.build(chip_id=9), b"\xe9" + good[1:100]):
        write_image(slot, image)
        assert raises(OSError, slot.set_boot).args == VALIDATE_FAILED
    assert raises(OSError, P("nvs").set_boot).args == VALIDATE_FAILED
    write_image(slot, good)
    slot.set_boot()
    assert P(P.BOOT).info()[4] == "ota_1"
    assert running() == "ota_0"
    assert state(1) == simota.NEW


def staged_update():
    """An OTA board with a valid image in ota_1, set to boot: -> (ota_1 partition)."""
    ota_board()
    slot = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    write_image(slot, espimage.build(version="2.0.0"))
    slot.set_boot()
    return slot


def test_reset_boots_the_new_slot_pending_and_confirming_keeps_it():
    staged_update()
    sleep_and_wake(machine.reset)
    assert running() == "ota_1"
    assert state(1) == simota.PENDING_VERIFY
    esp32.Partition.mark_app_valid_cancel_rollback()
    assert state(1) == simota.VALID
    sleep_and_wake(machine.reset)
    assert running() == "ota_1"
    simstate.board.schedule(simstate.board.world_us + 1000, "power_cut")
    sleep_and_wake(machine.deepsleep, 5000)
    assert running() == "ota_1"


def test_an_unconfirmed_update_rolls_back_at_the_next_reset():
    staged_update()
    sleep_and_wake(machine.reset)
    assert running() == "ota_1"
    machine.WDT(timeout=1000)
    sleep_and_wake(time.sleep, 2)  # hangs: the watchdog resets it, unconfirmed
    assert machine.reset_cause() == machine.WDT_RESET
    assert running() == "ota_0"
    assert state(1) == simota.ABORTED
    P = esp32.Partition
    assert P(P.BOOT).info()[4] == "ota_0"
    sleep_and_wake(machine.reset)
    assert running() == "ota_0"


def test_deep_sleep_wakes_skip_the_bootloader():
    staged_update()
    sleep_and_wake(machine.deepsleep, 1000)  # set_boot then deep sleep: the old app again
    assert running() == "ota_0"
    sleep_and_wake(machine.reset)
    assert running() == "ota_1"
    sleep_and_wake(machine.deepsleep, 1000)  # wakes keep the pending app, still unconfirmed
    assert running() == "ota_1" and state(1) == simota.PENDING_VERIFY
    simstate.board.schedule(simstate.board.world_us + 1000, "power_cut")
    sleep_and_wake(machine.deepsleep, 5000)  # a power cut is a full boot: rolled back
    assert running() == "ota_0"


def test_no_valid_app_in_any_slot_halts_the_board():
    ota_board()
    esp32.Partition("ota_0").ioctl(6, 0)  # the image's first sector erased
    h = sleep_and_wake(machine.reset)
    assert h.cause == machine.SOFT_RESET
    raises(simstate.Halt, machine.reset_cause)  # the bootloader finds nothing to start
