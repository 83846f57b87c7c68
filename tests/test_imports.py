"""The package's import structure, read from the source with `ast` (nothing is imported):
intra-package imports form no cycle, none sits inside a function, and the layers hold:

    base      errors (the error base), cli        imports only base
              (the command wrapper, flag types)
    core      the numerical core                  imports only core and base
    data      files, images, episodes             imports only data, core and base
    runs      run directories, the training loop  imports only runs, data, core, base (and
                                                  the package's __version__)
    commands  (the rest)                          may import anything below them

so no module under core/, data/ or runs/ imports a command, and the wrapper every command goes
through (cli.run_command) and the error base it catches depend on nothing above them.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = "flmn_np"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
BASE = {f"{PACKAGE}.errors", f"{PACKAGE}.cli"}     # the bottom layer, importable from anywhere
ALLOWED = {"base": {"base"}, "core": {"base", "core"},   # layer -> layers it may import
           "data": {"base", "core", "data"},
           "runs": {"root", "base", "core", "data", "runs"}}   # root: the package's __version__


def module_name(path):
    """flmn_np/data/episodes.py -> 'flmn_np.data.episodes'; a package's __init__.py -> its name."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module):
    """'core', 'data' or 'runs' for modules in those subpackages, 'base' for errors and cli,
    'root' for the package itself, 'commands' for the modules at the top (evaluate, plot, ...)."""
    if module in BASE:
        return "base"
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    return parts[1] if parts[1] in ("core", "data", "runs") else "commands"


def _package_of(module):
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _targets(module, node):
    """The package modules an Import / ImportFrom node loads (`from .a import b` loads a.b when
    that is a module, else a)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.level:
        base = _package_of(module)
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        base = f"{base}.{node.module}" if node.module else base
    elif node.module and node.module.split(".")[0] == PACKAGE:
        base = node.module
    else:
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _walk(node, in_function=False):
    """(node, inside a function?) for every node below `node`."""
    for child in ast.iter_child_nodes(node):
        yield child, in_function
        yield from _walk(child, in_function or isinstance(child, FUNCTION_NODES))


def intra_package_imports():
    """[(module, imported module, line, inside a function?)] over the whole package."""
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, in_function in _walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [(module, t, node.lineno, in_function) for t in _targets(module, node)]
    return found


IMPORTS = intra_package_imports()


def find_cycle(edges):
    """One import cycle as [m1, m2, ..., m1], or None (depth-first search, three colours)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_parser_sees_the_package_and_its_imports():
    assert {"flmn_np.core.models", "flmn_np.data.episodes", "flmn_np.runs.training"} <= set(MODULES)
    edges = {(a, b) for a, b, _, _ in IMPORTS}
    assert ("flmn_np.data.episodes", "flmn_np.data.augment") in edges       # from .augment import ...
    assert ("flmn_np.runs.training", "flmn_np.data.episodes") in edges      # from ..data.episodes import ...
    assert ("flmn_np.cli", "flmn_np.errors") in edges            # from .errors import ...
    assert ("flmn_np.data.cli", "flmn_np.cli") in edges          # from ..cli import ...
    assert BASE <= set(MODULES) and {layer(m) for m in BASE} == {"base"}
    assert all(b in MODULES for _, b in edges), sorted(b for _, b in edges if b not in MODULES)


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle([("a", "b"), ("b", "c"), ("a", "c")]) is None
    assert find_cycle([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    cycle = find_cycle([(a, b) for a, b, _, _ in IMPORTS if a != b])
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_intra_package_import_inside_a_function():
    inside = [f"{MODULES[a].relative_to(ROOT.parent)}:{line} imports {b}"
              for a, b, line, in_function in IMPORTS if in_function]
    assert inside == []


@pytest.mark.parametrize("low", sorted(ALLOWED))
def test_layers_hold(low):
    wrong = [f"{MODULES[a].relative_to(ROOT.parent)}:{line} imports {b} ({layer(b)})"
             for a, b, line, _ in IMPORTS if layer(a) == low and layer(b) not in ALLOWED[low]]
    assert wrong == []


def test_the_base_layer_imports_nothing_above_it():
    """errors.py and cli.py (the error base and the command wrapper) import only each other."""
    above = [f"{MODULES[a].relative_to(ROOT.parent)}:{line} imports {b}"
             for a, b, line, _ in IMPORTS if a in BASE and b not in BASE]
    assert above == []
    assert {b for a, b, _, _ in IMPORTS if a in BASE} == {f"{PACKAGE}.errors"}
