"""The layers import downwards only: nothing under engine/, kernels/ or bench/ imports the
command line (cli.py), and the modules of engine/ import each other without a cycle.

Read from the source with ast, so every import counts: at module level and inside
functions (the deferred imports of optional packages and of heavier modules), plain and
relative. The import graph of engine/ has one node per module (a package is the node of
its __init__.py) and an edge A -> B when A imports B by name: `import engine.x.y` and
`from engine.x import y` (y a submodule) are edges to engine.x.y; `from engine.x import
name` (a name defined in engine/x/__init__.py) is an edge to the package engine.x.
Importing a submodule is not counted as importing its parent packages, although Python
runs their __init__.py first: a package's __init__ re-exports its submodules (engine's
imports nearly all of them), so counting it would make every import a cycle; what must
not loop is the code that one module needs from another.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOWER_LAYERS = ("engine", "kernels", "bench")


def module_name(path):
    """engine/panel/prepare.py -> engine.panel.prepare; engine/panel/__init__.py -> engine.panel."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package):
    """{module name: path} of every Python file of a package directory."""
    return {module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def imported_names(path, name=None):
    """Every module name an import statement of the file names, at any depth, with the
    names it takes from it: [(module, [names])] (names empty for `import module`);
    relative imports resolved against the file's package (name: the file's module name)."""
    tree = ast.parse(path.read_text(), str(path))
    package = (name or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((module, [alias.name for alias in node.names]))
    return found


def engine_graph():
    """{module: set of engine modules it imports} (see the module docstring)."""
    known = modules("engine")
    graph = {}
    for name, path in known.items():
        edges = set()
        for module, names in imported_names(path):
            if module != "engine" and not module.startswith("engine."):
                continue
            submodules = [f"{module}.{item}" for item in names if f"{module}.{item}" in known]
            edges.update(submodules)
            if not names or len(submodules) < len(names):  # the module itself, or names defined in it
                assert module in known, f"{name} imports {module}, which is not a module of engine/"
                edges.add(module)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One cycle of a directed graph as a list of nodes [a, b, ..., a], or None."""
    state = {}  # node -> "open" while on the path, "done" after

    def visit(node, path):
        state[node] = "open"
        for following in sorted(graph[node]):
            if state.get(following) == "open":
                return path[path.index(following):] + [node, following] if following in path else [node, following]
            if following not in state:
                cycle = visit(following, path + [node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_no_module_below_the_command_line_imports_cli():
    offenders = []
    for package in LOWER_LAYERS:
        for name, path in modules(package).items():
            for module, _ in imported_names(path):
                if module == "cli" or module.startswith("cli."):
                    offenders.append(f"{name} imports {module}")
    assert offenders == []


def test_the_engine_import_graph_has_no_cycle():
    graph = engine_graph()
    assert len(graph) > 50 and "engine.pipeline" in graph["engine"]  # the scan sees the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_scan_sees_deferred_relative_and_cyclic_imports(tmp_path):
    """The helpers themselves: imports inside a function, relative ones, and a cycle."""
    source = tmp_path / "sample.py"
    source.write_text("import numpy\n\ndef later():\n    import cli\n    from .sibling import thing\n"
                      "    from .. import data\n")
    assert imported_names(source, "engine.sub.sample") == [
        ("numpy", []), ("cli", []), ("engine.sub.sibling", ["thing"]), ("engine", ["data"])]
    assert ("engine.export_onnx", ["onnx_model"]) in imported_names(ROOT / "engine" / "export.py")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"c"}}) == ["c", "c"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
