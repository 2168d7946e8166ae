"""The node's one configuration error and the checker that raises it.

    c = confcheck.Check("config.json", data)
    c.integer("sample_s", 10, 86400, 300)   # or ConfigError:
    # config.json: key 'sample_s' must be an integer in 10..86400, got '5m'

Every message starts with where the value is (file, object, channel, filter)
and names the key and the form expected, so a person can fix the file from
the log line alone. Used by app.config (config.json, board.json) and by
filterconf (a channel's filters).

Total: every checker here returns a valid value or raises ConfigError, and
nothing else, whatever the JSON holds. Numbers are bounded before anyone
computes with them: no NaN or Infinity (CPython's json reads them, and 1e999
is Infinity on both interpreters), and no magnitude above MAX_NUMBER, so a
value times a channel's scale (at most 10**6) stays finite (1e15, even in the
ESP32 port's single-precision floats) and an int well inside 64 bits. An error message shows at most SHOWN characters of the
value it refuses (and only the size of a list or object), so a hostile value
cannot make the message, or the log line, big or deep.
"""

MAX_NUMBER = 10 ** 9  # no quantity a node measures is beyond 1e9 of its unit (lux ~1e5, Pa ~1e5)
SHOWN = 40  # characters of a refused value in a message


class ConfigError(ValueError):
    pass


def show(v):
    """A refused value, short: repr of a scalar cut to SHOWN characters, a
    list or object by its size (their repr could be deep or long)."""
    if isinstance(v, list):
        return "a list of %d" % len(v)
    if isinstance(v, dict):
        return "an object of %d key%s" % (len(v), "" if len(v) == 1 else "s")
    if isinstance(v, int) and not isinstance(v, bool) and not -MAX_NUMBER <= v <= MAX_NUMBER:
        return "an integer of %d digits" % len(str(abs(v)))
    r = repr(v)
    return r if len(r) <= SHOWN else r[:SHOWN] + "..."


class Check:
    """Reads one JSON value (an object, or a filter's short form), naming
    `where` in every error. The keys asked for are kept in `seen`, so done()
    can refuse the ones nobody asked for."""

    def __init__(self, where, data):
        self.where = where
        self.data = data
        self.seen = []

    def fail(self, msg):
        raise ConfigError("%s: %s" % (self.where, msg))

    def must(self, key, expected, got):
        """key: '' when the value itself is wrong."""
        self.fail(("key '%s' must be " % key if key else "must be ") + "%s, got %s" % (expected, show(got)))

    def get(self, key, default=None, required=False):
        self.seen.append(key)
        if not isinstance(self.data, dict):
            self.fail("expected a mapping of options, got %s" % show(self.data))
        if key in self.data:
            return self.data[key]
        if required:
            self.fail("missing key '%s'" % key)
        return default

    def done(self):
        """Refuse a key that no get() asked for (a typo would otherwise be
        ignored, and its setting silently not applied)."""
        if isinstance(self.data, dict):
            for k in self.data:
                if k not in self.seen:
                    self.fail("unknown key '%s' (expected: %s)" % (k, ", ".join(self.seen)))

    # ------------------------------------------------------------ values
    def number(self, v, key, lo=-MAX_NUMBER, hi=MAX_NUMBER):
        """An int or float in lo..hi: the comparison refuses NaN (it compares
        False) and +-Infinity (beyond any bound) on both interpreters."""
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            self.must(key, "a number in %s..%s" % (lo, hi), v)
        return v

    def count(self, v, key, lo=1, hi=MAX_NUMBER):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.must(key, "an integer in %d..%d" % (lo, hi), v)
        return v

    def flag(self, key, default=False):
        v = self.get(key, default)
        if not isinstance(v, bool):
            self.fail("key '%s' must be true or false" % key)
        return v

    # ------------------------------------------------------------ keys
    def integer(self, key, lo, hi, default):
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.must(key, "an integer in %d..%d" % (lo, hi), v)
        return v

    def text(self, key, default=None, required=False, maxlen=64):
        v = self.get(key, default)
        if v is None and not required:
            return None
        if not isinstance(v, str) or not v or len(v) > maxlen:
            self.must(key, "a string of 1..%d characters" % maxlen, v)
        return v

    def name(self, key, maxlen, punct, why, default=None, required=False):
        """A text value of letters, digits and the characters in punct,
        starting with a letter or digit (SenML names, RFC 8428 section
        4.5.1, and MQTT topic levels are made of these); why says what the
        value becomes."""
        v = self.text(key, default, required, maxlen)
        if v is None:
            return None
        for i in range(len(v)):
            c = v[i]
            if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or i and c in punct):
                self.must(key, "1..%d letters, digits or %s, starting with a letter or digit (%s)"
                          % (maxlen, " ".join(punct), why), v)
        return v

    def obj(self, key, required=False):
        """The object under key as a Check of its own, None when absent."""
        v = self.get(key)
        if v is None and not required:
            return None
        if not isinstance(v, dict):
            self.must(key, "an object {...}", v)
        return Check("%s: %s" % (self.where, key), v)


def mapping(where, data):
    """A Check of a value that must be a JSON object {...}."""
    c = Check(where, data)
    if not isinstance(data, dict):
        c.must("", "a JSON object {...}", data)
    return c
