"""Helpers for portable tests (plain functions that run on CPython and the VM)."""

import simstate


def raises(exc, fn, *args, **kw):
    """Call fn and return the exception of type exc it raised; fail otherwise."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc.__name__))


def sleep_and_wake(fn, *args):
    """Run fn, which must halt the board, then carry the board to its next boot.
    Returns the Halt."""
    b = simstate.board
    h = raises(simstate.Halt, fn, *args)
    b.after_halt(h)
    return h


_scratch = {"n": 0, "mount": None}


def scratch_dir(blocks=64):
    """An empty folder on a real filesystem -> (path, flash).
    On the VM: littlefs (vfs.VfsLfs2) on a NOR flash model, as on the board;
    flash is the norflash.NorFlash to count wear or cut power. Under CPython
    (no littlefs): a temporary folder, flash is None."""
    import sys

    _scratch["n"] += 1
    if sys.implementation.name != "micropython":
        import tempfile

        return tempfile.mkdtemp(prefix="petrel-test-"), None
    import vfs
    from norflash import NorFlash

    if _scratch["mount"]:
        try:
            vfs.umount(_scratch["mount"])
        except OSError:
            pass
    dev = NorFlash(blocks)
    vfs.VfsLfs2.mkfs(dev.block_device())
    path = "/scratch%d" % _scratch["n"]
    vfs.mount(vfs.VfsLfs2(dev.block_device()), path)
    _scratch["mount"] = path
    return path, dev


def empty_tree(path):
    """Everything below path removed (path itself stays)."""
    import os

    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            empty_tree(p)
            os.rmdir(p)
        else:
            os.remove(p)


_host = {}


def host_folder(name):
    """One scratch folder per test module, emptied at each call: on the VM
    a host folder (/tmp/petrel-<name>-test), not scratch_dir's littlefs,
    whose long runs on the Python NorFlash block device made the unix VM
    segfault (test_mailbox's _folder); under CPython scratch_dir's."""
    import os
    import sys

    if name not in _host:
        if sys.implementation.name == "micropython":
            _host[name] = "/tmp/petrel-%s-test" % name
            try:
                os.mkdir(_host[name])
            except OSError:
                pass
        else:
            _host[name] = scratch_dir()[0]
    empty_tree(_host[name])
    return _host[name]


def remount(path, flash):
    """After a reset or power cut: mount the same flash afresh (VM only)."""
    if flash is None:
        return
    import vfs

    try:
        vfs.umount(path)
    except OSError:
        pass
    flash.revive()
    vfs.mount(vfs.VfsLfs2(flash.block_device()), path)


HOME = {"ssid": "home", "bssid": "a0b1c2d3e4f5", "password": "correct horse"}


def station(connect=True):
    """The station of a fresh board, connected to the scripted AP 'home'."""
    import network
    import time

    simstate.board.aps = [dict(HOME)]
    w = network.WLAN(network.STA_IF)
    w.active(True)
    if connect:
        w.connect("home", "correct horse")
        while not w.isconnected():
            time.sleep_ms(10)
    return w


def chain(items, scale=1):
    """A filter chain of channel "temp" built from configuration items."""
    import filterconf

    return filterconf.build_chain("temp", {"scale": scale, "filters": items})


def feed(c, values, step_ms=1000, start=0):
    """Push values one step_ms apart -> what the chain gave for each."""
    out = []
    now = start
    for v in values:
        out.append(c.push(v, now))
        now += step_ms
    return out
