"""Fake of MicroPython's C module `_onewire`: 1-Wire time slots on the simulated board.

The devices on a pin are models listed in `simstate.board.onewire`
({pin number: [model, ...]}, see simdev/ds18b20.py). A model answers three calls:

  ow_reset()        a reset pulse: True if it answers with a presence pulse
  ow_drive()        the level it puts on the line in the coming slot (0 pulls it low)
  ow_sample(level)  the level of the line in that slot, as every device sees it

The line is wired-AND: it reads 0 if the master or any device pulls it low. A
write-1 slot and a read slot are the same slot on the wire (the master pulls low
briefly and lets go), so a device cannot tell them apart, as on a real bus.

As with the C module on the ESP32, the master only pulls the line low if the pin
is open-drain (onewire.OneWire sets that up); otherwise no device is ever seen.
Each call ends with the pin released, so the idle line reads 1 (the pull-up).
"""

import simstate

RESET_US = 960  # 480 us low, 70 us to the presence sample, 410 us recovery
SLOT_US = 65
_OPEN_DRAIN = 7  # machine.Pin.OPEN_DRAIN


def _devices(pin):
    board = simstate.board
    board.alive()
    n = getattr(pin, "id", pin)
    wiring = getattr(board, "onewire", None)
    if wiring is None:
        wiring = {}
        board.onewire = wiring
    board.outputs.pop(n, None)  # released between slots: the pull-up decides
    if board.modes.get(n) != _OPEN_DRAIN:
        return ()
    return wiring.get(n, ())


def _slot(pin, bit):
    devices = _devices(pin)
    level = 1 if bit else 0
    for d in devices:
        level &= d.ow_drive()
    for d in devices:
        d.ow_sample(level)
    simstate.board.advance(SLOT_US)
    return level


def reset(pin):
    devices = _devices(pin)
    simstate.board.advance(RESET_US)
    presence = False
    for d in devices:  # every device sees the reset, whoever answered first
        if d.ow_reset():
            presence = True
    return presence


def readbit(pin):
    return _slot(pin, 1)


def readbyte(pin):
    value = 0
    for i in range(8):  # least significant bit first
        value |= _slot(pin, 1) << i
    return value


def writebit(pin, value):
    _slot(pin, value)


def writebyte(pin, value):
    for i in range(8):
        _slot(pin, (value >> i) & 1)


def crc8(data):
    """Maxim/Dallas CRC-8 (x^8 + x^5 + x^4 + 1, reflected: 0x8C), initial value 0."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc
