"""`petrel vm run FILE`: run a script on the VM as the simulated board's main.py would.

A deep sleep, reset or watchdog ends the script the way it ends a real board's
program: the board halts. That is reported on stderr and is not an error."""

import sys

from simstate import Halt

script = sys.argv[1]
sys.argv[:] = sys.argv[1:]
try:
    with open(script) as f:
        code = compile(f.read(), script, "exec")
    exec(code, {"__name__": "__main__", "__file__": script})
except Halt as h:
    sys.stderr.write("[sim] board halted: %s\n" % h.why)
