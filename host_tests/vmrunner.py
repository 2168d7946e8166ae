"""Runs the portable tests on the MicroPython VM (pytest runs them on CPython).

    micropython vmrunner.py DIR[:DIR...] [module | module::test ...]

Each test is a plain function named test_*, run on a freshly powered-on
simulated board. Prints one line per test and closes with "N passed, N failed";
exits 1 if any failed.
"""

import os
import sys

import simstate


def _tests(directories, selected):
    names = []
    for d in directories:
        names += [f[:-3] for f in os.listdir(d) if f.startswith("test_") and f.endswith(".py")]
    names.sort()
    wanted = {}
    for s in selected:
        mod, _, fn = s.partition("::")
        mod = mod.split("/")[-1]
        if mod.endswith(".py"):
            mod = mod[:-3]
        wanted.setdefault(mod, []).append(fn)
    for mod in names:
        if wanted and mod not in wanted:
            continue
        m = __import__(mod)
        for name in sorted(dir(m)):
            if not name.startswith("test_"):
                continue
            if wanted and "" not in wanted[mod] and name not in wanted[mod]:
                continue
            fn = getattr(m, name)
            if callable(fn):
                yield mod, name, fn


def main(argv):
    directories = argv[0].split(":")
    for d in directories:
        sys.path.append(d)
    passed = failed = 0
    for mod, name, fn in _tests(directories, argv[1:]):
        simstate.reset_world()
        try:
            fn()
        except BaseException as e:  # a leaked Halt is a failure too
            failed += 1
            print("FAIL %s::%s" % (mod, name))
            sys.print_exception(e)
            continue
        passed += 1
        print("PASS %s::%s" % (mod, name))
    print("vm: %d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


sys.exit(main(sys.argv[1:]))
