"""`petrel energy`: what a configuration costs the battery.

Charge per wake = sum of current x time over its phases; a day = sleep current
x the time asleep + every wake + every uplink. Currents and phase times come
from the board profile's "energy" section (boards/*.json), each with its
source (../shared/reference/energy.md, Espressif datasheets). Nothing here is
a loopback timing: phases a simulation cannot know (Wi-Fi association, DHCP,
a TLS handshake on the chip) take the profile's figures.

The TLS handshake's delayed-ACK waits: with Nagle on the node's socket, the
client's last handshake flight (mbedTLS writes it in three pieces) waits for
the broker's ACK of the first piece, which a Linux broker delays by
"delack_ms" (Linux's TCP_DELACK_MIN, 40 ms). The profile says how many such
waits a PSK and a certificate handshake have ("tls_psk_stalls",
"tls_cert_stalls") and whether the node sets TCP_NODELAY ("tcp_nodelay": lib/mqtt
does where the port has it, and the ESP32's does): the report states what the
option saves per uplink and over the battery's life (nodelay_saving()).

Beside the model: simulated(profile, phases) prices a simulated run, the
ledger of virtual time per phase the simulated board keeps (boot, cpu, radio,
tls, sleep; bootrun.Boot.phases, BootRunner.totals()).
"""

import sys

from . import boards

DAY_S = 86400


class Scenario:
    def __init__(self, name, uplink_every, wifi, tls):
        self.name = name
        self.uplink_every = uplink_every  # samples per uplink (1: every sample)
        self.wifi = wifi  # "dhcp" | "static" | "cached"
        self.tls = tls  # "cert" | "psk"


def phases(e, scenario):
    """[(phase, mA, ms, per)] with per = "wake" or "uplink"."""
    out = [("boot", e["cpu_ma"], e["boot_ms"], "wake"),
           ("sample", e["cpu_ma"], e["sample_ms"], "wake")]
    wifi_ms = {"dhcp": e["wifi_dhcp_ms"], "static": e["wifi_static_ms"],
               "cached": e["wifi_cached_ms"]}[scenario.wifi]
    tls_ms = (e["tls_cert_ms"] if scenario.tls == "cert" else e["tls_psk_ms"]) + stall_ms(e, scenario.tls)
    out += [("wifi", e["radio_ma"], wifi_ms, "uplink"),
            ("tls", e["radio_ma"], tls_ms, "uplink"),  # the radio stays up through it
            ("mqtt", e["radio_ma"], e["mqtt_ms"], "uplink"),
            # the mailbox with nothing waiting: its health fields' bytes, no round trip
            ("down", e["radio_ma"], DOWN_HEALTH_BYTES * 8.0 / e.get("radio_kbps", 2000), "uplink")]
    return out


def stall_ms(e, tls):
    """Delayed-ACK waits in one handshake: none with TCP_NODELAY on the node
    (or a profile that does not say), else the profile's count x delack_ms."""
    if e.get("tcp_nodelay", True) or "delack_ms" not in e:
        return 0
    return e["tls_%s_stalls" % tls] * e["delack_ms"]


def nodelay_saving(profile, sample_s, every):
    """What TCP_NODELAY on the node saves against a Linux broker, from the
    profile's figures. -> {tls: (ms per uplink, mC per uplink, years without,
    years with)} for "psk" and "cert" (the best scenario's Wi-Fi), or {}
    when the profile has no delayed-ACK figures."""
    import copy

    e = profile["energy"]
    if "delack_ms" not in e:
        return {}
    out = {}
    for tls in ("psk", "cert"):
        sc = Scenario("x", every, SCENARIOS[-1].wifi, tls)
        years = []
        for nodelay in (False, True):
            p = copy.deepcopy(profile)
            p["energy"]["tcp_nodelay"] = nodelay
            years.append(life_years(p, sum(daily(p, sample_s, sc).values())))
        p = copy.deepcopy(profile)
        p["energy"]["tcp_nodelay"] = False
        ms = stall_ms(p["energy"], tls)
        out[tls] = (ms, e["radio_ma"] * ms / 1000.0, years[0], years[1])
    return out


# The downlink mailbox (firmware/app/session.py, app/mailbox.py), measured on
# the simulated board against the firmware before it (one run, TLS-PSK, the
# collector's time service off): an uplink with nothing waiting sends 70 B
# more (the health record's downlink fields) and waits no round trip more (a
# persistent session: the broker sends what waits ahead of the PUBACKs the
# session waits for anyway); a waiting message costs its bytes and one round
# trip; at a power-on the node waits up to TIME_WAIT_MS for the fleet side's
# time, once, answered within a round trip and the collector (3 ms on
# loopback, host_tests/host/test_collect.py) where a time service runs.
# App updates' fields (appv appt aprb aperr upd uperr fwv fwt, app/health.py)
# add 71 B more to every health record, as SenML CBOR with nothing under way.
DOWN_HEALTH_BYTES = 70 + 71
TIME_WAIT_MS = 1500  # firmware/app/cycle.py
COLLECTOR_MS = 3


def downlink_cost(profile):
    """-> [(what, radio ms, mC)] of the downlink, from the profile's round
    trip and radio figures."""
    e = profile["energy"]
    kbps = e.get("radio_kbps", 2000)
    rtt = e.get("rtt_ms", 10)

    def row(what, ms):
        return (what, ms, e["radio_ma"] * ms / 1000.0)

    return [row("every uplink, nothing waiting (%d B of health fields, 0 round trips)" % DOWN_HEALTH_BYTES,
                DOWN_HEALTH_BYTES * 8.0 / kbps),
            row("a 1 KiB message waiting (its bytes, 1 round trip)", 1024 * 8.0 / kbps + rtt),
            row("a power-on, the fleet's time answered (1 round trip + the collector)", rtt + COLLECTOR_MS),
            row("a power-on, no time service answering (the wait, once)", TIME_WAIT_MS)]


# An app update (firmware/app/update.py, README "Updating the application"):
# the node fetches UPDATE_CHUNKS chunks in each wake that has an uplink
# session anyway (no wake of its own): one SUBSCRIBE round trip, then the
# chunks' bytes (each with its 32-byte hash link and its topic); the
# UNSUBSCRIBE is not waited for. The wake after the switch makes one uplink
# even when none is due (the trial's), a whole session's charge.
UPDATE_CHUNKS = 4  # firmware/app/config.py's default update_chunks
UPDATE_CHUNK = 2048  # petrel update publish's default --chunk
UPDATE_LINK = 32 + 40  # per chunk: its hash link and a topic of ~40 B


def update_cost(profile, image_bytes, every, chunk=UPDATE_CHUNK, per_wake=UPDATE_CHUNKS,
                wifi="cached", tls="psk"):
    """-> dict: chunks, uplink wakes that carry them, radio ms and mC per such
    wake, the trial's extra uplink (mC), the whole update's mC and mAh, and
    the hours it takes at `every` samples per uplink of the profile's node."""
    e = profile["energy"]
    kbps = e.get("radio_kbps", 2000)
    chunks = -(-image_bytes // chunk)
    wakes = -(-chunks // per_wake)
    full = per_wake * (chunk + UPDATE_LINK) * 8.0 / kbps + e.get("rtt_ms", 10)
    last_n = chunks - per_wake * (wakes - 1)
    last = (image_bytes - chunk * (chunks - last_n) + last_n * UPDATE_LINK) * 8.0 / kbps + e.get("rtt_ms", 10)
    radio_ms = full * (wakes - 1) + last
    trial = per_wake_mc(profile, Scenario("trial", every, wifi, tls))
    mc = e["radio_ma"] * radio_ms / 1000.0 + trial
    return {"chunks": chunks, "wakes": wakes, "wake_ms": full, "wake_mc": e["radio_ma"] * full / 1000.0,
            "trial_mc": trial, "total_mc": mc, "total_mah": mc / 3600.0}


# A boot from deep sleep built from its measured parts (fleet.md: glenn20's
# upy-esp32-experiments boot-time, PPK2, an ESP32 module; profile fields
# boot_*_ms with their sources). The parts do not include loading the app's
# code: nobody published that for .mpy from littlefs or from ROMFS.
BOOT_PARTS = (("second-stage bootloader, image validation skipped", "boot_loader_ms"),
              ("nvs_flash_init (MICROPY_BOARD_STARTUP, every boot)", "boot_nvs_ms"),
              ("app_main() -> _boot.py", "boot_start_ms"))


def boot_layouts(e):
    """-> [(layout, ms)]: the boot's floor with the stock mount of "vfs" and
    without any mount, from the profile's parts; [] when it has none."""
    if not all(k in e for _, k in BOOT_PARTS) or "boot_mount_ms" not in e:
        return []
    base = sum(e[k] for _, k in BOOT_PARTS)
    return [("vfs mounted, trivial main.py", base + e["boot_mount_ms"]),
            ("no mount, frozen code", base + e["boot_nomount_ms"])]


def boot_range(profile, sample_s, every):
    """-> [(layout, boot ms, years)] for the best scenario with each measured
    boot floor in place of the profile's boot_ms (the mounted one is the
    conservative end: it leaves out loading the app's code)."""
    import copy

    sc = Scenario("x", every, SCENARIOS[-1].wifi, SCENARIOS[-1].tls)
    out = []
    for layout, ms in boot_layouts(profile["energy"]):
        p = copy.deepcopy(profile)
        p["energy"]["boot_ms"] = ms
        out.append((layout, ms, life_years(p, sum(daily(p, sample_s, sc).values()))))
    return out


def romfs_saving(profile, sample_s, every):
    """What the app as a ROMFS image saves per wake in the model. -> (ms, mC
    per wake, years now, years with it). ROMFS runs the code in place but the
    stock firmware still mounts "vfs" (main.py is only found there), so the
    saving is the loading of the app's code, boot_ms above the mounted floor;
    0 when the profile's boot_ms is already at or below that floor."""
    import copy

    e = profile["energy"]
    layouts = boot_layouts(e)
    if not layouts:
        return None
    saved = max(0.0, e["boot_ms"] - layouts[0][1])
    sc = Scenario("x", every, SCENARIOS[-1].wifi, SCENARIOS[-1].tls)
    before = life_years(profile, sum(daily(profile, sample_s, sc).values()))
    p = copy.deepcopy(profile)
    p["energy"]["boot_ms"] = e["boot_ms"] - saved
    return saved, e["cpu_ma"] * saved / 1000.0, before, life_years(p, sum(daily(p, sample_s, sc).values()))


def daily(profile, sample_s, scenario):
    """-> {phase: mAh per day}, with "sleep"."""
    e = profile["energy"]
    wakes = DAY_S / sample_s
    uplinks = wakes / scenario.uplink_every
    out = {}
    awake_s = 0.0
    for name, ma, ms, per in phases(e, scenario):
        n = wakes if per == "wake" else uplinks
        out[name] = ma * ms / 1000.0 * n / 3600.0
        awake_s += ms / 1000.0 * n
    out["sleep"] = e["sleep_ua"] / 1000.0 * (DAY_S - awake_s) / 3600.0
    return out


def per_wake_mc(profile, scenario):
    """Charge of one wake with an uplink, in millicoulombs."""
    return sum(ma * ms / 1000.0 for _, ma, ms, _ in phases(profile["energy"], scenario))


def life_years(profile, mah_per_day):
    e = profile["energy"]
    usable = e["battery_mah"]
    days = 0.0
    # self-discharge takes its share of what is left each year
    while usable > 0 and days < 100 * 365:
        year = min(365.0, usable / (mah_per_day + usable * e["self_discharge_per_year"] / 365.0))
        usable -= year * mah_per_day + usable * e["self_discharge_per_year"] * year / 365.0
        days += year
    return days / 365.0


# What the simulated board's ledger phases draw (simstate.PHASES): the radio
# stays up through a TLS handshake, as in phases() above.
LEDGER_CURRENT_MA = {"boot": "cpu_ma", "cpu": "cpu_ma", "radio": "radio_ma", "tls": "radio_ma"}


def charge_mc(profile, phases_us):
    """A ledger (us per phase, from the simulated board) -> {phase: mC} at the
    profile's currents; sleep at sleep_ua."""
    e = profile["energy"]
    out = {}
    for p in phases_us:
        ma = e["sleep_ua"] / 1000.0 if p == "sleep" else e[LEDGER_CURRENT_MA[p]]
        out[p] = ma * phases_us[p] / 1000000.0
    return out


def simulated(profile, phases_us):
    """What a simulated run costs, scaled to a day: the ledger's span is the
    run's virtual time. -> {"mc": {phase: mC}, "mc_total", "days", "mah_per_day",
    "years"} (years with the profile's battery and self-discharge, as life_years)."""
    mc = charge_mc(profile, phases_us)
    days = sum(phases_us.values()) / 1e6 / DAY_S
    if days <= 0:
        raise ValueError("an empty ledger: no virtual time to scale to a day")
    total = sum(mc.values())
    mah_per_day = total / 3600.0 / days
    return {"mc": mc, "mc_total": total, "days": days, "mah_per_day": mah_per_day,
            "years": life_years(profile, mah_per_day)}


def simulated_report(profile, phases_us, out=sys.stdout, label="simulated"):
    """One block for printing beside report(): time, charge and share per phase."""
    s = simulated(profile, phases_us)
    w = out.write
    w("%s: %.2f days of virtual time, %.3f mAh/day, %.1f years\n"
      % (label, s["days"], s["mah_per_day"], s["years"]))
    for p in phases_us:
        w("  %-6s %12.1f s %10.1f mC %5.1f%%\n" % (p, phases_us[p] / 1e6, s["mc"][p],
                                                 100.0 * s["mc"][p] / (s["mc_total"] or 1)))
    return s


SCENARIOS = (
    Scenario("every sample, DHCP, certificate TLS", 1, "dhcp", "cert"),
    Scenario("hourly batch, DHCP, certificate TLS", None, "dhcp", "cert"),
    Scenario("hourly batch, cached BSSID + static IP, cert TLS", None, "cached", "cert"),
    Scenario("hourly batch, cached BSSID + static IP, TLS-PSK", None, "cached", "psk"),
)


def with_energy():
    """The board profiles that have an energy section."""
    out = []
    for n in boards.names():
        try:
            if "energy" in boards.load(n):
                out.append(n)
        except boards.ProfileError:
            pass
    return out


def check_args(board, sample_s, uplink_s, png):
    """A user's mistake as one line (ProfileError, exit 2), before anything is
    computed or written. -> the profile."""
    if sample_s < 1:
        raise boards.ProfileError("--sample-s %d: the seconds between samples must be at least 1" % sample_s)
    if uplink_s < 1:
        raise boards.ProfileError("--uplink-s %d: the seconds between uplinks must be at least 1" % uplink_s)
    if png:
        import os

        folder = os.path.dirname(os.path.abspath(png))
        if not os.path.isdir(folder):
            raise boards.ProfileError("--png %s: no folder %s to write the chart in" % (png, folder))
        if not os.access(folder, os.W_OK):
            raise boards.ProfileError("--png %s: the folder %s is not writable" % (png, folder))
    profile = boards.load(board)
    if "energy" not in profile:
        have = with_energy()
        raise boards.ProfileError(
            "board profile %s has no energy section (currents and phase times with their sources): "
            "use --board %s, or add one to boards/%s.json" % (board, " or --board ".join(have) or "?", board))
    return profile


def report(board, sample_s, uplink_s, out=sys.stdout, png=None):
    profile = check_args(board, sample_s, uplink_s, png)
    e = profile["energy"]
    every = max(1, uplink_s // sample_s)
    rows = []
    for s in SCENARIOS:
        sc = Scenario(s.name, s.uplink_every or every, s.wifi, s.tls)
        d = daily(profile, sample_s, sc)
        total = sum(d.values())
        rows.append((sc, d, total, life_years(profile, total)))
    w = out.write
    w("%s: %s\n" % (profile["name"], profile.get("description", "")))
    w("sample every %d s, uplink every %d samples (%d s); battery %d mAh, self-discharge %.0f%%/year\n\n"
      % (sample_s, every, every * sample_s, e["battery_mah"], e["self_discharge_per_year"] * 100))
    w("%-50s %9s %9s %9s %8s\n" % ("scenario", "mC/uplink", "mAh/day", "top phase", "years"))
    for sc, d, total, years in rows:
        top = max(d, key=d.get)
        w("%-50s %9.1f %9.3f %9s %8.1f\n" % (sc.name, per_wake_mc(profile, sc), total, top, years))
    w("\nwhere a day goes (mAh):\n")
    names = list(rows[0][1])
    w("%-50s " % "" + " ".join("%8s" % n for n in names) + "\n")
    for sc, d, _total, _years in rows:
        w("%-50s " % sc.name + " ".join("%8.3f" % d[n] for n in names) + "\n")
    w("\nwhat would move \"%s\" (%.1f years), one change at a time:\n"
      % (rows[-1][0].name, rows[-1][3]))
    for what, _before, after in levers(profile, sample_s, every):
        w("  %-62s %5.1f years\n" % (what, after))
    saving = nodelay_saving(profile, sample_s, every)
    if saving:
        w("\nTCP_NODELAY on the node (lib/mqtt sets it where the port has it; the ESP32's does):\n"
          "without it, each TLS handshake waits %d x %d ms (PSK) / %d x %d ms (certificate) for a\n"
          "Linux broker's delayed ACK with the radio on; the option saves per uplink:\n"
          % (e["tls_psk_stalls"], e["delack_ms"], e["tls_cert_stalls"], e["delack_ms"]))
        for tls, name in (("psk", "TLS-PSK"), ("cert", "certificate TLS")):
            ms, mc, before, after = saving[tls]
            w("  %-16s %4d ms of radio, %5.1f mC; battery life %.2f -> %.2f years\n"
              % (name, ms, mc, before, after))
    layouts = boot_layouts(e)
    if layouts:
        w("\nboot from its measured parts (boards/%s.json boot_*_ms; the app's code loading unmeasured):\n"
          % board)
        for layout, ms, years in boot_range(profile, sample_s, every):
            w("  %-40s %6.1f ms  %4.1f years\n" % (layout, ms, years))
        ms, mc, before, after = romfs_saving(profile, sample_s, every)
        w("  the app from ROMFS saves its code loading, not the mount: %.0f ms, %.1f mC a wake "
          "(%.2f -> %.2f years)%s\n" % (ms, mc, before, after,
                                         "" if ms else "; boot_ms %g is already below the mounted floor"
                                         % e["boot_ms"]))
    w("\nthe downlink mailbox (persistent session; README, \"Managing nodes in the field\"):\n")
    for what, ms, mc in downlink_cost(profile):
        w("  %-72s %7.1f ms %6.2f mC\n" % (what, ms, mc))
    u = update_cost(profile, 65536, every)
    w("\nan app update of 64 KiB (%d chunks of %d B, %d per uplink wake; README, \"Updating the application\"):\n"
      % (u["chunks"], UPDATE_CHUNK, UPDATE_CHUNKS))
    w("  %d uplink wakes carry it (%.1f hours at one uplink every %d s), each %.0f ms more radio, %.1f mC\n"
      % (u["wakes"], u["wakes"] * every * sample_s / 3600.0, every * sample_s, u["wake_ms"], u["wake_mc"]))
    w("  the trial's forced uplink %.1f mC; the whole update %.1f mC = %.4f mAh (%.2f%% of a day's %.3f mAh)\n"
      % (u["trial_mc"], u["total_mc"], u["total_mah"], 100 * u["total_mah"] / rows[-1][2], rows[-1][2]))
    if png:
        chart(rows, names, png, assumes(profile, board, sample_s, every))
        w("\nchart: %s\n" % png)
    return rows


def assumes(profile, board, sample_s, every):
    """What the chart assumes, said on it."""
    e = profile["energy"]
    return ("%s (boards/%s.json, its sources there): sample every %d s, uplink every %d samples; "
            "sleep %g uA, CPU %g mA, radio %g mA; battery %d mAh, %.0f%%/year self-discharge; "
            "TCP_NODELAY %s. A model from sourced figures, not a measurement."
            % (profile["name"], board, sample_s, every, e["sleep_ua"], e["cpu_ma"], e["radio_ma"],
               e["battery_mah"], e["self_discharge_per_year"] * 100,
               "on" if e.get("tcp_nodelay", True) else "off"))


def levers(profile, sample_s, every):
    """What would move the best scenario (the last): one change at a time, on
    a copy of the profile. -> [(what, years before, years after)]."""
    import copy

    base = SCENARIOS[-1]
    sc = Scenario(base.name, every, base.wifi, base.tls)

    def years(p, s=sample_s):
        return life_years(p, sum(daily(p, s, Scenario(sc.name, max(1, every * sample_s // s),
                                                       sc.wifi, sc.tls)).values()))

    now = years(profile)
    e = profile["energy"]
    out = []
    if "boot_frozen_ms" in e:
        p = copy.deepcopy(profile)
        p["energy"]["boot_ms"] = e["boot_frozen_ms"]
        out.append(("boot %d -> %d ms (code frozen into the firmware image)"
                    % (e["boot_ms"], e["boot_frozen_ms"]), now, years(p)))
    if "sleep_chip_ua" in e:
        p = copy.deepcopy(profile)
        p["energy"]["sleep_ua"] = e["sleep_chip_ua"]
        out.append(("board asleep at %g -> %g uA (the chip alone)" % (e["sleep_ua"], e["sleep_chip_ua"]),
                    now, years(p)))
    out.append(("sample every %d s instead of %d s, same uplink period" % (2 * sample_s, sample_s),
                now, years(profile, 2 * sample_s)))
    return out


def chart(rows, names, path, assumptions=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [sc.name.replace(", ", "\n", 1) for sc, _, _, _ in rows]
    bottom = [0.0] * len(rows)
    for n in names:
        vals = [d[n] for _, d, _, _ in rows]
        ax.bar(labels, vals, bottom=bottom, label=n)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for i, (_, _, total, years) in enumerate(rows):
        ax.text(i, bottom[i], "%.2f mAh/day\n%.1f years" % (total, years), ha="center", va="bottom",
                fontsize=8)
    ax.set_ylabel("mAh per day")
    ax.set_title("Where the battery goes, per phase")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylim(0, max(bottom) * 1.3)
    if assumptions:  # what the bars rest on, under the chart
        import textwrap

        fig.text(0.01, 0.01, "\n".join(textwrap.wrap("Assumes: " + assumptions, 150)), fontsize=6.5,
                 va="bottom")
        fig.tight_layout(rect=(0, 0.09, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd(args):
    try:
        report(args.board, args.sample_s, args.uplink_s, png=args.png)
    except boards.ProfileError as e:
        print("petrel energy: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:  # the chart's file, refused after the checks (a full disk)
        print("petrel energy: cannot write the chart: %s" % e, file=sys.stderr)
        return 2
    return 0


def register(sub):
    p = sub.add_parser(
        "energy", help="charge per wake, mAh per day and battery life for a configuration",
        description="Models the battery cost of a sampling/uplink configuration on a board "
                    "profile (its energy section: currents, phase times and their sources) and "
                    "compares scenarios: uplink at every sample, hourly batches, with a cached "
                    "BSSID and static IP, certificate TLS against TLS-PSK. Example: "
                    "petrel energy --board esp32-node --sample-s 300 --uplink-s 3600 --png energy.png")
    p.add_argument("--board", default="esp32-node",
                   help="board profile with an energy section (default esp32-node, the one that has it)")
    p.add_argument("--sample-s", type=int, default=300, help="seconds between samples (default 300)")
    p.add_argument("--uplink-s", type=int, default=3600, help="seconds between batched uplinks (default 3600)")
    p.add_argument("--png", help="also write a chart of the charge breakdown")
    p.set_defaults(func=_cmd)
