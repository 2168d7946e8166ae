# DS18B20 on 1-Wire: the bus fakes (_onewire, onewire), the slot-level model and
# lib/ds18b20, checked against the datasheet and Maxim app notes 27 and 187.
import errno

import _onewire
import onewire
import simstate
from ds18b20 import DS18B20, mdegc
from machine import Pin
from ptest import raises
from sensor import CRCError, ImpossibleValue
from simdev.ds18b20 import DS18B20 as Sensor, IDLE, CONVERSION_US

PIN = 4


def wire(*devices):
    """These devices on PIN, and a driver on it (resets any wiring left by another test)."""
    simstate.board.onewire = {PIN: list(devices)}
    return DS18B20(onewire.OneWire(Pin(PIN)))


def elapsed_us(fn, *args):
    t0 = simstate.board.world_us
    fn(*args)
    return simstate.board.world_us - t0


# ------------------------------------------------------------ datasheet vectors
def test_crc8_maxim_app_note_27_example():
    rom = bytes([0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00])
    assert _onewire.crc8(rom) == 0xA2
    assert _onewire.crc8(rom + b"\xa2") == 0  # over the 8 bytes, CRC included
    assert onewire.OneWire(Pin(PIN)).crc8(rom) == 0xA2
    assert _onewire.crc8(b"") == 0
    # the power-on scratchpad of a genuine part, as read on a bench: 50 05 4B 46 7F FF 0C 10 1C
    assert _onewire.crc8(bytes([0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])) == 0x1C


# Datasheet table "Temperature/Data Relationship": (degC x 10000, raw, mdegC)
TABLE = (
    (1250000, 0x07D0, 125000),
    (850000, 0x0550, 85000),
    (250625, 0x0191, 25063),  # 25062.5 rounded half away from zero
    (101250, 0x00A2, 10125),
    (5000, 0x0008, 500),
    (0, 0x0000, 0),
    (-5000, 0xFFF8, -500),
    (-101250, 0xFF5E, -10125),
    (-250625, 0xFE6F, -25063),
    (-550000, 0xFC90, -55000),
)


def test_raw_to_millidegrees_every_datasheet_row():
    for _, raw, m in TABLE:
        got = mdegc(raw)
        assert got == m, (hex(raw), got, m)
        assert isinstance(got, int)


def test_model_and_driver_agree_with_the_datasheet_table():
    s = Sensor(0x0A)
    ds = wire(s)
    for t, raw, m in TABLE:
        s.temperature_c = t / 10000
        ds.convert()
        sp = s.scratchpad()
        assert sp[0] | (sp[1] << 8) == raw, (t, hex(raw))
        assert ds.read(trust_85=(raw == 0x0550)) == m


# ------------------------------------------------------------ the bus
def test_bus_timing_and_presence():
    b = simstate.board
    ow = onewire.OneWire(Pin(PIN))
    b.onewire = {PIN: []}
    assert ow.reset() is False
    raises(onewire.OneWireError, ow.reset, True)
    b.onewire[PIN].append(Sensor(1))
    assert elapsed_us(ow.reset) == 960
    assert ow.reset(True) is True
    assert elapsed_us(ow.readbit) == 65
    assert elapsed_us(ow.writebyte, 0xCC) == 8 * 65
    assert b.level(PIN) == 1  # released between slots: the pull-up holds it high


def test_master_needs_an_open_drain_pin():
    simstate.board.onewire = {PIN: [Sensor(1)]}
    p = Pin(PIN, Pin.IN)
    assert _onewire.reset(p) is False  # a plain input never pulls the line low
    onewire.OneWire(p)  # sets OPEN_DRAIN + PULL_UP
    assert _onewire.reset(p) is True


def test_read_rom_and_wired_and():
    a, c = Sensor(0x0F0F), Sensor(0x3355)
    wire(a)
    ow = onewire.OneWire(Pin(PIN))
    ow.reset(True)
    ow.writebyte(0x33)  # READ ROM: only meaningful with one device
    buf = bytearray(8)
    ow.readinto(buf)
    assert bytes(buf) == a.rom
    simstate.board.onewire[PIN].append(c)
    ow.reset(True)
    ow.writebyte(0x33)
    ow.readinto(buf)
    # both answer at once: every bit where either sends 0 reads 0
    assert bytes(buf) == bytes(a.rom[i] & c.rom[i] for i in range(8))


def test_rom_layout_family_serial_crc():
    s = Sensor(0x0000123456789ABC)
    assert s.rom[0] == 0x28
    assert s.rom[1:7] == bytes([0xBC, 0x9A, 0x78, 0x56, 0x34, 0x12])  # serial, LSB first
    assert _onewire.crc8(s.rom[:7]) == s.rom[7]


# Serials chosen so that the search forks at several bits: all are odd (bit 0
# alike), then B differs at serial bit 1, C at bit 16, D at bit 47.
A, B, C, D = 0x000000000001, 0x000000000003, 0x000000010001, 0x800000000001
OTHER_FAMILY = bytes([0x10, 0x01, 0, 0, 0, 0, 0])  # a DS18S20: 10h = 0001 0000b
OTHER = OTHER_FAMILY + bytes([_onewire.crc8(OTHER_FAMILY)])


def test_search_finds_every_device_in_a_fixed_order():
    sa, sb, sc, sd, other = Sensor(A), Sensor(B), Sensor(C), Sensor(D), Sensor(rom=OTHER)
    ds = wire(sc, other, sb, sd, sa)
    ow = ds.ow
    found = ow.scan()
    # As the ESP32's onewire module searches: least significant bit first, the 1
    # branch first: family 28h has 1 at bit 3 where 10h has 0; then serial bit 1
    # puts B first, bit 16 C next, bit 47 D before A.
    assert [bytes(r) for r in found] == [sb.rom, sc.rom, sd.rom, sa.rom, other.rom]
    assert isinstance(found[0], bytearray) and len(found[0]) == 8
    roms = ds.scan()
    assert [bytes(r) for r in roms] == [sb.rom, sc.rom, sd.rom, sa.rom]
    # the wiring order does not matter
    simstate.board.onewire[PIN] = [sa, sb, sc, sd, other]
    assert [bytes(r) for r in ds.scan()] == [sb.rom, sc.rom, sd.rom, sa.rom]
    # a search pass leaves the found device selected, the others idle
    assert other.state != IDLE and sa.state == IDLE


def test_scan_of_an_empty_bus_and_of_a_lone_device():
    ds = wire()
    assert ds.ow.scan() == [] and ds.scan() == []
    s = Sensor(0xBEEF)
    simstate.board.onewire[PIN].append(s)
    assert [bytes(r) for r in ds.scan()] == [s.rom]


def test_scan_drops_a_rom_with_a_bad_crc():
    good = Sensor(A)
    bad_rom = bytearray(Sensor(B).rom)
    bad_rom[7] ^= 0x40
    ds = wire(good, Sensor(rom=bad_rom))
    assert len(ds.ow.scan()) == 2
    assert [bytes(r) for r in ds.scan()] == [good.rom]


def test_each_sensor_read_by_match_rom():
    temps = {A: 21.3, B: -10.125, C: 0.0, D: 99.9}
    sensors = [Sensor(serial) for serial in (A, B, C, D)]
    for s in sensors:
        s.temperature_c = temps[s.rom_bits >> 8 & 0xFFFFFFFFFFFF]
    ds = wire(Sensor(rom=OTHER), *sensors)
    roms = ds.scan()
    ds.convert()  # one SKIP ROM conversion for all
    assert [s.conversions for s in sensors] == [1, 1, 1, 1]
    got = {}
    for rom in roms:
        got[bytes(rom)] = ds.read(rom)
    assert got[sensors[0].rom] == 21313  # 21.3 -> 341/16 = 21.3125
    assert got[sensors[1].rom] == -10125
    assert got[sensors[2].rom] == 0
    assert got[sensors[3].rom] == 99875  # 99.9 -> 1598/16
    assert [s.conversions for s in sensors] == [1, 1, 1, 1]  # no hidden re-conversions
    ds.convert(roms[0])  # MATCH ROM: only that one converts (B: the search takes 1 first)
    assert [s.conversions for s in sensors] == [1, 2, 1, 1]


def test_bus_is_left_idle_after_a_read():
    sensors = [Sensor(A), Sensor(B)]
    ds = wire(*sensors)
    ds.convert()
    for rom in ds.scan():
        ds.read(rom)
        assert [s.state for s in sensors] == [IDLE, IDLE]
        assert simstate.board.level(PIN) == 1


# ------------------------------------------------------------ conversion time and resolution
def test_resolution_reaches_the_sensor_and_sets_the_wait():
    s = Sensor(A)
    s.eeprom[0], s.eeprom[1] = 0x32, 0xF6  # TH +50, TL -10 degC
    s.power_on()
    s.temperature_c = 21.3
    ds = wire(s)
    expect = {9: 21500, 10: 21250, 11: 21250, 12: 21313}
    for bits in (9, 10, 11, 12):
        ds.set_resolution(bits)
        sp = s.scratchpad()
        assert sp[4] == ((bits - 9) << 5) | 0x1F
        assert (sp[2], sp[3]) == (0x32, 0xF6)  # TH/TL kept
        dt = elapsed_us(ds.convert)
        tconv = CONVERSION_US[bits - 9]
        assert tconv <= dt < tconv + 3000, (bits, dt)
        assert ds.read() == expect[bits]
    raises(ValueError, ds.set_resolution, 8)
    raises(ValueError, ds.set_resolution, 13)


def test_default_wait_is_the_12_bit_one():
    ds = wire(Sensor(A))
    dt = elapsed_us(ds.convert)
    assert 750000 <= dt < 753000


def test_undefined_low_bits_are_masked_at_lower_resolution():
    s = Sensor(A)
    ds = wire(s)
    ds.set_resolution(9)
    s.fault, s.fault_raw = "stuck", 0x0197  # 25.4375 with bits 2..0 set
    ds.convert()
    assert ds.read() == 25000


def test_sensor_at_a_higher_resolution_than_waited_for():
    s = Sensor(A)
    ds = wire(s)
    ds.set_resolution(9)
    s.temperature_c = 30.0
    ds.convert()
    s.scratch[4] = 0x7F  # set to 12 bits behind the driver's back
    e = raises(ImpossibleValue, ds.read)
    assert "12 bits" in str(e)


# ------------------------------------------------------------ the 85 degC power-on value
def test_power_on_85_without_a_conversion_is_suspect():
    s = Sensor(A)
    s.temperature_c = 19.0
    ds = wire(s)
    e = raises(ImpossibleValue, ds.read)
    assert "85" in str(e) and "no conversion" in str(e)
    assert s.conversions == 1  # the driver converted once more to find out
    assert s.scratchpad()[3] == s.eeprom[1]  # and put TL back
    assert ds.read() == 19000  # that conversion's result, without another one
    assert s.conversions == 1


def test_85_read_before_the_conversion_ends_is_suspect():
    s = Sensor(A)
    s.temperature_c = 40.0
    ds = wire(s)
    ds.ow.reset(True)
    ds.ow.writebyte(0xCC)
    ds.ow.writebyte(0x44)  # CONVERT T without the wait
    assert ds.ow.readbit() == 0  # the sensor says it is busy
    raises(ImpossibleValue, ds.read)
    assert ds.read() == 40000


def test_real_85_is_confirmed_by_a_second_conversion():
    s = Sensor(A)
    s.temperature_c = 85.0
    ds = wire(s)
    ds.convert()
    dt = elapsed_us(ds.read)
    assert s.conversions == 2
    assert dt >= 750000  # the confirming conversion
    assert ds.read() == 85000 and s.conversions == 3
    assert s.scratchpad()[2:4] == b"\x4b\x46"  # TH/TL as they were


def test_trusted_85_is_taken_as_is():
    s = Sensor(A)
    ds = wire(s)
    dt = elapsed_us(ds.read, None, True)
    assert dt < 20000 and s.conversions == 0


def test_brownout_during_conversion_is_caught():
    s = Sensor(A)
    s.temperature_c = 22.0
    ds = wire(s)
    ds.set_resolution(10)
    s.fault = "brownout"
    ds.convert()
    assert s.scratchpad()[4] == 0x7F  # it came back at its EEPROM resolution
    e = raises(ImpossibleValue, ds.read)
    assert "reset" in str(e)
    assert s.conversions == 2
    s.fault = None  # supply fixed
    ds.convert()
    assert ds.read() == 22000


# ------------------------------------------------------------ faults
def test_missing_sensor_is_enodev():
    ds = wire()
    assert raises(OSError, ds.convert).args[0] == errno.ENODEV
    assert raises(OSError, ds.read).args[0] == errno.ENODEV
    s = Sensor(A)
    s.fault = "absent"
    simstate.board.onewire[PIN].append(s)
    assert raises(OSError, ds.read, s.rom).args[0] == errno.ENODEV


def test_sensor_gone_from_a_shared_bus_reads_all_ff_enodev():
    # the other sensor still answers the reset; nobody answers MATCH ROM
    gone, other = Sensor(A), Sensor(B)
    ds = wire(gone, other)
    ds.convert()
    gone.fault = "absent"
    assert raises(OSError, ds.read, gone.rom).args[0] == errno.ENODEV
    assert ds.read(other.rom) == 25000


def test_sensor_gone_mid_read_is_enodev():
    s = Sensor(A)
    ds = wire(s)
    ds.convert()
    ds.ow.select_rom(s.rom)
    ds.ow.writebyte(0xBE)
    s.fault = "absent"  # unplugged between the command and the data
    buf = bytearray(9)
    ds.ow.readinto(buf)
    assert buf == b"\xff" * 9 and _onewire.crc8(buf) != 0
    assert raises(OSError, ds.read, s.rom).args[0] == errno.ENODEV


def test_line_held_low_is_eio():
    s = Sensor(A)
    ds = wire(s)
    s.fault = "short"
    assert raises(OSError, ds.read).args[0] == errno.EIO
    assert ds.scan() == []  # whatever the search makes of a dead line, no DS18B20 passes its CRC


def test_corrupted_scratchpad_is_crc_error():
    s = Sensor(A)
    ds = wire(s)
    ds.convert()
    s.fault = "crc"
    raises(CRCError, ds.read, s.rom)
    s.fault = None
    assert ds.read(s.rom) == 25000


def test_stuck_and_spike_values_pass_through():
    # in range and with a good CRC: only the filters downstream can tell
    s = Sensor(A)
    ds = wire(s)
    s.fault, s.fault_raw = "stuck", 0x0191
    for t in (10.0, 30.0):
        s.temperature_c = t
        ds.convert()
        assert ds.read() == 25063
    s.fault, s.fault_raw = "spike", 0x0640  # +100 degC, once
    ds.convert()
    assert ds.read() == 100000
    ds.convert()
    assert ds.read() == 30000


def test_out_of_range_values_are_impossible():
    s = Sensor(A)
    ds = wire(s)
    for raw in (0x07E0, 0x0FF0, 0xFC80, 0x8000):  # +126, +255, -56, -2048 degC
        s.fault, s.fault_raw = "spike", raw
        ds.convert()
        e = raises(ImpossibleValue, ds.read)
        assert "-55..+125" in str(e)
    for raw, m in ((0x07D0, 125000), (0xFC90, -55000)):  # the limits themselves
        s.fault, s.fault_raw = "spike", raw
        ds.convert()
        assert ds.read() == m
