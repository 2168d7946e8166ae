"""No import cycles among the modules of a source folder.

Imports are read with `ast`, including those inside functions (a late import
is still a cycle: it only moves the half-initialised module to a later moment).
Names are resolved the way the folder is put on the path: `import time` in
boards/sim is boards/sim/time.py, which replaces the built-in on the VM.
"""

import ast

from petrel import paths


def _modules(root):
    """{dotted name: file} for every module under root (packages by __init__)."""
    found = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            found[".".join(parts)] = f
    return found


def _imported(tree, name, is_package):
    """Every module name an ast imports, absolute, with its parent packages."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + (node.module.split(".") if node.module else []))
            if mod:
                out.append(mod)
            out += [mod + "." + a.name if mod else a.name for a in node.names]
    names = []
    for m in out:
        parts = m.split(".")
        names += [".".join(parts[: i + 1]) for i in range(len(parts))]
    return names


def import_graph(root, aliases=None):
    """{module: set of modules of the same folder it imports}."""
    aliases = aliases or {}
    mods = _modules(root)
    graph = {}
    for name, f in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        deps = set()
        for m in _imported(tree, name, f.name == "__init__.py"):
            m = aliases.get(m, m)
            if m in mods and m != name:
                deps.add(m)
        graph[name] = deps
    return graph


def find_cycles(graph):
    """Each cycle once, as a list of modules [a, b, ..., a]."""
    cycles, seen = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for dep in sorted(graph[node]):
                if dep == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        cycles.append(path + [start])
                elif dep not in path and dep > start:
                    stack.append((dep, path + [dep]))
    return cycles


def test_no_import_cycle_in_boards_sim():
    # `tls` is simtls.py for firmware-side code under CPython (petrel.harness),
    # and `utime` is the fake time on the VM (time.py registers it)
    graph = import_graph(paths.SIM, {"tls": "simtls", "utime": "time"})
    assert "simboot" in graph["vmboot"]  # the parser does see the folder's imports
    assert find_cycles(graph) == []


def test_no_import_cycle_in_lib():
    # a load-on-use satellite gets what it needs from a base module or as
    # arguments, never by importing its main module back
    graph = import_graph(paths.LIB)
    assert "cborput" in graph["uplink"] and "cbordec" in graph["cbor"]  # late imports are seen
    assert find_cycles(graph) == []


def test_cycles_are_found(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from pkg import c\n")
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "c.py").write_text("from . import d\n")
    (tmp_path / "pkg" / "d.py").write_text("import a\n")
    (tmp_path / "e.py").write_text("import a, os\n")
    assert find_cycles(import_graph(tmp_path)) == [["a", "b", "pkg.c", "pkg.d", "a"]]
    (tmp_path / "pkg" / "d.py").write_text("import os\n")
    assert find_cycles(import_graph(tmp_path)) == []
    # a satellite that imports its main module back, late, is a cycle too
    (tmp_path / "main.py").write_text("def rare():\n    import sat\n")
    (tmp_path / "sat.py").write_text("from main import rare\n")
    assert find_cycles(import_graph(tmp_path)) == [["main", "sat", "main"]]


def test_no_import_cycle_in_firmware():
    # app/__init__.py imports nothing, so `from app import x` in a submodule
    # does not come back to the package (the recovery ladder is app.ladder)
    graph = import_graph(paths.FIRMWARE)
    assert "app.session" in graph["app.cycle"] and "app.ladder" in graph["main"]
    assert find_cycles(graph) == []
