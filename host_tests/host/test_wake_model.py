"""The boot in the energy model from its measured parts (energy.boot_layouts,
boot_range, romfs_saving) and the profile fields they rest on."""

import copy
import io

import pytest

from petrel import boards, energy


def test_the_profile_sources_every_boot_part():
    e = boards.load("esp32-node")["energy"]
    for _, key in energy.BOOT_PARTS:
        assert isinstance(e[key], (int, float))
    assert "glenn20" in e["boot_parts_source"] and "_boot.py" in e["boot_parts_source"]


def test_boot_floors_add_up_from_the_parts():
    e = boards.load("esp32-node")["energy"]
    (mounted, m_ms), (bare, b_ms) = energy.boot_layouts(e)
    assert m_ms == pytest.approx(47.0 + 7.8 + 0.8 + 350)
    assert b_ms == pytest.approx(47.0 + 7.8 + 0.8 + 1.5)
    assert energy.boot_layouts({"boot_ms": 300}) == []  # a profile without the parts


def test_romfs_saves_only_the_code_loading_above_the_mounted_floor():
    prof = boards.load("esp32-node")
    ms, mc, before, after = energy.romfs_saving(prof, 300, 12)
    assert ms == 0 and mc == 0 and before == after  # boot_ms 300 < the 405.6 ms floor
    p = copy.deepcopy(prof)
    p["energy"]["boot_ms"] = 505.6  # 100 ms of loading above the floor
    ms, mc, before, after = energy.romfs_saving(p, 300, 12)
    assert ms == pytest.approx(100) and mc == pytest.approx(4.0)
    assert after > before


def test_the_range_brackets_the_profile_and_the_report_says_so():
    prof = boards.load("esp32-node")
    rows = energy.boot_range(prof, 300, 12)
    now = energy.levers(prof, 300, 12)[0][1]
    assert rows[0][2] < now < rows[1][2]  # mounted floor below, no mount above
    out = io.StringIO()
    energy.report("esp32-node", 300, 3600, out=out)
    text = out.getvalue()
    assert "vfs mounted, trivial main.py" in text and "405.6 ms" in text
    assert "saves its code loading, not the mount" in text
