"""The recovery ladder around one wake cycle, then deep sleep. Never stuck awake.

    run():  state from RTC memory -> why we booted -> after a reset: a
            firmware switch or trial settled (app.fwupdate.boot) ->
            maintenance pin? -> watchdog armed (LOAD_WDT_MS) -> pushed files
            switched in or reverted (app.mailbox) -> configuration read
            -> watchdog re-armed for the whole wake -> safe mode or the cycle
            -> state saved -> a trial judged (a crashed wake counted, or the
            uplink's outcome: appslot, app.fwupdate) -> an unconfirmed
            firmware reset into its rollback -> deep sleep (or a
            maintenance hold asked for over the downlink)

The recovery ladder: an exception in the cycle is logged whole, kept in
/crash.log and counted in RTC memory, and the node sleeps as usual; a wake
that hangs is ended by the watchdog and counted the same way at the next
boot. After `safe_mode.after_crashes` crashed wakes in a row the node runs in
safe mode for `safe_mode.wakes` wakes: no application, only Wi-Fi, a status
and health message, and a long sleep; then it tries the application again
(one more crash and it is back in safe mode). A new configuration or firmware
leaves safe mode at once. A maintenance pin held at boot (board.json) keeps
the node awake at the REPL, before any watchdog is armed, for a technician.

The watchdog is armed before the configuration is read, with LOAD_WDT_MS:
a file that hangs the checker resets the node instead of holding it awake
(counted as a crash at the next boot, like any hung wake). Once the
configuration is known, machine.WDT() is called again with the wake's
timeout: on the ESP32 port a second WDT() reconfigures the one task watchdog
(esp_task_wdt_reconfigure, ports/esp32/machine_wdt.c), longer or shorter,
and the simulated board's WDT does the same (a new timeout, fed).
"""

import sys
import time

import machine

import eventlog as log

from app import config, crashlog, hardware, state, version

CAUSES = {
    machine.PWRON_RESET: "poweron",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "reset",
}
WAKES = {0: "none", 2: "ext0", 3: "ext1", 4: "timer", 5: "touch", 6: "ulp"}
WDT_MARGIN_MS = 20000  # sensors, flash and the log, on top of the network budget
LOAD_WDT_MS = 10000  # reading and checking two files of at most 8 KiB: well under 1 s on the chip
CRASH_SLEEP_MS = 300000  # after a crash with no usable configuration
# set while the wake's own modules (cycle, safemode) are imported: an update
# on trial that fails there is rolled back at once (appslot), not counted
_importing = [False]


def run():
    t0 = time.ticks_ms()
    st = state.State()
    st.boots = (st.boots + 1) & 0xFFFFFFFF
    cause = CAUSES.get(machine.reset_cause(), "other")
    wake = WAKES.get(machine.wake_reason(), "other")
    log.info("boot", "cause=%s wake=%s boot=%d rtc=%s fw=%s", cause, wake, st.boots, st.why,
             version.VERSION)
    if cause != "deepsleep":
        _fw_boot()
    if cause == "watchdog":
        # the last wake hung: as much a crash as an exception
        st.bump("wdt_resets")
        _count_crash(st)
        log.error("boot", "watchdog reset: the last wake hung crash_streak=%d", st.crash_streak)
    try:
        hw = hardware.Hardware(hardware.load())
    except Exception as e:  # noqa: BLE001  a damaged board.json: run without hardware
        log.error("board", "board.json unusable: %s", e)
        hw = hardware.Hardware({})
    try:
        maintenance = hw.maintenance_held()
    except Exception:  # noqa: BLE001
        maintenance = False
    if maintenance:
        st.save()
        _hold_trial_watchdog()
        log.warn("maintenance", "pin held at boot: staying awake at the REPL, no sleep")
        return
    cfg = None
    wdt = None
    trial_crash = None  # why this wake crashed, for an app on trial (appslot)
    uplinked = None  # the wake's uplink attempt: None (none), True (ok), False (failed)
    try:
        wdt = machine.WDT(timeout=LOAD_WDT_MS)  # before the files: a hang in them resets the node
        if st.down_busy or cause in ("poweron", "hard", "other"):
            _pushed_files(st, cause)
        cfg = config.load("config.json", "secrets.json", "config.good.json")
        if not cfg.channels and hw.desc.get("channels"):
            # a node provisioned without channels samples what its board carries
            try:
                cfg.channels = config.channels(hw.desc["channels"], "board.json")
                log.info("config", "no channels in config.json: the board's (%s)",
                         " ".join(c.name for c in cfg.channels))
            except Exception as e:  # noqa: BLE001  a bad board.json: no channels, not no wake
                log.error("config", "%s", e)
        wdt = machine.WDT(timeout=cfg.network_budget_ms + WDT_MARGIN_MS)  # the wake's own
        wdt.feed()
        ms, uplinked = _wake(st, cfg, hw, cause, wake, t0)
    except Exception as e:  # noqa: BLE001  the ladder: log, keep, count, sleep
        _count_crash(st)
        st.cfg_crc = _config_crc()
        tb = crashlog.keep(e, "boot=%d cause=%s streak=%d" % (st.boots, cause, st.crash_streak))
        log.error("crash", "streak=%d total=%d\n%s", st.crash_streak, st.crashes, tb.rstrip())
        sm = cfg.safe_mode if cfg is not None else config.SafeMode()
        ms = cfg.sample_s * 1000 if cfg is not None else CRASH_SLEEP_MS
        if st.crash_streak >= sm.after_crashes:
            ms = sm.sleep_s * 1000  # crashing again and again: no hurry
        trial_crash = "%s%s: %s" % ("import: " if _importing[0] else "", type(e).__name__, e)
    if wdt is not None:
        wdt.feed()
    st.save()
    if trial_crash is not None:
        _trial_crashed(trial_crash)
    elif uplinked is not None:
        _trial_uplink(uplinked)  # a completed wake: only now may it confirm a trial
    # a firmware update's one-wake trial not confirmed: reset into the
    # bootloader's rollback, never sleep on it (app/fwupdate.py: the port's
    # deep-sleep wakes skip the bootloader's choice). Loaded at every boot
    # after a reset (_fw_boot), and on a wake that downloaded a firmware.
    fw = sys.modules.get("app.fwupdate")
    if fw is not None:
        try:
            fw.before_sleep()
        except Exception as e:  # noqa: BLE001  the sleep below is never skipped for a bug in it
            log.error("update", "fwupdate: %s: %s", type(e).__name__, e)
    if st.hold_min:
        return _hold(st.hold_min, wdt, hw, ms)
    _before_sleep(hw)
    machine.deepsleep(ms)


def _fw_boot():
    """What became of a firmware switch or trial, first thing after a reset
    (app.fwupdate.boot): a trial is then known on every way this wake can
    end (safe mode, low battery, a crash, a hold), and before_sleep() resets
    it into the bootloader's rollback instead of sleeping on it. A bug there
    must not stop the wake."""
    try:
        from app import fwupdate

        fwupdate.boot()
    except Exception as e:  # noqa: BLE001
        log.error("update", "fwupdate: %s: %s", type(e).__name__, e)


def _hold_trial_watchdog():
    """The maintenance pin on a trial boot: appslot's watchdog (armed before
    this code ran) fed, so the technician's REPL is not reset under them."""
    try:
        import appslot

        appslot.hold_watchdog()
    except Exception as e:  # noqa: BLE001  a node without appslot, or a bug in it
        log.error("appslot", "%s: %s", type(e).__name__, e)


def _trial_uplink(ok):
    """After a wake that completed with an uplink attempt, its state saved:
    an app or firmware on trial confirmed (on flash before the sleep) or a
    failure counted toward its rollback."""
    try:
        import appslot

        appslot.uplink(ok)
    except ImportError:  # a node deployed without slots
        pass
    except Exception as e:  # noqa: BLE001  the ladder sleeps whatever appslot does
        log.error("appslot", "%s: %s", type(e).__name__, e)
    fw = sys.modules.get("app.fwupdate")  # a trial is known only where _fw_boot() loaded it
    if fw is not None:
        try:
            fw.uplink(ok)
        except Exception as e:  # noqa: BLE001
            log.error("update", "fwupdate: %s: %s", type(e).__name__, e)


def _trial_crashed(why):
    """A crashed wake of an update on trial, counted by appslot (after
    the RTC record is saved): an import failure rolls back and resets now,
    REVERT_CRASHES crashed wakes roll back at the next boot. The factory
    app (no slot, or appslot missing) goes on as before."""
    try:
        import appslot

        if appslot.on_trial():
            appslot.crashed(why[:80])
    except Exception as e:  # noqa: BLE001  the ladder sleeps whatever appslot does
        log.error("appslot", "%s: %s", type(e).__name__, e)


def _pushed_files(st, cause):
    """A pushed configuration or secrets file switched in, or a trial that
    crashed reverted (app.mailbox), before the files are read. A flash
    error here must not stop the wake: the files as they are run."""
    try:
        from app import mailbox

        mailbox.boot(st, cause)
    except Exception as e:  # noqa: BLE001
        log.error("down", "pushed files: %s: %s", type(e).__name__, e)


def _hold(minutes, wdt, hw, ms):
    """A maintenance hold (app.mailbox): awake with the REPL free for
    `minutes`, the watchdog fed by a timer, the radio off; then the deep
    sleep the wake asked for, less the hold, so the node is back on its
    schedule. main.py returns to the REPL: a technician or `petrel deploy`
    can reach the node over USB meanwhile (a reset ends the hold)."""
    _before_sleep(hw)
    end = time.ticks_add(time.ticks_ms(), minutes * 60000)
    log.warn("maintenance", "hold: REPL free for %d min, then sleep", minutes)

    def tick(t):
        if wdt is not None:
            wdt.feed()
        if time.ticks_diff(time.ticks_ms(), end) >= 0:
            t.deinit()
            log.info("maintenance", "hold over: back to the schedule")
            machine.deepsleep(max(1000, ms - minutes * 60000))

    machine.Timer(0).init(mode=machine.Timer.PERIODIC, period=1000, callback=tick)


def _count_crash(st):
    st.bump("crash_streak")
    st.bump("crashes")


def _config_crc():
    from binascii import crc32

    try:
        with open("config.json", "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    return crc32(data + version.VERSION.encode()) & 0xFFFFFFFF


def _wake(st, cfg, hw, cause, wake, t0):
    sm = cfg.safe_mode
    if st.safe_left and st.cfg_crc != _config_crc():
        log.info("safe", "left: configuration or firmware changed")
        st.safe_left = 0
        st.crash_streak = 0
    if not st.safe_left and st.crash_streak >= sm.after_crashes:
        st.safe_left = sm.wakes
        st.bump("safe_entries")
        st.cfg_crc = _config_crc()
        log.error("safe", "entered after %d crashed wakes: %d wakes of safe mode",
                  st.crash_streak, st.safe_left)
    if st.safe_left:
        _importing[0] = True
        from app import safemode

        _importing[0] = False
        st.safe_left -= 1
        if not st.safe_left:
            # one more try of the application next time; one crash brings us back
            st.crash_streak = sm.after_crashes - 1
            log.info("safe", "last safe wake: the application runs again next wake")
        return safemode.run(st, cfg, cause), None  # no trial is judged in safe mode
    _importing[0] = True
    from app import cycle

    _importing[0] = False
    w = cycle.Wake(st, cfg, hw, cause, wake, t0)
    return w.run(), w.trial_uplink


def _before_sleep(hw):
    """Radio off (whatever happened), the alarm pin armed."""
    try:
        import network

        network.WLAN(network.STA_IF).active(False)
    except Exception:  # noqa: BLE001
        pass
    try:
        if not hw.arm_alarm_wake() and hw.desc.get("alarm_pin"):
            log.warn("alarm", "pin still active: its wake is armed again once it is released")
    except Exception as e:  # noqa: BLE001
        log.warn("board", "alarm pin not armed: %s", e)
