"""`petrel flash` end to end: the real esptool against esp32-mock-bootloader, which speaks
the ESP ROM serial protocol (and esptool's flasher stub) on a TCP port."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from petrel import boards, cli, flash


# The mock (0.3.0) waits 50 ms for esptool's acknowledgement of a read-flash
# packet and then drops the read without its MD5 ("Serial data stream
# stopped"); whether esptool answers within 50 ms depends on how busy the
# machine is. The stub on a chip waits for it; so does the mock run here.
MOCK = ("import sys\n"
        "import esp32_mock_bootloader.server as server\n"
        "server._CLIENT_RECV_TIMEOUT = 2.0\n"
        "from esp32_mock_bootloader.cli import main\n"
        "sys.exit(main())\n")


@pytest.fixture(scope="module")
def mocks(tmp_path_factory):
    """mocks(chip) -> socket:// URL of a mock bootloader answering as that chip (one per chip)."""
    tmp = tmp_path_factory.mktemp("mock")
    # The mock keeps a registry of instances; keep ours out of the shared one in /tmp.
    env = dict(os.environ, ESP32_MOCK_BOOTLOADER_STATE_DIR=str(tmp / "state"))
    started = {}

    def get(chip):
        if chip not in started:
            port_file = tmp / ("port-" + chip)
            proc = subprocess.Popen(
                [sys.executable, "-c", MOCK, "run", "--chip", chip,
                 "--port", "0", "--port-file", str(port_file),
                 "--timeout", "300"],  # an orphan (a killed test run) still goes away
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 15
            while not (port_file.exists() and port_file.read_text().strip()):
                assert proc.poll() is None and time.monotonic() < deadline, "mock did not start"
                time.sleep(0.02)
            started[chip] = (proc, "socket://127.0.0.1:" + port_file.read_text().strip())
        return started[chip][1]

    yield get
    for proc, _ in started.values():
        proc.send_signal(signal.SIGINT)  # its clean shutdown path
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def image(tmp_path, name, size, seed):
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def petrel(*args):
    return cli.main(["flash"] + [str(a) for a in args])


def test_flash_writes_verifies_and_reads_back(mocks, tmp_path, capsys):
    img = image(tmp_path, "fw.bin", 160 * 1024, seed=1)
    back = tmp_path / "back.bin"
    assert petrel(img, "--port", mocks("esp32"), "--read-back", back) == 0
    out = capsys.readouterr().out
    assert "Writing at 0x" in out  # esptool's progress reached the user
    assert "Hash of data verified." in out  # write-flash's own MD5 check
    assert "Verification successful" in out  # the separate verify-flash pass
    assert "at 0x1000" in out  # esp32-devkitc's offset
    assert back.read_bytes() == img.read_bytes()


def test_erase_clears_what_was_there(mocks, tmp_path, capsys):
    port = mocks("esp32")
    big = image(tmp_path, "big.bin", 192 * 1024, seed=2)
    small = image(tmp_path, "small.bin", 64 * 1024, seed=3)
    assert petrel(big, "--port", port, "--no-verify") == 0
    assert petrel(small, "--port", port, "--erase", "--read-back", tmp_path / "back.bin") == 0
    assert (tmp_path / "back.bin").read_bytes() == small.read_bytes()
    # What the big image left after the small one is gone: the whole flash was erased.
    tail = tmp_path / "tail.bin"
    code, _ = flash.run_esptool(["--chip", "esp32", "--port", port, "read-flash",
                                 hex(0x1000 + 64 * 1024), str(128 * 1024), str(tail)])
    assert code == 0
    assert tail.read_bytes() == b"\xff" * (128 * 1024)
    assert "Erasing flash memory" in capsys.readouterr().out


def test_failed_verify_is_a_failure(mocks, tmp_path, capsys, monkeypatch):
    port = mocks("esp32")
    img = image(tmp_path, "fw.bin", 96 * 1024, seed=4)
    real = flash.run_esptool

    def corrupt_before_verify(argv):
        # Between the write session and the verify session, erase a sector of what
        # was written, on the mock itself: the verify then meets a real difference.
        if "verify-flash" in argv:
            assert real(["--chip", "esp32", "--port", port, "erase-region", "0x10000", "0x1000"])[0] == 0
        return real(argv)

    monkeypatch.setattr(flash, "run_esptool", corrupt_before_verify)
    assert petrel(img, "--port", port) == 1
    out, err = capsys.readouterr()
    assert "Hash of data verified." in out  # the write itself went through
    assert "Verification failed (digest mismatch)" in out  # esptool's verify-flash saw it
    assert "verify failed: the flash at 0x1000 does not hold" in err
    assert "--erase" in err  # what to do next


@pytest.mark.parametrize("answers, profile, right", [
    ("esp32", "esp32-s3-devkitc", "esp32-devkitc"),  # told by the chip's magic register
    ("esp32s3", "esp32-devkitc", "esp32-s3-devkitc"),  # told by its chip ID
])
def test_wrong_chip_is_refused(mocks, tmp_path, capsys, answers, profile, right):
    img = image(tmp_path, "fw.bin", 64 * 1024, seed=5)
    port = mocks(answers)
    assert petrel(img, "--port", port, "--board", profile) == 1
    err = capsys.readouterr().err
    chip = boards.load(profile)["chip"]
    assert "wrong chip: %s answered as %s, but board profile %s is for %s; use --board %s" % (
        port, answers, profile, chip, right) in err  # (other profiles of that chip may follow)


def test_missing_port_is_a_usage_error(tmp_path, capsys):
    img = image(tmp_path, "fw.bin", 1024, seed=6)
    assert petrel(img, "--port", "/dev/ttyUSB9") == 2
    err = capsys.readouterr().err
    assert "port /dev/ttyUSB9 does not exist" in err
    assert "python -m serial.tools.list_ports" in err


def test_missing_image_is_a_usage_error(tmp_path, capsys):
    assert petrel(tmp_path / "nope.bin", "--port", "/dev/ttyUSB9") == 2
    assert "image %s does not exist" % (tmp_path / "nope.bin") in capsys.readouterr().err


def test_unknown_board_lists_the_known_ones(tmp_path, capsys):
    img = image(tmp_path, "fw.bin", 1024, seed=7)
    assert petrel(img, "--port", "/dev/ttyUSB9", "--board", "esp99") == 2
    err = capsys.readouterr().err
    assert "no board profile 'esp99'" in err
    assert all(name in err for name in ("esp32-devkitc", "esp32-s3-devkitc", "esp32-c3-devkitm"))


def test_nothing_listening_says_so(tmp_path, capsys):
    img = image(tmp_path, "fw.bin", 1024, seed=8)
    assert petrel(img, "--port", "socket://127.0.0.1:1") == 1
    assert "nothing listens at socket://127.0.0.1:1" in capsys.readouterr().err


def test_help_explains_and_shows_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["flash", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "verify-flash" in out and "--read-back" in out and "Exit codes" in out
    assert "petrel flash build/firmware.bin --port /dev/ttyUSB0" in out
