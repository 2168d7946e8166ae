# The fake `machine`: faithful to the ESP32 where firmware could tell the difference.
import errno
import time

import machine
import simdev
import simstate
from ptest import raises, sleep_and_wake


def test_first_boot_is_power_on():
    assert machine.reset_cause() == machine.PWRON_RESET
    assert machine.wake_reason() == 0


def test_deepsleep_never_returns():
    ran_after = []

    def cycle():
        machine.deepsleep(1000)
        ran_after.append(1)

    h = raises(simstate.Halt, cycle)
    assert ran_after == []
    assert h.cause == machine.DEEPSLEEP_RESET and h.sleep_ms == 1000


def test_nothing_runs_after_a_swallowed_deepsleep():
    # firmware that catches everything still cannot keep running
    try:
        machine.deepsleep(1000)
    except BaseException:
        pass
    raises(simstate.Halt, time.ticks_ms)
    raises(simstate.Halt, machine.Pin, 2, machine.Pin.OUT)


def test_wake_from_deepsleep_keeps_rtc_memory_and_says_why():
    b = simstate.board
    machine.RTC().memory(b"boot-count=7")
    t0 = b.world_us
    sleep_and_wake(machine.deepsleep, 60000)
    assert machine.reset_cause() == machine.DEEPSLEEP_RESET
    assert machine.wake_reason() == machine.TIMER_WAKE
    assert machine.RTC().memory() == b"boot-count=7"
    assert b.world_us - t0 >= 60000000
    assert time.ticks_ms() < 5  # ticks restart at each boot


def test_power_loss_clears_rtc_memory():
    b = simstate.board
    machine.RTC().memory(b"x" * 100)
    b.schedule(b.world_us + 1000000, "power_cut")
    sleep_and_wake(machine.deepsleep, 60000)
    assert machine.reset_cause() == machine.PWRON_RESET
    assert machine.RTC().memory() == b""


def test_power_cut_while_awake_halts_at_that_moment():
    b = simstate.board
    b.schedule(b.world_us + 500000, "power_cut")
    h = raises(simstate.Halt, time.sleep, 2)
    assert h.cause == machine.PWRON_RESET
    assert 500000 <= b.world_us < 501000


def test_rtc_memory_holds_2048_bytes_at_most():
    rtc = machine.RTC()
    rtc.memory(bytes(range(256)) * 8)
    assert len(rtc.memory()) == 2048
    raises(ValueError, rtc.memory, b"\x00" * 2049)
    assert len(rtc.memory()) == 2048  # the rejected write changed nothing


def test_reset_never_returns_and_reports_soft_reset():
    machine.RTC().memory(b"kept")
    sleep_and_wake(machine.reset)
    assert machine.reset_cause() == machine.SOFT_RESET
    assert machine.RTC().memory() == b"kept"  # RTC memory survives a reset


def test_unfed_watchdog_resets_the_board():
    b = simstate.board
    wdt = machine.WDT(timeout=2000)
    time.sleep_ms(1500)
    wdt.feed()
    time.sleep_ms(1500)  # fed in time: still running
    t_fed = b.world_us - 1500000
    h = raises(simstate.Halt, time.sleep_ms, 5000)
    assert h.cause == machine.WDT_RESET
    assert b.world_us == t_fed + 2000000  # bit exactly at the timeout
    b.after_halt(h)
    assert machine.reset_cause() == machine.WDT_RESET


def test_watchdog_is_off_after_deep_sleep():
    machine.WDT(timeout=1000)
    sleep_and_wake(machine.deepsleep, 60000)
    time.sleep(10)  # no WDT armed on this boot
    assert machine.reset_cause() == machine.DEEPSLEEP_RESET


def test_ext0_pin_wakes_before_the_timer():
    import esp32

    b = simstate.board
    esp32.wake_on_ext0(machine.Pin(4, machine.Pin.IN), esp32.WAKEUP_ALL_LOW)
    b.drive(4, 1)
    t0 = b.world_us
    b.schedule(t0 + 5000000, "pin", 4, 0)  # button pressed 5 s into the sleep
    sleep_and_wake(machine.deepsleep, 300000)
    assert machine.wake_reason() == machine.EXT0_WAKE
    assert 5000000 <= b.world_us - t0 < 5100000


def test_deepsleep_without_any_wake_source_sleeps_forever():
    b = simstate.board
    h = raises(simstate.Halt, machine.deepsleep)
    assert b.after_halt(h) is False


def test_held_pin_keeps_level_through_deepsleep():
    b = simstate.board
    p = machine.Pin(25, machine.Pin.OUT, value=1, hold=True)
    p.value(0)  # ignored while held
    assert b.level(25) == 1
    machine.Pin(26, machine.Pin.OUT, value=1)  # not held
    sleep_and_wake(machine.deepsleep, 1000)
    assert b.level(25) == 1
    assert b.level(26) == 0


def test_pins_validate_like_the_esp32():
    raises(ValueError, machine.Pin, 20)
    raises(ValueError, machine.Pin, 40)
    raises(ValueError, machine.Pin, 34, machine.Pin.OUT)  # input only
    assert machine.Pin(34, machine.Pin.IN).value() == 0


def test_pin_irq_fires_on_edges():
    b = simstate.board
    seen = []
    p = machine.Pin(14, machine.Pin.IN, machine.Pin.PULL_UP)
    assert p.value() == 1
    p.irq(lambda pin: seen.append(pin.value()), trigger=machine.Pin.IRQ_FALLING)
    b.schedule(b.world_us + 1000, "pin", 14, 0)
    b.schedule(b.world_us + 2000, "pin", 14, 1)
    time.sleep_ms(5)
    assert seen == [0]


def test_adc_quantises_and_clamps_by_attenuation():
    b = simstate.board
    adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
    b.analog[35] = 1650000
    uv = adc.read_uv()
    assert abs(uv - 1650000) <= 2450000 // 4095 + 1
    assert adc.read() == 1650000 * 4095 // 2450000
    adc.atten(machine.ADC.ATTN_0DB)
    assert adc.read() == 4095  # beyond the 0 dB range
    assert adc.read_u16() == 65535
    adc.width(machine.ADC.WIDTH_9BIT)
    assert adc.read() == 511
    raises(ValueError, machine.ADC, machine.Pin(5))  # not an ADC pin


def test_i2c_missing_device_raises_enodev():
    i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
    e = raises(OSError, i2c.readfrom, 0x76, 2)
    assert e.args[0] == errno.ENODEV
    assert i2c.scan() == []


def test_i2c_register_device_and_faults():
    b = simstate.board
    dev = simdev.RegisterDevice()
    dev.regs[0xD0] = 0x60
    b.i2c[0] = {0x76: dev}
    i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
    assert i2c.scan() == [0x76]
    assert i2c.readfrom_mem(0x76, 0xD0, 1) == b"\x60"
    i2c.writeto_mem(0x76, 0xF4, b"\x25\x10")
    assert dev.regs[0xF4] == 0x25 and dev.regs[0xF5] == 0x10
    buf = bytearray(2)
    i2c.readfrom_mem_into(0x76, 0xF4, buf)
    assert buf == bytearray(b"\x25\x10")

    dev.fault = "nack"
    assert raises(OSError, i2c.readfrom_mem, 0x76, 0xD0, 1).args[0] == errno.ENODEV
    dev.fault = None

    dev.stretch_us = 20000  # within the 50 ms bus timeout: just slow
    t0 = b.world_us
    assert i2c.readfrom_mem(0x76, 0xD0, 1) == b"\x60"
    assert b.world_us - t0 >= 20000
    dev.stretch_us = 80000  # past it
    assert raises(OSError, i2c.readfrom_mem, 0x76, 0xD0, 1).args[0] == errno.ETIMEDOUT
    dev.stretch_us = 0

    dev.corrupt = simdev.flip_bits(0x01)
    assert i2c.readfrom_mem(0x76, 0xD0, 1) == b"\x61"


def test_i2c_transfers_take_bus_time():
    b = simstate.board
    b.i2c[0] = {0x40: simdev.RegisterDevice()}
    i2c = machine.I2C(0, freq=100000)
    t0 = b.world_us
    i2c.readfrom(0x40, 32)
    assert b.world_us - t0 >= 33 * 9 * 10  # 33 bytes * 9 clocks * 10 us


def test_spi_talks_to_the_selected_device():
    b = simstate.board

    class Echo:
        def transfer(self, out):
            return bytes(x ^ 0xFF for x in out)

    b.spi[1] = {5: Echo()}
    cs = machine.Pin(5, machine.Pin.OUT, value=1)
    spi = machine.SPI(1, baudrate=1000000)
    assert spi.read(2) == b"\xff\xff"  # not selected
    cs.value(0)
    buf = bytearray(2)
    spi.write_readinto(b"\x0f\xf0", buf)
    assert buf == bytearray(b"\xf0\x0f")


def test_timer_callbacks_run_as_time_passes():
    ticks = []
    t = machine.Timer(0)
    t.init(mode=machine.Timer.PERIODIC, period=100, callback=lambda tm: ticks.append(1))
    time.sleep_ms(1050)
    assert len(ticks) == 10
    t.deinit()
    time.sleep_ms(500)
    assert len(ticks) == 10
    once = []
    machine.Timer(1, mode=machine.Timer.ONE_SHOT, period=20, callback=lambda tm: once.append(1))
    time.sleep_ms(100)
    assert once == [1]


def test_lightsleep_returns_on_timer_or_pin():
    import esp32

    b = simstate.board
    t0 = b.world_us
    machine.lightsleep(2000)
    assert machine.wake_reason() == machine.TIMER_WAKE
    assert b.world_us - t0 >= 2000000
    esp32.wake_on_ext0(machine.Pin(4), esp32.WAKEUP_ANY_HIGH)
    b.schedule(b.world_us + 300000, "pin", 4, 1)
    t1 = b.world_us
    machine.lightsleep(10000)
    assert machine.wake_reason() == machine.EXT0_WAKE
    assert 300000 <= b.world_us - t1 < 301000


def test_unique_id_and_freq():
    uid = machine.unique_id()
    assert isinstance(uid, bytes) and len(uid) == 6
    machine.freq(80000000)
    assert machine.freq() == 80000000
    raises(ValueError, machine.freq, 100000000)


def test_virtual_timers_minus_one_and_no_id():
    # Timer(-1) and Timer() are esp_timer virtual timers since MicroPython 1.29
    fired = []
    v = machine.Timer(-1)
    v.init(mode=machine.Timer.PERIODIC, period=50, callback=lambda t: fired.append("a"))
    w = machine.Timer()  # no id: virtual too, started by its keyword arguments
    w.init(mode=machine.Timer.ONE_SHOT, freq=10, callback=lambda t: fired.append("b"))
    machine.Timer(-1, period=30, callback=lambda t: fired.append("c"))  # a third, independent one
    time.sleep_ms(215)
    assert fired.count("a") == 4 and fired.count("b") == 1 and fired.count("c") == 7, fired
    v.deinit()
    w.deinit()
    raises(ValueError, machine.Timer, 4)  # the ESP32 has 4 hardware timers
    e = raises(ValueError, machine.Timer(0).init, period=0)
    assert "too short" in e.args[0]


def test_timer_init_takes_hard_false_only_and_keywords_only():
    t = machine.Timer(-1)
    t.init(period=100, callback=lambda t: None, hard=False)
    e = raises(ValueError, t.init, period=100, hard=True)
    assert e.args[0] == "hard Timers are not implemented"
    raises(TypeError, t.init, 1, 100)  # mode and period are keyword-only on the port
    raises(TypeError, machine.Timer, 0, 1)


def test_timer_value_counts_milliseconds_since_the_period_began():
    t = machine.Timer(-1, period=100, callback=lambda t: None)
    time.sleep_ms(250)
    assert 49 <= t.value() <= 51
    t.deinit()
    assert t.value() == 0


def test_mem8_16_32_are_the_address_space():
    b = simstate.board
    gpio_out = 0x3FF44004  # GPIO_OUT_REG
    machine.mem32[gpio_out] = 0x12345678
    assert machine.mem32[gpio_out] == 0x12345678
    assert machine.mem8[gpio_out] == 0x78 and machine.mem8[gpio_out + 3] == 0x12  # little-endian
    assert machine.mem16[gpio_out + 2] == 0x1234
    machine.mem8[gpio_out + 1] = 0xAB
    assert machine.mem32[gpio_out] == 0x1234AB78
    b.mem[0x3FF5A004] = 0x5E71080A  # a model sets a register
    assert machine.mem32[0x3FF5A004] == 0x5E71080A
    e = raises(ValueError, machine.mem32.__getitem__, gpio_out + 2)
    assert e.args[0] == "address 3ff44006 is not aligned to 4 bytes"
    raises(ValueError, machine.mem16.__setitem__, 0x3FF44001, 1)


def test_mem_outside_the_memory_map_panics_and_resets():
    h = sleep_and_wake(machine.mem32.__getitem__, 0)
    assert "LoadProhibited" in h.why
    assert machine.reset_cause() == machine.HARD_RESET  # ESP_RST_PANIC on the port
    h = sleep_and_wake(machine.mem8.__getitem__, 0x40080001)  # bytes on the instruction bus
    assert "LoadStoreError" in h.why
    assert machine.mem32[0x40080000] == 0  # words there are fine


def test_time_pulse_us_times_a_pulse():
    b = simstate.board
    p = machine.Pin(4, machine.Pin.IN)
    b.schedule(b.world_us + 1000, "pin", 4, 1)
    b.schedule(b.world_us + 1250, "pin", 4, 0)
    assert 248 <= machine.time_pulse_us(p, 1, 10000) <= 252
    # never came: -2 after the timeout; already high: timing starts at once
    w0 = b.world_us
    assert machine.time_pulse_us(4, 1, 5000) == -2
    assert 5000 <= b.world_us - w0 <= 5010
    b.drive(4, 1)
    b.schedule(b.world_us + 700, "pin", 4, 0)
    assert 698 <= machine.time_pulse_us(p, 1) <= 702
    b.drive(4, 1)
    assert machine.time_pulse_us(p, 1, 3000) == -1  # did not end in time
    b.schedule(b.world_us + 100, "pin", 4, 0)
    b.schedule(b.world_us + 400, "pin", 4, 1)
    assert 298 <= machine.time_pulse_us(p, 0, 3000) <= 302  # a low pulse


def test_signal_takes_pin_arguments_and_invert():
    s = machine.Signal(2, machine.Pin.OUT, invert=True)  # a Pin made from the same arguments
    s.on()
    assert simstate.board.level(2) == 0 and s.value() == 1
    s.off()
    assert simstate.board.level(2) == 1 and s() == 0
    s2 = machine.Signal(5, machine.Pin.OUT, value=1, invert=True)  # value= is the signal's
    assert simstate.board.level(5) == 0 and s2.value() == 1
    s3 = machine.Signal(machine.Pin(12, machine.Pin.OUT), invert=True)
    s3.value(1)
    assert simstate.board.level(12) == 0
    raises(TypeError, machine.Signal, machine.Pin(12), 1)
