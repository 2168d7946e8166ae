"""The SenML units registry: the symbols a record's unit may be (RFC 8428
section 12.1, and the units RFC 8798 added to it). Read only when a
configuration is checked; app.config lets go of the module afterwards.

Secondary units (RFC 8798 section 4: mV, hPa, ppm, ...) are not in it: a
record's "u" must be a registered unit, so a channel in millivolts is V at
scale 1000.
"""

# one string, not a set: a few hundred bytes, no object per unit
UNITS = (" m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat"
         " m2 m3 l m/s m/s2 m3/s l/s W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / %"
         " %RH %EL EL 1/s 1/min beat/min beats S/m"
         " B VA VAs var vars J/m kg/m3 deg ")  # the last line: RFC 8798


def known(unit):
    """Whether unit is a registered SenML unit (symbols are case-sensitive)."""
    return isinstance(unit, str) and 0 < len(unit) < 16 and " " not in unit and (" " + unit + " ") in UNITS
