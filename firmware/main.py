# Runs after boot.py on every boot and wake: one wake cycle, then deep sleep.
import app

app.run()
