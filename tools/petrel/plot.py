"""`petrel plot`: a PNG of one device's channels over time, from the
collector's store (SQLite or PostgreSQL).

    petrel plot --db readings.sqlite --device node-1 --channel t rh -o node-1.png

One panel per unit (channels of the same unit share it), the unit on its axis,
the device in the title, times in UTC. A line is broken where no data arrived:
wherever two readings are further apart than twice the channel's median
spacing. Readings the node could not date are not plotted; the legend counts
them, and the caption counts readings dated only approximately (sent before
the node knew the time, dated on arrival).
"""

import argparse
import sys

from .readings import open_query


def series(rows):
    """{channel: {"unit", "t": [...], "v": [...], "undated": n, "relative": n}}
    from store rows in time order."""
    out = {}
    for r in rows:
        s = out.setdefault(r.channel, {"unit": r.unit, "t": [], "v": [], "undated": 0,
                                       "relative": 0})
        if r.time is None:
            s["undated"] += 1
            continue
        s["relative"] += r.quality == "relative"
        s["t"].append(float(r.time))
        s["v"].append(float(r.value))
    return out


def with_gaps(t, v):
    """(t, v) with a NaN inserted wherever the spacing exceeds twice the
    median spacing, so matplotlib breaks the line there."""
    if len(t) < 3:
        return list(t), list(v)
    steps = sorted(b - a for a, b in zip(t, t[1:]))
    limit = 2 * steps[len(steps) // 2]
    tt, vv = [t[0]], [v[0]]
    for i in range(1, len(t)):
        if t[i] - t[i - 1] > limit:
            tt.append((t[i] + t[i - 1]) / 2)
            vv.append(float("nan"))
        tt.append(t[i])
        vv.append(v[i])
    return tt, vv


def figure(device, data, channels):
    """The matplotlib Figure: a panel per unit in the order the channels are
    named. Channels with no reading at all are named in the caption."""
    import datetime

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    units = []
    for c in channels:
        if c in data and data[c]["unit"] not in units:
            units.append(data[c]["unit"])
    fig = Figure(figsize=(10, 2.6 * max(1, len(units)) + 0.8))
    axes = fig.subplots(max(1, len(units)), 1, sharex=True, squeeze=False)[:, 0]
    utc = datetime.timezone.utc
    for ax, unit in zip(axes, units):
        for c in channels:
            s = data.get(c)
            if s is None or s["unit"] != unit:
                continue
            t, v = with_gaps(s["t"], s["v"])
            label = "%s (%d)" % (c, len(s["t"]))
            if s["undated"]:
                label += ", %d undated not shown" % s["undated"]
            ax.plot([datetime.datetime.fromtimestamp(x, utc) for x in t], v, marker=".",
                    markersize=3, linewidth=1, label=label)
        ax.set_ylabel(unit or "(no unit)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("time (UTC)")
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes[-1].xaxis.get_major_locator(),
                                                                   tz=utc))
    fig.suptitle("device %s" % device)
    notes = []
    missing = [c for c in channels if c not in data]
    if missing:
        notes.append("no readings for %s" % ", ".join(missing))
    undated = sum(s["undated"] for s in data.values())
    if undated:
        notes.append("%d undated readings left out" % undated)
    rel = sum(s["relative"] for s in data.values())
    if rel:
        notes.append("%d readings dated on arrival (approximate)" % rel)
    notes.append("lines broken where readings are more than 2x the median spacing apart")
    fig.text(0.01, 0.01, "; ".join(notes), fontsize="small", color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot(st, device, channels, out, since=None, until=None):
    """Write the PNG; -> {channel: readings plotted} ({} : nothing to plot,
    no file written)."""
    data = {}
    for c in channels:
        data.update(series(st.readings(device=device, channel=c, since=since, until=until)))
    if not any(s["t"] or s["undated"] for s in data.values()):
        return {}
    figure(device, data, channels).savefig(out, dpi=100)
    return dict((c, len(s["t"])) for c, s in data.items())


def _cmd(args):
    q = open_query(args, "plot")
    if isinstance(q, int):
        return q
    st, since, until = q
    try:
        got = plot(st, args.device, args.channel, args.out, since, until)
    finally:
        st.close()
    if not got:
        print("petrel plot: no readings of %s channel %s in %s: nothing written (`petrel "
              "readings --db %s` lists what is there)" % (args.device, " ".join(args.channel),
                                                          args.db, args.db), file=sys.stderr)
        return 1
    print("%s: %s" % (args.out, ", ".join("%s %d readings" % kv for kv in sorted(got.items()))))
    return 0


def register(sub):
    p = sub.add_parser(
        "plot", help="a PNG of a device's channels over time, from the collector's store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split(": ", 1)[1].strip() + """

Exit codes: 0 written; 1 nothing to plot or the store could not be read; 2 bad usage.""",
        epilog="""example:
  petrel plot --db sim/readings.sqlite --device node-1 --channel t -o t.png
  petrel plot --db readings.sqlite --device node-1 --channel t rh bat --since 2026-01-01 -o node-1.png""")
    p.add_argument("--db", required=True, metavar="URL",
                   help="the store: a SQLite file (or sqlite:///path) or postgresql://...")
    p.add_argument("--device", required=True, metavar="D")
    p.add_argument("--channel", required=True, nargs="+", metavar="C",
                   help="one or more channel names (the name after <device>/)")
    p.add_argument("--since", metavar="T", help="from this time (Unix seconds or ISO-8601, UTC)")
    p.add_argument("--until", metavar="T", help="up to this time")
    p.add_argument("-o", "--out", required=True, metavar="PNG", help="the image to write")
    p.set_defaults(func=_cmd)
