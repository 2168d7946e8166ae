"""The `petrel` command: vm run, vm test, sim."""

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


def test_sim_plays_wakes_and_summarises():
    r = run("sim", "--boots", "14")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("rst:0x5 (DEEPSLEEP_RESET)") == 13
    assert "I 000000 boot: cause=deepsleep wake=timer boot=3 rtc=ok" in r.stdout
    assert r.stdout.count(" wake: cause=") == 14  # one summary line per wake
    summary = r.stdout.split("# summary")[1]
    # the power-on wake and the 13th sample upload: 3 + 36 readings, all verified
    assert "wakes 14 over" in summary
    assert "readings taken 42, arrived and verified 39" in summary and "uplinks 2" in summary
    assert "mAh/day" in summary and "years" in summary


def test_help_explains_each_command():
    r = run("--help")
    assert r.returncode == 0
    for word in ("vm", "sim", "vboard", "flash", "deploy", "provision", "monitor"):
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
