# Runs first on every boot. Kept empty on purpose: anything slow here costs
# battery on every wake; the application decides what to do in main.py.
