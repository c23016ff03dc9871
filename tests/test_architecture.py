"""The layering of ARCHITECTURE.md, checked: no import cycles, and a core that loads no Flower.

The import graph is read from the source (``ast``), so it sees every ``import`` statement:
module level, inside functions and under ``TYPE_CHECKING`` alike. Importing ``a.b.c`` also runs
the ``__init__`` of the packages ``a`` and ``a.b``; those edges are counted too, except for
the packages of the importing module itself (already being initialized when it runs).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flower_suite

PACKAGE_DIR = Path(flower_suite.__file__).parent
PACKAGE = PACKAGE_DIR.name

# Framework-free core (ARCHITECTURE.md, layer 1): importing any of these must not load Flower.
CORE = (
    "aggregation",
    "attacks",
    "coding",
    "compression",
    "data",
    "defenses",
    "matching",
    "models",
    "secagg",
    "wire",
)
CORE_MODULES = ("registry", "training")
# The Flower-facing modules of the `wire` package (read Flower's Array / ArrayRecord).
FLOWER_FACING = ("wire.array", "wire.updates")


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _packages_of(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The modules of the package an import statement loads (not resolved: names)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            yield submodule if submodule in known else source


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (explicitly, or through package inits)."""
    files = module_files()
    known = set(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _imported(node, name, is_package, known):
                if target not in known or target == name:
                    continue
                graph[name].add(target)
                graph[name] |= (_packages_of(target) - _packages_of(name) - {name}) & known
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle ``[a, b, ..., a]``, or ``[]`` when the graph is acyclic."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str]:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        on_path.discard(path.pop())
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return []


def test_find_cycle_reports_a_cycle_through_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle closed by an import inside a function is found."""
    # Prepare
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    # Execute
    cycle = find_cycle(graph)
    # Assert
    assert cycle[0] == cycle[-1] and set(cycle) == {"p.a", "p.b", "p.c"}
    assert find_cycle({"p.a": {"p.b"}, "p.b": set()}) == []


def test_graph_counts_package_init_imports() -> None:
    """Importing a name from a package runs the package's ``__init__``: that edge counts."""
    graph = import_graph()
    assert f"{PACKAGE}.simulations.threats" in graph[f"{PACKAGE}.simulations.engine.server"]


# simulations/: each subpackage imports only those before it (entry points last).
SIMULATION_LAYERS = ("config", "threats", "engine", "bench", "cli", "flwr_app")


def test_simulation_packages_import_only_earlier_ones() -> None:
    graph = import_graph()
    prefix = f"{PACKAGE}.simulations."
    wrong = []
    for module, targets in graph.items():
        if not module.startswith(prefix):
            continue
        layer = SIMULATION_LAYERS.index(module.removeprefix(prefix).split(".")[0])
        for target in targets:
            if target.startswith(prefix):
                other = SIMULATION_LAYERS.index(target.removeprefix(prefix).split(".")[0])
                if other > layer:
                    wrong.append(f"{module} -> {target}")
    assert not wrong, f"imports against the layer order {SIMULATION_LAYERS}: {sorted(wrong)}"


def test_no_import_cycles() -> None:
    """No cycle among the package's modules, counting every import statement."""
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_package_imports_inside_functions() -> None:
    """Dependencies are declared at the top of a module, where the cycle check sees them
    plainly; an import inside a function is how a cycle hides."""
    found = []
    for name, path in module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                is_import = isinstance(inner, ast.Import | ast.ImportFrom)
                if is_import and any(
                    t.startswith(PACKAGE) for t in _imported(inner, name, False, set())
                ):
                    found.append(f"{name}:{inner.lineno}")
    assert not found, f"package imports inside functions: {sorted(set(found))}"


def core_modules() -> list[str]:
    names = []
    for name in module_files():
        relative = name.removeprefix(f"{PACKAGE}.")
        in_core = relative.split(".")[0] in CORE or relative in CORE_MODULES
        if in_core and relative not in FLOWER_FACING:
            names.append(name)
    return sorted(names)


def _loads_flower(modules: list[str]) -> bool:
    code = f"import sys\nfor m in {modules!r}:\n    __import__(m)\nprint('flwr' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return out.stdout.strip().splitlines()[-1] == "True"


def test_core_imports_no_flower() -> None:
    """Every module of the framework-free core imports without loading ``flwr``."""
    modules = core_modules()
    assert f"{PACKAGE}.attacks.pgd" in modules and f"{PACKAGE}.wire.keys" in modules
    if _loads_flower(modules):  # find which, for the message (one process per module)
        culprits = [m for m in modules if _loads_flower([m])]
        pytest.fail(f"core modules that load flwr: {culprits}")


def test_adapter_names_stay_importable_from_the_core_package() -> None:
    """``from flower_suite.attacks import byzantine_mod`` still works (resolved on use)."""
    from flower_suite import attacks
    from flower_suite.byzantine_injector import ByzantineInjector
    from flower_suite.clients.attacker import byzantine_mod

    assert attacks.byzantine_mod is byzantine_mod
    assert attacks.ByzantineInjector is ByzantineInjector
    assert set(attacks._ADAPTERS) <= set(attacks.__all__)
    with pytest.raises(AttributeError):
        _ = attacks.no_such_name


# The size limits of the style guide (DEVELOPERS: modules under ~400 lines, functions under ~80).
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _python_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_no_module_over_the_line_limit() -> None:
    too_long = {
        str(p.relative_to(PACKAGE_DIR)): n
        for p in _python_files()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_no_function_over_the_line_limit() -> None:
    too_long = {}
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(PACKAGE_DIR)}::{node.name}"] = length
    assert too_long == {}
