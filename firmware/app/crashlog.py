"""Crashes kept on flash for a technician: the last few tracebacks, newest
last, in /crash.log, bounded so a crash loop cannot fill the flash.

    crashlog.keep(exc, "boot=42 cause=deepsleep")
    crashlog.read()   # the text, for `petrel monitor` or the REPL
"""

import io
import os
import sys

PATH = "crash.log"
LIMIT = 4096  # bytes kept: the newest crashes win


def text(exc):
    buf = io.StringIO()
    sys.print_exception(exc, buf) if hasattr(sys, "print_exception") else _cpython(exc, buf)
    return buf.getvalue()


def _cpython(exc, buf):
    import traceback

    buf.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def keep(exc, header, path=PATH):
    """Append one crash; never raises (a full or failing flash loses the entry,
    not the wake). Returns the traceback text."""
    tb = text(exc)
    entry = "--- %s\n%s" % (header, tb)
    try:
        old = read(path)
        data = (old + entry)[-LIMIT:]
        cut = data.find("--- ")
        if cut > 0:
            data = data[cut:]  # start at a whole entry
        with open(path + ".tmp", "w") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
    except OSError:
        pass
    return tb


def read(path=PATH):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
