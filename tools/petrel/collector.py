"""The receiving end, independent of the node's code: verify a node's uplink
message (COSE_Mac0 over SenML CBOR) with cbor2 and Python's hmac, refuse
tampered and replayed messages, and return the readings.

    v = Verifier({"p-a1b2c3": key})
    readings = v.accept(message)      # [(name, unit, value, time)] or Rejected
"""

import hashlib
import hmac

import cbor2

ALG, KID, SEQ = 1, 4, -65537
TAG_LEN = {5: 32, 4: 8}
SENML = {-2: "bn", -3: "bt", -4: "bu", 0: "n", 1: "u", 2: "v", 6: "t"}


class Rejected(ValueError):
    """Why a message is not accepted: 'structure', 'unknown kid', 'mac', 'replay'."""


class Verifier:
    def __init__(self, keys, algs=(5,), store=None):
        """store: an SQLite file (the device registry) where the highest accepted
        sequence number of each device is kept, so a restarted collector still
        refuses replays."""
        self.keys = dict(keys)  # kid (str) -> key bytes
        self.algs = algs
        self.last_seq = {}  # kid -> highest sequence number accepted
        self.db = None
        if store is not None:
            import sqlite3

            self.db = sqlite3.connect(str(store))
            self.db.execute("CREATE TABLE IF NOT EXISTS last_seq (device_id TEXT PRIMARY KEY, seq INTEGER)")
            self.last_seq = dict(self.db.execute("SELECT device_id, seq FROM last_seq"))

    def accept(self, data, kind="senml"):
        """-> the readings [(name, unit, value, time)]; kind="health": the
        node's health record (a dict) from <topic>/health."""
        try:
            msg = cbor2.loads(data)
            if not isinstance(msg, cbor2.CBORTag) or msg.tag != 17 or len(msg.value) != 4:
                raise Rejected("structure")
            protected_b, unprotected, payload, tag = msg.value
            protected = cbor2.loads(protected_b)
            kid = bytes(unprotected[KID]).decode()
            alg, seq = protected[ALG], protected[SEQ]
        except Rejected:
            raise
        except Exception as e:
            raise Rejected("structure: %s" % e)
        key = self.keys.get(kid)
        if key is None:
            raise Rejected("unknown kid %r" % kid)
        if alg not in self.algs:
            raise Rejected("alg %r not accepted" % alg)
        mac_structure = cbor2.dumps(["MAC0", protected_b, b"", payload])
        expected = hmac.new(key, mac_structure, hashlib.sha256).digest()[:TAG_LEN[alg]]
        if not hmac.compare_digest(expected, tag):
            raise Rejected("mac")
        if seq <= self.last_seq.get(kid, -1):
            raise Rejected("replay: seq %d after %d" % (seq, self.last_seq[kid]))
        if kind == "health":
            try:
                rec = cbor2.loads(payload)
            except Exception as e:
                raise Rejected("structure: %s" % e)
            if not isinstance(rec, dict):
                raise Rejected("structure: a health record is a map")
            self._accepted(kid, seq)
            return rec
        try:
            readings = senml_readings(payload)
        except Exception as e:
            raise Rejected("structure: %s" % e)
        for r in readings:  # a device's key speaks for that device only
            if not r[0].startswith(kid + "/"):
                raise Rejected("name %r is not device %r's" % (r[0], kid))
        self._accepted(kid, seq)
        return readings

    def _accepted(self, kid, seq):
        self.last_seq[kid] = seq
        if self.db is not None:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO last_seq VALUES (?, ?)", (kid, seq))


def senml_readings(payload):
    """RFC 8428 resolution: base name/time/unit apply to the records after them."""
    out = []
    bn, bt, bu = "", 0, None
    for rec in cbor2.loads(payload):
        bn = rec.get(-2, bn)
        bt = rec.get(-3, bt)
        bu = rec.get(-4, bu)
        out.append((bn + rec.get(0, ""), rec.get(1, bu), rec.get(2), bt + rec.get(6, 0)))
    return out
