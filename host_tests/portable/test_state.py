# app.state: the wake's record in RTC memory (counters, backoff, drift),
# checked by CRC, its fields declared with their sizes, counters saturating.
import machine

from app import state
from ptest import raises


def test_state_survives_deep_sleep_and_starts_afresh_when_damaged():
    st = state.State()
    assert st.why == "empty" and st.boots == 0
    st.boots, st.crash_streak, st.ppm, st.rssi = 41, 2, -20000, -70
    st.save()
    again = state.State()
    assert again.why == "ok" and again.boots == 41 and again.crash_streak == 2
    assert again.ppm == -20000 and again.rssi == -70
    mem = bytearray(machine.RTC().memory())
    mem[20] ^= 0xFF  # one flipped byte in the record
    machine.RTC().memory(bytes(mem))
    bad = state.State()
    assert bad.why == "bad-crc" and bad.boots == 0
    # the regions of the libraries do not overlap the app's or each other
    regions = sorted((state.APP, state.OUTBOX, state.CLOCK, state.SEQ, state.FILTERS, state.WIFI))
    for a, b in zip(regions, regions[1:]):
        assert a[0] + a[1] <= b[0]
    assert regions[-1][0] + regions[-1][1] <= 2048


def test_state_fields_are_declared_and_zero_in_a_fresh_record():
    names = [name for name, _ in state.FIELDS]
    declared = [k for k in dir(state.State) if not k.startswith("_") and isinstance(getattr(state.State, k), int)]
    assert sorted(declared) == sorted(names)  # FIELDS and the class declare the same record
    st = state.State()
    assert [getattr(st, name) for name in names] == [0] * len(names)


def test_bump_saturates_at_the_fields_size():
    st = state.State()
    for name, top in (("crash_streak", 255), ("crashes", 65535), ("up_next", 2 ** 32 - 1)):
        code = [c for n, c in state.FIELDS if n == name][0]
        assert code == {255: "B", 65535: "H", 2 ** 32 - 1: "I"}[top]
        st.bump(name)
        assert getattr(st, name) == 1
        st.bump(name, top - 3)
        assert getattr(st, name) == top - 2
        st.bump(name)
        st.bump(name, 5)
        assert getattr(st, name) == top  # stays at the top, not wrapped to a small count
        st.bump(name)
        assert getattr(st, name) == top
    st.bump("refused", 0)
    assert st.refused == 0
    st.save()  # a saturated record packs: every value fits its field
    again = state.State()
    assert again.crash_streak == 255 and again.crashes == 65535 and again.up_next == 2 ** 32 - 1
    raises(AttributeError, st.bump, "crashs")  # a misspelt counter is an error, not a new attribute


def test_a_value_out_of_its_field_is_saved_clamped_not_wrapped_nor_raised():
    st = state.State()
    st.batt_mv, st.rssi, st.ppm, st.synced, st.ntp_streak = 70000, -300, -2 ** 40, 2 ** 32, 256
    st.save()  # CPython's struct.pack raises here, the VM's wraps: neither
    again = state.State()
    assert again.batt_mv == 65535 and again.rssi == -128 and again.ppm == -2 ** 31
    assert again.synced == 2 ** 32 - 1 and again.ntp_streak == 255
