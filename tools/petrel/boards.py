"""Board profiles (boards/*.json): what the host tools need to know of a board."""

import json

from .paths import ROOT

BOARDS = ROOT / "boards"
REQUIRED = ("name", "chip", "flash_offset", "baud", "mpy_arch")


class ProfileError(ValueError):
    pass


def names():
    return sorted(p.stem for p in BOARDS.glob("*.json"))


def load(name):
    """A profile by name (boards/NAME.json) or path; flash_offset as an int."""
    path = BOARDS / (name + ".json") if not str(name).endswith(".json") else name
    try:
        with open(path) as f:
            prof = json.load(f)
    except FileNotFoundError:
        raise ProfileError("no board profile %r (known: %s)" % (name, ", ".join(names())))
    except ValueError as e:
        raise ProfileError("board profile %s is not valid JSON: %s" % (path, e))
    for key in REQUIRED:
        if key not in prof:
            raise ProfileError("board profile %s: missing key %r" % (path, key))
    try:
        prof["flash_offset"] = int(str(prof["flash_offset"]), 0)
    except ValueError:
        raise ProfileError("board profile %s: flash_offset %r is not a number" % (path, prof["flash_offset"]))
    return prof
