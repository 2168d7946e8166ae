"""The CPython harness: firmware code gets the fakes, everything else stays CPython."""

import importlib
import time as host_time

import simstate


def test_host_code_keeps_cpythons_time():
    assert hasattr(host_time, "perf_counter")
    assert host_time.time() > 1.6e9  # a real 1970-epoch clock


def test_firmware_side_gets_the_virtual_clock():
    eventlog = importlib.import_module("eventlog")  # lib/ module
    assert not hasattr(eventlog.time, "perf_counter")
    b = simstate.reset_world()
    w0 = b.world_us
    eventlog.time.sleep(5)
    assert b.world_us - w0 >= 5000000


def test_micropython_module_is_the_sims_not_the_wheels():
    import micropython

    assert micropython.const(7) == 7
    assert "boards" in micropython.__file__



def test_firmware_side_gets_the_boards_socket_and_tls_host_code_cpythons():
    import socket as host_socket
    import ssl

    from petrel import harness, paths

    fw = {"__file__": str(paths.LIB / "any.py")}  # as if imported from lib/
    sock = harness._import("socket", fw)
    assert sock is not host_socket and "boards/sim" in sock.__file__
    tls = harness._import("tls", fw)
    assert tls.SSLContext(tls.PROTOCOL_TLS_CLIENT).get_ciphers()[0].startswith("TLS-")
    host = harness._import("socket", {"__file__": __file__})
    assert host is host_socket and hasattr(host, "create_connection")
    assert ssl.SSLContext.__module__ == "ssl"


def test_fresh_modules_imports_afresh_and_puts_the_old_copies_back(tmp_path, monkeypatch):
    import sys

    from petrel import harness

    (tmp_path / "petrel_probe_mod.py").write_text("class Tag:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    import petrel_probe_mod as outside

    try:
        with harness.fresh_modules([tmp_path]):
            assert "petrel_probe_mod" not in sys.modules
            import petrel_probe_mod as inside

            assert inside is not outside and inside.Tag is not outside.Tag
        assert sys.modules["petrel_probe_mod"] is outside  # the copy made within is gone
    finally:
        sys.modules.pop("petrel_probe_mod", None)
