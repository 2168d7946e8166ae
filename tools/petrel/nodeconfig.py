"""`petrel config check DIR`: a node's configuration folder (what `petrel
provision` writes) checked on the bench by the node's own checker
(firmware/app/config.py, run here under CPython), so a bad file fails with
the file, the key and what was expected, before anything reaches a board.
`petrel deploy --config DIR` and `petrel run` run the same check first.

Beyond config.check and config.check_secrets (one error each: the first the
node would log), the secrets the configuration needs (hmac_key always,
psk_key for broker.tls psk) and the files it names (broker.ca, cert, key)
must be there: the node would otherwise run without an uplink.
"""

import sys
from pathlib import Path


class FolderMissing(Exception):
    pass


def check_dir(folder):
    """-> [problem, ...] (one line each, [] when the node takes it).
    FolderMissing when folder is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderMissing("%s is not a folder: give the folder `petrel provision --out` made"
                            % folder)
    from . import harness

    harness.install()
    from app import config

    problems = []
    cfg = None
    secrets = None
    for name in ("config.json", "secrets.json"):
        path = folder / name
        if not path.is_file():
            problems.append("%s: missing in %s (petrel provision writes it)" % (name, folder))
            continue
        try:
            data = config._read_json(str(path))
            if name == "config.json":
                cfg = config.check(data)
            else:
                secrets = config.check_secrets(data)
        except config.ConfigError as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001  the node survives anything: so does the check
            problems.append("%s: unusable (%s)" % (name, type(e).__name__))
    if cfg is None or secrets is None:
        return problems
    if "hmac_key" not in secrets:
        problems.append("secrets.json: key 'hmac_key' is missing (the key the node signs its "
                        "readings with; the collector has it in the registry)")
    b = cfg.broker
    if b is not None:
        if b.tls == "psk" and "psk_key" not in secrets:
            problems.append("secrets.json: key 'psk_key' is missing (config.json's broker.tls "
                            "is psk)")
        for key in ("ca", "cert", "key"):
            named = getattr(b, key, None)
            if named and not (folder / named.lstrip("/")).is_file():
                problems.append("config.json: broker.%s names %s, which is not in %s"
                                % (key, named, folder))
    return problems


def run_check(folder, say=print):
    """The check with its report; -> exit code (0 fine, 1 problems, 2 no folder)."""
    try:
        problems = check_dir(folder)
    except FolderMissing as e:
        print("petrel config: %s" % e, file=sys.stderr)
        return 2
    for p in problems:
        print("petrel config: %s" % p, file=sys.stderr)
    if problems:
        print("petrel config: %s refused: %d problem%s (nothing was written to a board)"
              % (folder, len(problems), "" if len(problems) == 1 else "s"), file=sys.stderr)
        return 1
    say("config: %s checked: config.json and secrets.json as the node reads them" % folder)
    return 0


def _cmd_check(args):
    return run_check(args.dir)


def register(sub):
    p = sub.add_parser("config", help="check a node's configuration folder, or push one to a node",
                       description=__doc__.split("\n\n")[0])
    csub = p.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND")
    c = csub.add_parser(
        "check", help="check config.json and secrets.json as the node would",
        description="Runs the node's own checker (firmware/app/config.py) over DIR/config.json "
                    "and DIR/secrets.json, and checks that the secrets and certificate files "
                    "the configuration needs are there. Example: petrel config check nodes/new. "
                    "Exit codes: 0 fine, 1 refused (each problem on one line), 2 DIR is not a folder.")
    c.add_argument("dir", metavar="DIR", help="the folder petrel provision --out made")
    c.set_defaults(func=_cmd_check)
    from . import fleet

    fleet.register_config_push(csub)  # petrel config push: the downlink (README, "Managing nodes in the field")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])
