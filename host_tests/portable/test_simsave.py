# boards/sim/simsave: the board's state as JSON and back (what carries the
# clock, RTC memory and the ledger from one VM process to the next wake's).
import json

import simstate
import time

from ptest import raises, station


def test_snapshot_and_restore_keep_the_ledger_and_the_radio_figures():
    b = simstate.board
    b.tls_cert_us = 123000
    b.net_timing = {"dhcp": 100}
    station()
    time.sleep_ms(5)
    snap = json.loads(json.dumps(b.snapshot()))
    other = simstate.Board()
    other.restore(snap)
    assert other.phases() == b.phases() and other.world_us == b.world_us
    assert other.tls_cert_us == 123000 and other.boot_mark == b.boot_mark
    assert b.phases()["radio"] == (100 + 60 + 600 + 80 + 100 + 5) * 1000  # profile's DHCP time


def test_snapshot_and_restore_keep_the_ota_flash_and_the_running_slot():
    # a firmware update on the VM crosses its boots this way (host/test_fwupdate_node.py)
    import esp32
    import simota

    b = simstate.reset_world(power=False)
    b.partition_table = "ota"
    b.power_on()
    nxt = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    nxt.ioctl(6, 1)
    nxt.writeblocks(1, b"firmware" * 64, 100)
    snap = json.loads(json.dumps(b.snapshot()))
    other = simstate.Board()
    other.restore(snap)
    assert other.partition_table == "ota" and other.running_app == b.running_app == "ota_0"
    buf = bytearray(512)
    other.partitions["ota_1"].read(4096 + 100, buf)
    assert bytes(buf) == b"firmware" * 64
    assert other.partitions["ota_1"].erases == 1 and other.partitions["ota_1"].bytes_programmed == 512
    assert simota.read_otadata(other) == simota.read_otadata(b)
    # a board that never wrote a partition carries nothing more than before
    plain = simstate.reset_world()
    assert plain.snapshot()["partitions"] == {}


def test_a_restored_board_hands_back_only_the_sectors_it_changed_and_the_host_merges_them():
    # a VM boot's halt: a few chunks written, not the whole firmware twice over
    import esp32

    host = simstate.reset_world(power=False)
    host.partition_table = "ota"
    host.power_on()
    part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    for block in range(4):
        part.ioctl(6, block)
        part.writeblocks(block, bytes([block + 1]) * 4096)
    vm = simstate.Board()
    vm.flash_delta = True  # what a MicroPython process does
    vm.restore(json.loads(json.dumps(host.snapshot())))
    chip = vm.partitions["ota_1"]
    chip.erase(2)
    chip.program(2 * 4096, b"new" * 10)
    chip.erase(3)
    back = json.loads(json.dumps(vm.snapshot()))
    sent = back["partitions"]["ota_1"]
    assert sent["delta"] and sorted(sent["sectors"]) == ["2"] and sent["gone"] == [3], sent
    assert back["partitions"]["otadata"]["sectors"] == {}  # unchanged: nothing sent
    host.restore(back)
    merged = host.partitions["ota_1"]
    buf = bytearray(30)
    merged.read(2 * 4096, buf)
    assert bytes(buf) == b"new" * 10 and 3 not in merged.sectors
    merged.read(0, buf)
    assert bytes(buf) == b"\x01" * 30 and merged.erases == chip.erases
    # a change without the chip it changes is an error, not a blank partition
    e = raises(ValueError, simstate.Board().restore, back)
    assert "changed sectors without the chip" in str(e)
