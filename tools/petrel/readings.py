"""`petrel readings`: what the collector stored, out of its store (SQLite or
PostgreSQL, tools/petrel/store.py), by device, channel and time range, as CSV,
JSON or SenML JSON (RFC 8428), so a spreadsheet, a script or any SenML consumer
can take it.

    petrel readings --db readings.sqlite --device node-1 --channel t --since 2026-01-01
    petrel readings --db postgresql://petrel@db/petrel --format senml-json > out.json

Values are written as the exact decimal the node measured ("21.53", never
21.529999...). Readings the node could not date (time quality "undated") have
no time: an empty cell in CSV, null in JSON, and the must-understand label
"undated_": true with no "t" in SenML, so a SenML reader that does not know
the label refuses the pack rather than date them "now" (RFC 8428 section 4.4).
"""

import argparse
import datetime
import json
import math
import re
import sys
from pathlib import Path

FORMATS = ("csv", "json", "senml-json")
CSV_HEADER = "device,channel,time,unit,value,flags,quality,id"
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


class Usage(Exception):
    """A bad argument: nothing was read."""


def parse_time(text):
    """Unix seconds (float) from '1767225600', ISO-8601 '2026-01-01',
    '2026-01-01T10:00', '2026-01-01T10:00:00Z' or with an offset; a time
    without an offset is UTC."""
    try:
        return float(text)
    except ValueError:
        pass
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.datetime.fromisoformat(s)
    except ValueError:
        raise Usage("time %r: give Unix seconds or ISO-8601 such as 2026-01-01T10:00:00Z" % text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def iso(t):
    """ISO-8601 UTC with a Z; milliseconds only when the time has them."""
    if t is None:
        return ""
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    if abs(t - round(t)) < 5e-4:
        return d.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (d.microsecond // 1000)


def number(row):
    """The value as a JSON number: the exact decimal the node sent when the
    store has it, else the shortest repr of the float; None if not finite."""
    exact = getattr(row, "exact", None)
    if exact is not None and _NUMBER.match(str(exact)):
        return str(exact)
    v = float(row.value)
    if not math.isfinite(v):
        return None
    return repr(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


def _time_number(t):
    return repr(int(t)) if t == int(t) else repr(round(t, 6))


def open_store(url):
    """The store at url; a SQLite path that does not exist is a usage error
    (store.open would create an empty one)."""
    from . import store

    if not url.startswith(("postgresql://", "postgres://")):
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
        if not Path(path).is_file():
            raise Usage("--db %s: no such store (a SQLite file written by petrel collect, "
                        "or a postgresql:// URL)" % url)
    return store.open(url)


def write(rows, fmt, out):
    """Stream rows to out in fmt; -> (written, left out: values JSON cannot hold)."""
    n = skipped = 0
    if fmt == "csv":
        import csv

        w = csv.writer(out, lineterminator="\n")
        out.write(CSV_HEADER + "\n")
        for r in rows:
            v = number(r)
            w.writerow([r.device, r.channel, iso(r.time), r.unit or "",
                        v if v is not None else repr(float(r.value)), r.flags or 0,
                        r.quality, r.rid])
            n += 1
        return n, 0
    out.write("[")
    for r in rows:
        v = number(r)
        if v is None:
            skipped += 1
            continue
        out.write(",\n " if n else "\n ")
        out.write(senml_record(r, v) if fmt == "senml-json" else json_record(r, v))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n, skipped


def json_record(r, v):
    return ('{"device": %s, "channel": %s, "time": %s, "unix": %s, "unit": %s, "value": %s, '
            '"flags": %d, "quality": %s, "id": %d}' % (
                json.dumps(r.device), json.dumps(r.channel),
                json.dumps(iso(r.time)) if r.time is not None else "null",
                _time_number(r.time) if r.time is not None else "null",
                json.dumps(r.unit), v, r.flags or 0, json.dumps(r.quality), r.rid))


def senml_record(r, v):
    """One resolved SenML record (RFC 8428 section 4.6): n, u, v, t in every
    record, so no base fields carry over and any record stands alone."""
    parts = ['"n": %s' % json.dumps("%s/%s" % (r.device, r.channel))]
    if r.unit:
        parts.append('"u": %s' % json.dumps(r.unit))
    parts.append('"v": %s' % v)
    if r.time is None:
        parts.append('"undated_": true')
    else:
        parts.append('"t": %s' % _time_number(r.time))
    if r.flags:
        parts.append('"flags": %d' % r.flags)
    return "{" + ", ".join(parts) + "}"


def open_query(args, command):
    """--db opened, --since/--until parsed -> (store, since, until), or the
    exit code after saying what is wrong (2 bad usage, 1 store unusable)."""
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        return open_store(args.db), since, until
    except Usage as e:
        print("petrel %s: %s" % (command, e), file=sys.stderr)
        return 2
    except Exception as e:  # a store that cannot be opened: say which and why
        print("petrel %s: cannot open %s: %s" % (command, args.db, e), file=sys.stderr)
        return 1


def _cmd(args):
    q = open_query(args, "readings")
    if isinstance(q, int):
        return q
    st, since, until = q
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        rows = st.readings(device=args.device, channel=args.channel, since=since, until=until,
                           limit=args.limit)
        n, skipped = write(rows, args.format, out)
    finally:
        if args.out:
            out.close()
        st.close()
    if skipped:
        print("petrel readings: %d readings left out: value not a finite number" % skipped,
              file=sys.stderr)
    if args.out:
        print("%d readings written to %s" % (n, args.out), file=sys.stderr)
    return 0


def register(sub):
    p = sub.add_parser(
        "readings", help="list or export the readings the collector stored (csv, json, SenML)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split(": ", 1)[1].strip() + """

Exit codes: 0 written; 1 the store could not be read; 2 bad usage.""",
        epilog="""example:
  petrel readings --db sim/readings.sqlite --device node-1 --channel t --format csv
  petrel readings --db readings.sqlite --since 2026-01-01T00:00Z --until 2026-01-02 \\
      --format senml-json -o day.json""")
    p.add_argument("--db", required=True, metavar="URL",
                   help="the store: a SQLite file (or sqlite:///path) or postgresql://...")
    p.add_argument("--device", metavar="D", help="only this device")
    p.add_argument("--channel", metavar="C", help="only this channel (the name after <device>/)")
    p.add_argument("--since", metavar="T", help="from this time on (Unix seconds or ISO-8601, UTC "
                   "unless it has an offset); undated readings have no time and are left out")
    p.add_argument("--until", metavar="T", help="up to this time")
    p.add_argument("--limit", type=int, metavar="N", help="at most N readings")
    p.add_argument("--format", choices=FORMATS, default="csv",
                   help="csv (a header, times ISO-8601 UTC; default), json (an array of "
                        "objects) or senml-json (RFC 8428)")
    p.add_argument("-o", "--out", metavar="FILE", help="write to FILE (default: standard output)")
    p.set_defaults(func=_cmd)
