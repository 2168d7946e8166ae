# Every test process sees the simulated board: `import machine` is boards/sim.
from petrel import harness

harness.install()
