"""The Petrel application: one wake cycle, then deep sleep.

For now the cycle restores its state from RTC memory, counts the boot, says on
the serial log why it booted, saves its state and sleeps until the next wake.
"""

import struct

import machine

import eventlog as log
import rtcmem

SLEEP_MS = 300000  # one wake every 5 minutes

# RTC memory layout (2048 bytes): the application's state first, the outbox's
# fast path after it.
RTC_APP = (0, 256)

CAUSES = {
    machine.PWRON_RESET: "poweron",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "reset",
}
WAKES = {0: "none", 2: "ext0", 3: "ext1", 4: "timer", 5: "touch", 6: "ulp"}


def run():
    state = rtcmem.Region(machine.RTC(), *RTC_APP)
    payload, why = state.load()
    boots = struct.unpack("<I", payload)[0] if payload else 0
    boots += 1
    cause = machine.reset_cause()
    log.info("boot", "cause=%s wake=%s boot=%d rtc=%s",
             CAUSES.get(cause, cause), WAKES.get(machine.wake_reason(), "other"), boots, why)
    state.save(struct.pack("<I", boots))
    log.info("sleep", "ms=%d", SLEEP_MS)
    machine.deepsleep(SLEEP_MS)
