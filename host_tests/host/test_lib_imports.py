"""What `petrel deploy` leaves out (deploy.HOST_ONLY) is never imported on a
node: lib/'s imports read with `ast`, an import inside a function counting
like one at the top (loaded on use is still loaded). Import cycles in lib/:
test_import_graph.py.
"""

import ast

from petrel import deploy, paths


def imports(path, skip=()):
    """Top-level module names a file imports, wherever the import sits, except
    in the bodies of its functions named in skip."""
    out = set()
    for top in ast.parse(path.read_text(), str(path)).body:
        if not (isinstance(top, ast.FunctionDef) and top.name in skip):
            out |= _imports(top)
    return out


def _imports(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def gates(path, modules):
    """{function: module} for the functions of a file that import one of
    `modules` in their body: its load-on-use entry points (cbor.loads)."""
    out = {}
    for fn in ast.parse(path.read_text(), str(path)).body:
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name in modules:
                            out[fn.name] = a.name
    return out


def uses(path, module, names):
    """Which of module's `names` a file reaches: module.name or from module import name."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == module and node.attr in names):
            out.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == module:
            out |= set(a.name for a in node.names) & set(names)
    return out


def node_reach():
    """What a node can load, from firmware/ (every import): the lib/ modules,
    following their imports except a HOST_ONLY module's load-on-use import
    (cbor.loads -> cbordec), and those entry points the node's code calls."""
    files = dict((f.stem, f) for f in paths.LIB.glob("*.py"))
    entry = dict((m, gates(f, deploy.HOST_ONLY)) for m, f in files.items())
    code = list(paths.FIRMWARE.rglob("*.py"))
    todo = set()
    for f in code:
        todo |= imports(f) & set(files)
    seen = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        code.append(files[m])
        todo |= imports(files[m], skip=entry[m]) & set(files)
    called = []
    for f in code:
        for m in seen:
            called += ["%s.%s" % (m, n) for n in sorted(uses(f, m, entry[m]))]
    for m in seen:  # and within their own module, by bare name
        names = set(n.id for n in ast.walk(ast.parse(files[m].read_text())) if isinstance(n, ast.Name))
        called += ["%s.%s" % (m, n) for n in sorted(names & set(entry[m]))]
    return seen, called


def test_what_deploy_leaves_out_is_never_imported_on_a_node():
    assert set(deploy.HOST_ONLY) <= set(f.stem for f in paths.LIB.glob("*.py"))  # each names a module that exists
    loaded, entry_points_called = node_reach()
    assert {"mqtt", "uplink", "cose", "cborput", "outbox"} <= loaded  # the walk does reach lib/
    assert sorted(loaded & set(deploy.HOST_ONLY)) == []
    assert entry_points_called == []  # e.g. cbor.loads from firmware/: it would import cbordec
