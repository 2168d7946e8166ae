# Every test process sees the simulated board: `import machine` is boards/sim.
from petrel import harness

harness.install()

# host_tests/vm holds VM-only tests (heap locks) and scripts: `petrel vm test` runs them.
collect_ignore = ["vm"]
