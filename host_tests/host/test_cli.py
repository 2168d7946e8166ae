"""The `petrel` command: vm run, vm test, sim (with the collector storing what arrives)."""

import subprocess
import sys

from petrel import paths

PETREL = [sys.executable, "-m", "petrel.cli"]


def run(*args, **kw):
    return subprocess.run(PETREL + list(args), capture_output=True, text=True, timeout=300,
                          cwd=paths.ROOT, **kw)


def test_vm_run_uses_the_simulated_board(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys, machine, time, eventlog\n"
        "print(sys.implementation.name, machine.reset_cause(), len(machine.unique_id()))\n"
        "time.sleep(3)\n"
        "print(time.ticks_ms() >= 3000)\n"
        "sys.exit(3)\n")
    r = run("vm", "run", str(script))
    assert r.stdout.split() == ["micropython", "1", "6", "True"]
    assert r.returncode == 3


def test_vm_run_missing_file_is_a_usage_error(tmp_path):
    r = run("vm", "run", str(tmp_path / "nope.py"))
    assert r.returncode == 2
    assert "does not exist" in r.stderr


def test_vm_test_reports_failures(tmp_path):
    (tmp_path / "test_demo.py").write_text(
        "def test_good():\n    assert 1 + 1 == 2\n\n"
        "def test_bad():\n    assert 1 + 1 == 3, 'arithmetic'\n")
    from petrel import vm

    proc = subprocess.run(
        [paths.micropython_binary(), str(paths.ROOT / "host_tests" / "vmrunner.py"), str(tmp_path)],
        env=vm.vm_env([tmp_path]), capture_output=True, text=True, timeout=60)
    assert "PASS test_demo::test_good" in proc.stdout
    assert "FAIL test_demo::test_bad" in proc.stdout
    assert "AssertionError: arithmetic" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "vm: 1 passed, 1 failed"
    assert proc.returncode == 1


def test_vm_test_runs_one_selected_test():
    r = run("vm", "test", "test_time::test_ticks_ms_wraps_at_2_pow_30")
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().splitlines() == [
        "PASS test_time::test_ticks_ms_wraps_at_2_pow_30", "vm: 1 passed, 0 failed"]


def test_sim_plays_wakes_and_summarises(tmp_path):
    r = run("sim", "--boots", "14", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("rst:0x5 (DEEPSLEEP_RESET)") == 13
    assert "I 000000 boot: cause=deepsleep wake=timer boot=3 rtc=ok" in r.stdout
    assert r.stdout.count(" wake: cause=") == 14  # one summary line per wake
    summary = r.stdout.split("# summary")[1]
    # the power-on wake and the 13th sample upload: 3 + 36 readings stored
    assert "wakes 14 over" in summary
    assert "readings taken 42; stored 39 in %s; still queued on the node 3;" % (
        tmp_path / "readings.sqlite") in summary
    assert "uplinks 2" in summary and "mAh/day" in summary and "years" in summary
    assert "this run's own average" in summary and "petrel energy --board esp32-node" in summary


def test_sim_pushes_a_configuration_mid_run_and_shows_the_node_taking_it(tmp_path):
    # make sim PUSH=24: the fleet side pushes sample_s doubled after boot 12;
    # the node takes it at its next uplink (boot 13), switches it in at the
    # next boot and confirms it at the uplink after, and wakes 600 s apart
    import re

    r = run("sim", "--boots", "26", "--push-config-at", "12", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the fleet side pushed config v" in r.stdout and "(sample_s 300 -> 600)" in r.stdout
    line = re.search(r"pushed config v\d+ after boot 12: (.*)", r.stdout).group(1)
    assert line == "staged at boot 13, on trial at boot 14, confirmed at boot 25", line
    sleeps = [int(x) for x in re.findall(r" wake: .* sleep_ms=(\d+)", r.stdout)]
    assert all(abs(x - 300000) < 2000 for x in sleeps[2:12]) and all(abs(x - 600000) < 2000 for x in sleeps[14:])
    from petrel import store

    with store.open(str(tmp_path / "readings.sqlite")) as st:
        h = [d["health"] for d in st.devices() if d["device"] == "node-1"][0]
    assert h["cfgv"] == int(re.search(r"pushed config v(\d+)", r.stdout).group(1)) and h["dref"] == 0


def test_sim_publishes_an_app_update_mid_run_and_shows_the_node_taking_it(tmp_path):
    # make sim UPDATE=4: after boot 4 the fleet side publishes today's firmware
    # marked "-update" (about 120 KB of .mpy in 3584-byte chunks); the node,
    # uplinking every 3 samples, takes 4 chunks per uplink, stages it, runs
    # it on trial at the next boot and confirms it with that boot's uplink;
    # the health record of the uplink after says so (appt 0)
    import re

    r = run("sim", "--boots", "38", "--update-at", "4", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    line = re.search(r"app update v1 \(0\.6\.0-update, (\d+) bytes, (\d+) chunks\) after boot 4: (.*)",
                     r.stdout)
    assert line, r.stdout[-3000:]
    size, chunks, steps = int(line.group(1)), int(line.group(2)), line.group(3)
    assert size >= 60000 and chunks == -(-size // 3584)
    seen = dict((w.strip(), int(n)) for w, n in re.findall(r"([a-z ]+) at boot (\d+)", steps))
    assert list(seen) == ["accepted", "staged", "on trial", "confirmed", "running"], steps
    assert seen["on trial"] == seen["staged"] + 1 == seen["confirmed"] == seen["running"]
    assert "fw=0.6.0-update" in r.stdout.split("# summary")[0].split("switched in: on trial")[1]
    from petrel import store

    with store.open(str(tmp_path / "readings.sqlite")) as st:
        h = [d["health"] for d in st.devices() if d["device"] == "node-1"][0]
    assert (h["appv"], h["appt"], h["aprb"], h["upd"]) == (1, 0, 0, "")
    taken = sum(int(n) for n in re.findall(r" wake: .* readings=(\d+)", r.stdout))
    queued = int(re.findall(r" wake: .* queue=(\d+)", r.stdout)[-1])
    assert "readings taken %d; stored %d" % (taken, taken - queued) in r.stdout  # none lost on the way


def test_sim_update_at_needs_the_vm():
    r = run("sim", "--boots", "5", "--update-at", "2", "--interpreter", "cpython")
    assert r.returncode == 2 and "--update-at needs --interpreter vm" in r.stderr
    assert "Traceback" not in r.stderr


def test_sim_stores_every_reading_sent_once_and_the_summary_says_so(tmp_path):
    """make sim's collector: each reading of every `sample:` line the node
    logged and sent is in the store once, with its value, unit and time; the
    ones still queued (the last wake's `queue=`) are not; the summary's numbers
    are the database's; the temperature is plotted."""
    import re
    from decimal import Decimal

    from petrel import store

    r = run("sim", "--boots", "14", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    db = tmp_path / "readings.sqlite"
    samples = [(int(m.group(4)), (int(m.group(1)), int(m.group(2)), int(m.group(3)))) for m in
               re.finditer(r" sample: t=(-?\d+) rh=(\d+) bat=(\d+) at=(\d+)", r.stdout)]
    assert len(samples) == 14
    clock = int(re.search(r"clock: set unix=(\d+)", r.stdout).group(1))
    queued = int(re.findall(r" wake: .* queue=(\d+) ", r.stdout)[-1])
    expected = [(at, ch, m, unit, scale) for at, vals in samples for ch, m, unit, scale in
                zip(("t", "rh", "bat"), vals, ("Cel", "%RH", "V"), (100, 10, 1000))]
    sent, still = expected[:len(expected) - queued], expected[len(expected) - queued:]
    assert queued == 3 and len(sent) == 39
    with store.open(str(db)) as st:
        rows = list(st.readings(device="node-1"))
        counts = st.counts()
    assert len(rows) == len(sent) == counts["readings"]
    assert len(set((x.channel, x.rid) for x in rows)) == len(rows)
    left = list(rows)
    for at, ch, m, unit, scale in sent:
        match = [x for x in left if x.channel == ch and x.unit == unit and
                 Decimal(x.exact) == Decimal(m) / scale and x.value == m / scale and
                 # a stamp below 2**28 is relative to the power-on (the power-on
                 # wake's, taken after its break-in window): dated once the clock is set
                 (x.time == at if at >= 1 << 28 else abs(x.time - clock) < 10)]
        assert len(match) == 1, (at, ch, m, match)
        left.remove(match[0])
        assert match[0].quality == "dated" if at else match[0].quality in ("dated", "relative")
    assert not [x for x in rows if (x.time, x.channel) in [(at, ch) for at, ch, *_ in still]]
    summary = r.stdout.split("# summary")[1]
    line = re.search(r"readings taken (\d+); stored (\d+) in (\S+); still queued on the node "
                     r"(\d+); uplinks \d+, health records (\d+), messages refused (\d+)", summary)
    assert line, summary
    assert (int(line.group(1)), int(line.group(2)), line.group(3), int(line.group(4))) == (
        len(expected), counts["readings"], str(db), queued)
    assert int(line.group(5)) == counts["health"]
    assert int(line.group(6)) == sum(counts["refused"].values())
    assert "petrel readings --db %s" % db in summary and "petrel plot --db %s" % db in summary
    png = tmp_path / "temperature.png"
    assert "temperature (13 readings) plotted to %s" % png in summary
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_help_explains_each_command():
    r = run("--help")
    assert r.returncode == 0
    for word in ("vm", "sim", "vboard", "flash", "deploy", "provision", "monitor", "run", "repl",
                 "config", "devices"):
        assert word in r.stdout
        assert run(word, "--help").returncode == 0
    r = run("vm", "run", "--help")
    assert "MICROPYPATH" in r.stdout
    assert run().returncode == 2


def test_vm_run_ends_quietly_at_deepsleep(tmp_path):
    script = tmp_path / "sleepy.py"
    script.write_text("import machine, sys\nprint(sys.argv)\nmachine.deepsleep(1000)\nprint('never')\n")
    r = run("vm", "run", str(script), "x")
    assert r.returncode == 0
    assert r.stdout.strip() == "[%r, 'x']" % str(script)
    assert "[sim] board halted: deepsleep(1000)" in r.stderr


def test_vm_test_of_a_test_that_does_not_exist_says_so():
    r = run("vm", "test", "test_nonexistent")
    assert r.returncode == 2
    assert r.stderr.strip() == "petrel vm test: no test module test_nonexistent in host_tests/portable " \
                               "or host_tests/vm"
    r = run("vm", "test", "test_time::test_nope")
    assert r.returncode == 2 and "no test test_nope in host_tests/portable/test_time.py" in r.stderr


def test_vm_test_keeps_the_firmwares_log_lines_apart_from_failures(tmp_path):
    (tmp_path / "test_logs.py").write_text(
        "import eventlog\n\n"
        "def test_quiet_warning():\n    eventlog.warn('demo', 'expected=1')\n\n"
        "def test_failing():\n    eventlog.error('demo', 'before=1')\n    assert False, 'boom'\n")
    from petrel import vm

    import io

    out = io.StringIO()
    rc = vm.run_portable_tests(["test_logs"], directories=[tmp_path], out=out)
    lines = out.getvalue().splitlines()
    assert rc == 1
    assert not any("expected=1" in line for line in lines)  # a passing test's log: counted
    assert lines.index("FAIL test_logs::test_failing") > 0
    assert any("demo: before=1" in line for line in lines)  # a failing test's: shown
    assert lines[-2].startswith("vm: 1 error, 1 warning log lines from the firmware under test not shown")
    assert lines[-1] == "vm: 1 passed, 1 failed"
    out = io.StringIO()
    vm.run_portable_tests(["test_logs"], directories=[tmp_path], out=out, verbose=True)
    assert "demo: expected=1" in out.getvalue()


def test_user_errors_are_one_line_with_the_right_exit_code():
    r = run("sim", "--board", "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("petrel sim: no board profile 'nope' (known: esp32-c3-devkitm")
    # a bad flag: the subcommand's usage, not the top level's
    r = run("deploy", "--bogus")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: petrel deploy ") and "petrel deploy: error: unrecognized " \
        "arguments: --bogus" in r.stderr
    r = run("vm", "test", "--bogus")
    assert r.stderr.startswith("usage: petrel vm test ")
    r = run("sim", "--help")
    assert "default 48" in r.stdout  # what make sim runs


def test_vm_test_shows_what_came_last_when_the_vm_dies_mid_run(tmp_path):
    (tmp_path / "test_dies.py").write_text(
        "import eventlog\neventlog.error('demo', 'last=1')\nraise ValueError('the module itself')\n")
    from petrel import vm

    import io

    out = io.StringIO()
    rc = vm.run_portable_tests(["test_dies"], directories=[tmp_path], out=out)
    text = out.getvalue()
    assert rc != 0
    assert "demo: last=1" in text and "ValueError: the module itself" in text
    assert text.splitlines()[-1].startswith("vm: the runner ended without its summary (exit ")
