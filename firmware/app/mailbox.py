"""What the node does with its downlink: the messages its uplink session
found waiting (app.session), and the pushed files' life from then on.

    mailbox.boot(st, cause)       # every boot, before config.load: a switch, a revert
    mailbox.receive(st, cfg, clk, inbox)   # after the session: verify, check, stage
    mailbox.after_uplink(st, ok)  # a trial confirmed by an uplink, or failed
    mailbox.report(st)            # the health record's fields

A pushed config.json or secrets.json is never written over the running one
while the node runs with it: it is checked by the node's own checkers (a
config that needs a secret or a CA file the node lacks is refused too),
written whole to config.new.json (secrets.new.json), and its version noted as
pending (one small file, data/down, written after the new file is complete).
The next boot switches: the running file becomes config.prev.json, the new
one config.json (two renames, each atomic on littlefs; a power cut between
any two steps finishes the switch at the next boot). The pushed file then
runs on trial: the first uplink that works with it confirms it; a trial that
crashes REVERT_CRASHES wakes in a row (the recovery ladder counts them, hung
wakes included), or fails TRIAL_UPLINKS uplinks in a row (a wrong broker or
Wi-Fi key would otherwise cut the node off for good), goes back to the
previous file, and the health record says so (dwhy "reverted", cfgerr why).

Versions: data/down keeps, per kind, the highest version accepted: an older
or equal one is a replay, refused and counted (a time answer is fresh by
its nonce instead, used once: the collectors that answer need not share a
counter) (a retained copy of the one
already applied, which the broker sends again when the session was lost, is
not counted). Messages of one kind found together are all verified, and only
the newest is applied: a node asleep through several pushes takes the last.

An update's manifest (kind "update") and its chunks go to app.update: its
last version is kept in data/update (data/down's format is that of the four
kinds before it), the chunks (topics under the manifest's prefix, fetched by
app.session) are taken in order, and a download whose last chunk came is
finished here, after the radio is off. A manifest refused for a reason that
may pass later (downmsg.Later: no room yet, a firmware trial on) does not use
its downlink version: its retained copy is taken when it comes again.

A hold keeps the node awake at the REPL (ladder.run: the watchdog fed, the
node back on its schedule afterwards). A time answer is the fleet side's
clock for the nonce this node sent (health field treq): the clock takes it as
an interval, lib/clock.py Clock.trusted.
"""

import json
import os
import struct
from binascii import crc32

import clock
import downmsg
import eventlog as log

from app import config

PATH = "data/down"
REVERT_CRASHES = 2  # crashed wakes in a row on trial before the previous file is back
TRIAL_UPLINKS = 3  # failed uplinks in a row on trial before the same
TIME_MAX_MS = 6 * 3600 * 1000  # an answer later than this after its request is of no use
ERR_MAX = 80
# applied version per kind (KINDS' order), the running config and secrets
# versions and the ones before them, the versions waiting for the switch,
# pending and trial (bit 1 config, bit 2 secrets), failed uplinks on trial
_FMT = "<QQQQQQQQQQBBB"
FILES = ((1, "config"), (2, "secrets"))  # bit, file stem


class Mailbox:
    applied = None

    def __init__(self):
        self.applied = [0, 0, 0, 0]
        self.cfgv = self.cfgv_prev = self.secv = self.secv_prev = 0
        self.pend_cfgv = self.pend_secv = 0
        self.pending = self.trial = self.trial_fails = 0
        self.err = ""

    @classmethod
    def load(cls):
        m = cls()
        try:
            with open(PATH, "rb") as f:
                raw = f.read(512)
        except OSError:
            return m
        n = struct.calcsize(_FMT)
        if len(raw) < n + 4 or struct.unpack("<I", raw[-4:])[0] != crc32(raw[:-4]) & 0xFFFFFFFF:
            log.error("down", "%s damaged: versions start afresh", PATH)
            return m
        v = struct.unpack(_FMT, raw[:n])
        m.applied = list(v[:4])
        m.cfgv, m.cfgv_prev, m.secv, m.secv_prev, m.pend_cfgv, m.pend_secv = v[4:10]
        m.pending, m.trial, m.trial_fails = v[10:]
        try:
            m.err = raw[n:-4].decode()
        except Exception:  # noqa: BLE001
            m.err = ""
        return m

    def save(self):
        body = struct.pack(_FMT, *(self.applied + [self.cfgv, self.cfgv_prev, self.secv, self.secv_prev,
                                                   self.pend_cfgv, self.pend_secv, self.pending, self.trial,
                                                   min(255, self.trial_fails)]))
        body += self.err.encode()[:ERR_MAX]
        _write(PATH, body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))

    def busy(self):
        return bool(self.pending or self.trial)


def _write(path, data):
    """Whole or not at all: a temporary file renamed over the old one."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)


def _exists(path):
    try:
        os.stat(path)
        return True
    except (OSError, ValueError):  # ValueError: a name no file can have (a pushed "a\x00b")
        return False


def _refuse(st, reason, kind, detail, m=None):
    st.bump("dr_" + reason)
    log.warn("down", "%s refused: %s (%s)", kind, reason, detail)
    if m is not None and reason in ("invalid", "reverted"):
        m.err = ("%s: %s" % (kind, detail))[:ERR_MAX]


# ---------------------------------------------------------------- boot
def boot(st, cause):
    """Before the configuration is read: finish a pending switch, and go
    back to the previous file when a trial crashed. Reads data/down only
    when RTC memory says something is going on, or after a power-on (RTC
    memory lost: the file says)."""
    if not st.down_busy and cause not in ("poweron", "hard", "other"):
        return
    m = Mailbox.load()
    changed = False
    for bit, stem in FILES:
        if m.pending & bit:
            new, cur, prev = stem + ".new.json", stem + ".json", stem + ".prev.json"
            if _exists(new):  # not switched yet (or cut between the two renames)
                if _exists(cur):
                    os.rename(cur, prev)
                os.rename(new, cur)
            if bit == 1:
                m.cfgv_prev, m.cfgv = m.cfgv, m.pend_cfgv
            else:
                m.secv_prev, m.secv = m.secv, m.pend_secv
            m.pending &= ~bit
            m.trial |= bit
            m.trial_fails = 0
            log.info("down", "%s v%d on trial", stem, m.cfgv if bit == 1 else m.secv)
            changed = True
    if m.trial and st.crash_streak >= REVERT_CRASHES:
        _revert(st, m, "crashed %d wakes in a row" % st.crash_streak)
        st.crash_streak = 0  # the previous file gets a fresh start
        changed = True
    if changed:
        m.save()
    st.down_busy = 1 if m.busy() else 0


def _revert(st, m, why):
    for bit, stem in FILES:
        if m.trial & bit:
            v = m.cfgv if bit == 1 else m.secv
            if _exists(stem + ".prev.json"):
                os.rename(stem + ".prev.json", stem + ".json")
            else:  # there was none before the push: the node had no such file
                try:
                    os.remove(stem + ".json")
                except OSError:
                    pass
            if bit == 1:
                m.cfgv = m.cfgv_prev
            else:
                m.secv = m.secv_prev
            _refuse(st, "reverted", stem, "v%d %s" % (v, why), m)
    m.trial = 0
    m.trial_fails = 0


def after_uplink(st, ok):
    """After an uplink attempt: a trial confirmed by one that worked, or
    reverted after TRIAL_UPLINKS failures in a row (for the next boot)."""
    if not st.down_busy:
        return
    m = Mailbox.load()
    if not m.trial:
        return
    if ok:
        for bit, stem in FILES:
            if m.trial & bit:
                log.info("down", "%s v%d confirmed", stem, m.cfgv if bit == 1 else m.secv)
                if bit == 2:  # old keys are not kept once the new ones work
                    try:
                        os.remove("secrets.prev.json")
                    except OSError:
                        pass
        m.trial = 0
        m.trial_fails = 0
    else:
        m.trial_fails += 1
        if m.trial_fails >= TRIAL_UPLINKS:
            _revert(st, m, "%d uplinks failed" % m.trial_fails)
    m.save()
    st.down_busy = 1 if m.busy() else 0


# ---------------------------------------------------------------- receive
def receive(st, cfg, clk, inbox):
    """The messages the session found [(topic, message[, retained])]:
    verified, the newest of each kind applied; an update's chunks handed to
    app.update, and a download whose last chunk came finished. Never raises
    for anything in a message; a flash error is logged and the message left
    unapplied."""
    try:
        k_mac, k_enc = keys(cfg)
    except config.ConfigError:
        return
    kid = cfg.device_id.encode()
    prefix = cfg.topic + "/down/"
    m = Mailbox.load()
    upd = _Update(st)
    newest = {}
    for item in inbox:
        try:
            topic = item[0].decode() if isinstance(item[0], (bytes, bytearray)) else item[0]
        except UnicodeError:  # a broker may pass any bytes: not UTF-8, not one of our topics
            topic = ""
        if topic.startswith(prefix):
            kind = topic[len(prefix):]
        else:
            kind = "?"
            if topic and upd.take(item[1], topic):
                continue  # a chunk of the update being downloaded
        try:
            version, body = downmsg.open_message(kind, item[1], k_mac, kid)
        except downmsg.Refused as e:
            _refuse(st, e.args[0], kind, e.args[1])
            continue
        except Exception as e:  # noqa: BLE001  a bug in the opener: this message refused, not the rest
            _refuse(st, "malformed", kind, "%s: %s" % (type(e).__name__, e))
            continue
        if kind == "update":  # its last version is kept by app.update (data/update)
            last = upd.get().downv if upd.get() is not None else -1  # not loaded: _apply says so
        elif kind == "time":
            last = 0  # fresh by its nonce, which is used once: collectors need not share a counter
        else:
            last = m.applied[downmsg.KINDS.index(kind)]
        if version <= last:
            if not (version == last and len(item) > 2 and item[2]):  # a retained copy: expected
                _refuse(st, "replay", kind, "v%d, applied v%d" % (version, last))
            continue
        if kind not in newest or version > newest[kind][0]:
            newest[kind] = (version, body)
    for kind in downmsg.KINDS:  # config before secrets: a config needing new secrets is checked with them
        if kind in newest:
            version, body = newest[kind]
            try:
                _apply(st, cfg, clk, m, kind, version, body, k_enc, upd)
            except downmsg.Refused as e:
                _refuse(st, e.args[0], kind, e.args[1], m if kind != "update" else None)
                if kind == "update":
                    upd.get().err = ("update: %s" % e.args[1])[:ERR_MAX]
                    upd.dirty = True
                    if isinstance(e, downmsg.Later):  # no room yet, a trial on: its copy is taken again
                        continue
            except OSError as e:  # the flash: tried again only if the fleet side sends it again
                log.error("down", "%s v%d not kept: %s", kind, version, e)
                continue
            if kind == "update":
                upd.get().downv = version  # taken or refused for good: never again
                upd.dirty = True
            else:
                m.applied[downmsg.KINDS.index(kind)] = version
    if newest:
        try:
            m.save()
        except OSError as e:
            log.error("down", "%s not written: %s", PATH, e)
        st.down_busy = 1 if m.busy() else 0
    upd.finish()  # last: a firmware's finish resets the node


class _Update:
    """app.update's state, loaded the first time this wake needs it (a chunk,
    a manifest, or a download in progress): a wake with no update in
    progress neither imports app.update nor reads data/update."""

    def __init__(self, st):
        self.st = st
        self.u = None
        self.dirty = False
        if st.upd != 1 and st.upd != 3:  # a download in progress, or data/update not read yet
            self.get()

    def get(self):
        if self.u is None:
            try:
                from app import update

                self.u = update.load()
            except Exception as e:  # noqa: BLE001  no update module, a flash error: no update today
                log.error("update", "state not loaded: %s: %s", type(e).__name__, e)
                return None
        return self.u

    def take(self, msg, topic):
        if self.get() is None:
            return False
        try:
            ours = self.u.take(self.st, topic, msg)
            self.dirty = self.dirty or ours  # a refusal's why is kept too
            return ours
        except Exception as e:  # noqa: BLE001  the flash: the chunk is asked again next time
            log.error("update", "chunk not kept: %s: %s", type(e).__name__, e)
            return True

    def finish(self):
        """Save what changed, and finish a download whose chunks are all in."""
        u = self.u
        if u is None:
            return
        try:
            if self.dirty:
                u.save()
            u.settle(self.st)
        except downmsg.Refused as e:
            u.refuse(self.st, e.args[0], e.args[1])
        except Exception as e:  # noqa: BLE001  the flash: redone from the saved state next time
            log.error("update", "not finished: %s: %s", type(e).__name__, e)
        u.flag(self.st)


def keys(cfg):
    """-> (K_mac, K_enc) of this node; ConfigError without an uplink key."""
    down = cfg.secret("down_key", None)
    return downmsg.keys(bytes.fromhex(cfg.secret("hmac_key")), bytes.fromhex(down) if down else None)


def _apply(st, cfg, clk, m, kind, version, body, k_enc, upd=None):
    if kind == "update":
        if upd.get() is None:
            raise OSError("no update state")
        man = downmsg.update_manifest(body, cfg.topic + "/down/")
        man.downv = version  # kept with it if it waits for another target's download
        if upd.get().accept(st, man):
            upd.dirty = True
    elif kind == "config":
        text = downmsg.config_text(body)
        try:
            new = config.check(json.loads(text))
        except config.ConfigError as e:
            raise downmsg.Refused("invalid", str(e))
        except Exception as e:  # noqa: BLE001  not JSON, nested too deep, out of memory
            raise downmsg.Refused("invalid", "config.json: not usable (%s)" % type(e).__name__)
        _needs(new, cfg)
        _write("config.new.json", text.encode())
        m.pend_cfgv = version
        m.pending |= 1
        log.info("down", "config v%d staged: runs from the next wake", version)
    elif kind == "secrets":
        pushed = downmsg.secrets(body, k_enc)
        if "hmac_key" in pushed:
            raise downmsg.Refused("invalid", "secrets.json: key 'hmac_key' cannot be pushed")
        merged = dict(cfg._secrets)
        merged.update(pushed)
        try:
            config.check_secrets(merged)
        except config.ConfigError as e:  # names the key, never the value
            raise downmsg.Refused("invalid", str(e))
        _write("secrets.new.json", json.dumps(merged).encode())
        m.pend_secv = version
        m.pending |= 2
        log.info("down", "secrets v%d staged (%s): run from the next wake", version,
                 " ".join(sorted(pushed)))
    elif kind == "hold":
        minutes, exp = downmsg.hold(body)
        if clk.known() and clk.unix() > exp:
            raise downmsg.Refused("stale", "hold expired at %d" % exp)
        st.hold_min = minutes  # not kept in RTC memory: this wake's (ladder.run)
        log.warn("down", "maintenance hold %d min", minutes)
    elif kind == "time":
        t, nonce = downmsg.time_answer(body)
        elapsed = clock.unix_ms() - st.treq_ms
        if not st.treq or nonce != st.treq:
            raise downmsg.Refused("stale", "no request for that answer")
        if not 0 <= elapsed <= TIME_MAX_MS:
            raise downmsg.Refused("stale", "answer %d ms after its request" % elapsed)
        st.treq = 0
        # the answer was made between the request and now: the true time now
        # is at least t and at most t + the time since the request, as the
        # RTC measured it, plus its worst drift (10 %, lib/clock.py)
        clk.trusted(t, t + elapsed + elapsed // 10)


def _needs(new, cfg):
    """A configuration that cannot reach the broker with what the node has is
    refused now, not found out by a trial."""
    b = new.broker
    if b is None:
        return
    if b.tls == "psk" and cfg.secret("psk_key", None) is None:
        raise downmsg.Refused("invalid", "broker.tls psk: secrets.json has no psk_key")
    for name in (b.ca, b.cert, b.key):
        if name is not None and not _exists(name):
            raise downmsg.Refused("invalid", "broker: file %s not on the node" % name)


# ---------------------------------------------------------------- report
def report(st):
    """The health record's downlink fields."""
    m = Mailbox.load() if st.down_busy or _exists(PATH) else Mailbox()
    why = []
    total = 0
    for r in downmsg.REASONS:
        n = getattr(st, "dr_" + r)
        if n:
            why.append("%s:%d" % (r, n))
            total += n
    return {"cfgv": m.cfgv, "secv": m.secv, "dref": total, "dwhy": " ".join(why), "cfgerr": m.err}
