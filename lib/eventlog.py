"""The serial log: one event per line, for a technician and for `petrel monitor`.

    I 000123 wake: cause=deepsleep boot=42 batt_mv=3910

level (E, W, I, D), milliseconds since boot, a tag, then the message, usually
key=value fields. Messages are printf-style (`info("wake", "boot=%d", n)`) so the
field order is the caller's and nothing is formatted for a level that is off.
Never pass a secret here: this line goes out on the UART.
"""

import time

ERROR = 0
WARN = 1
INFO = 2
DEBUG = 3
_LETTER = "EWID"

level = INFO


def log(lvl, tag, fmt="", *args):
    if lvl > level:
        return
    msg = fmt % args if args else fmt
    print("%s %06d %s: %s" % (_LETTER[lvl], time.ticks_ms(), tag, msg))


def error(tag, fmt="", *args):
    log(ERROR, tag, fmt, *args)


def warn(tag, fmt="", *args):
    log(WARN, tag, fmt, *args)


def info(tag, fmt="", *args):
    log(INFO, tag, fmt, *args)


def debug(tag, fmt="", *args):
    log(DEBUG, tag, fmt, *args)


def parse(line):
    """A log line -> (level letter, ms, tag, {key: value}, message), or None."""
    line = line.strip()
    if len(line) < 10 or line[0] not in _LETTER or line[1] != " ":
        return None
    rest = line[2:]
    sp = rest.find(" ")
    colon = rest.find(": ", sp + 1)
    if sp < 1 or colon < 0:
        # a tag with nothing after it ends in ":" without a space
        if sp > 0 and rest.endswith(":"):
            colon = len(rest) - 1
        else:
            return None
    try:
        ms = int(rest[:sp])
    except ValueError:
        return None
    tag = rest[sp + 1 : colon]
    if not tag or " " in tag:
        return None
    msg = rest[colon + 2 :]
    fields = {}
    for word in msg.split():
        eq = word.find("=")
        if eq > 0:
            fields[word[:eq]] = word[eq + 1 :]
    return (line[0], ms, tag, fields, msg)
