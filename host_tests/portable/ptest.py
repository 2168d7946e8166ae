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
