# The fake `esp32`: NVS keeps committed values through power loss; flash is NOR.
import esp32
import machine
import simstate
from ptest import raises, sleep_and_wake


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
    raises(ValueError, esp32.Partition, "nope")


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
