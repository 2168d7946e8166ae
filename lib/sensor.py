"""What every sensor driver shares: the errors that say why a reading cannot be
trusted, so the caller can count each reason instead of guessing.

Bus failures (no ACK, clock stretched past the timeout) stay OSError, as
machine.I2C raises them. Data that arrived but is wrong is a SensorError:
"""


class SensorError(ValueError):
    """A reading came back but cannot be trusted."""


class CRCError(SensorError):
    """The checksum the sensor sent does not match its data."""


class ImpossibleValue(SensorError):
    """The value is outside what the part can physically report (a stuck bus,
    a wrong chip, a power-on default such as the DS18B20's 85 degC)."""
