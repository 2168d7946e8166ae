"""The Petrel application, one module an idea:

    ladder    run(): one wake, the recovery ladder around it, deep sleep
    cycle     one wake of the node (battery, sample, filter, keep, send)
    session   one network session within its budget, as steps
    stores    the node's clock, sequence counter and outbox
    config    config.json and secrets.json, checked; state: RTC memory
    schedule, health, hardware, crashlog, safemode, version

This file imports nothing: a submodule's `from app import ...` must not come
back here (an import cycle).
"""
