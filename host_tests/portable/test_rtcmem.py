# lib/rtcmem: the RTC-memory record, versioned and checked by CRC, in regions
# that do not disturb each other within the 2048 bytes.
import machine

import rtcmem


def test_rtc_record_round_trip():
    r = rtcmem.Region(machine.RTC(), 0, 64)
    assert r.load() == (None, "empty")
    r.save(b"\x01\x02\x03")
    assert r.load() == (b"\x01\x02\x03", "ok")
    assert rtcmem.Region(machine.RTC(), 0, 64, version=2).load() == (None, "bad-version")
    r.clear()
    assert r.load() == (None, "empty")


def test_rtc_regions_do_not_disturb_each_other():
    rtc = machine.RTC()
    a = rtcmem.Region(rtc, 0, 100)
    b = rtcmem.Region(rtc, 100, 1948)
    b.save(b"outbox" * 100)
    a.save(b"app")
    assert a.load() == (b"app", "ok")
    assert b.load() == (b"outbox" * 100, "ok")
    a.save(b"app2" * 20)
    b.clear()
    assert a.load() == (b"app2" * 20, "ok") and b.load() == (None, "empty")
    assert len(rtc.memory()) <= 2048


def test_rtc_record_detects_every_single_bit_flip():
    rtc = machine.RTC()
    r = rtcmem.Region(rtc, 0, 64)
    r.save(b"state:" + bytes(range(40)))
    good = rtc.memory()
    for i in range(9 + 46):
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            rtc.memory(bad)
            payload, why = r.load()
            assert payload is None and why != "ok"


def test_rtc_record_rejects_truncation_and_oversize():
    rtc = machine.RTC()
    r = rtcmem.Region(rtc)
    r.save(b"abcdef")
    good = rtc.memory()
    for n in range(1, 15):
        rtc.memory(good[:n])
        assert r.load()[0] is None
    try:
        r.save(b"x" * 2040)
    except ValueError:
        pass
    else:
        raise AssertionError("a record over 2048 bytes must be refused")
    r.save(b"x" * 2039)  # exactly 2048 with header and CRC
    assert len(rtc.memory()) == 2048
    try:
        rtcmem.Region(rtc, 2000, 100)
    except ValueError:
        pass
    else:
        raise AssertionError("a region past 2048 bytes must be refused")
