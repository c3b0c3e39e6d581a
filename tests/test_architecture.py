"""The layering rules of docs/architecture.md, checked on every import in src/ (nested ones too).

1. Imports point down only: cli, api -> bench -> catalog -> explore, shop -> train -> evaluation
   -> search -> index -> encoders -> viz -> data -> config. ``viz`` is a leaf that only draws
   (it may use data and config); ``bench`` is a leaf only the CLI reaches.
2. Only ``catalog``, ``search`` and ``data/`` touch the store.
No import cycles between modules.
"""
from __future__ import annotations

import ast
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lookalike"

# Higher number = lower layer. A module may import its own component or any strictly lower one.
LAYERS = {
    "cli": 0, "api": 0, "bench": 1, "catalog": 2, "explore": 3, "shop": 3, "train": 4,
    "evaluation": 5, "search": 6, "index": 7, "encoders": 8, "viz": 9, "data": 10, "config": 11,
}
# Sideways arrows that are part of the design: `lookalike serve` starts the HTTP API.
ALLOWED_SIDEWAYS = {("cli", "api")}
# The package root re-exports the facade (and its version); __main__ runs the CLI.
ROOTS = {"__init__": {"catalog", "config"}, "__main__": {"cli"}}
STORE_USERS = {"catalog", "search", "data"}
TOP_LEVEL_MODULES = {"__init__", "__main__", "config", "catalog", "search"}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, src: Path = SRC) -> list[tuple[str, int]]:
    """Every lookalike module imported by ``path`` (top-level and inside functions), with its line."""
    module = module_name(path, src)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lookalike":
                continue
            # `from lookalike.x import y` may import the submodule y.
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if _is_module(sub, src) else target, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "lookalike"]
    return found


def _is_module(name: str, src: Path = SRC) -> bool:
    rel = Path(*name.split("."))
    return (src / rel).with_suffix(".py").exists() or (src / rel / "__init__.py").exists()


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _files() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_violations() -> list[str]:
    bad = []
    for module, targets in _graph().items():
        src = component(module)
        for target, line in targets:
            dst = component(target)
            if target == "lookalike" and dst == "__init__":
                dst = "catalog"  # `from lookalike import Catalog` reaches the facade
            if src == dst:
                continue
            if src in ROOTS:
                ok = dst in ROOTS[src]
            elif (src, dst) in ALLOWED_SIDEWAYS:
                ok = True
            else:
                ok = LAYERS.get(dst, -1) > LAYERS.get(src, 99)
            if not ok:
                bad.append(f"{module}:{line} -> {target} ({src} may not import {dst})")
    return bad


def store_violations() -> list[str]:
    bad = []
    for module, path in _files().items():
        if component(module) in STORE_USERS:
            continue
        for target, line in imports_of(path):
            if target.startswith("lookalike.data.store"):
                bad.append(f"{module}:{line} imports {target}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "store":
                bad.append(f"{module}:{node.lineno} reads .store")
    return bad


FRONT_ENDS = {"lookalike.cli": {"lookalike.cli.app"}, "lookalike.api.routes": set()}


def sibling_imports() -> list[str]:
    bad = []
    for module, targets in _graph().items():
        for package, allowed in FRONT_ENDS.items():
            if module.rsplit(".", 1)[0] != package:
                continue
            for target, line in targets:
                if target.rsplit(".", 1)[0] == package and target not in allowed and target != module:
                    bad.append(f"{module}:{line} -> {target}")
    return bad


def cycles() -> list[list[str]]:
    graph = {m: {t for t, _ in ts if t != m} for m, ts in _graph().items()}
    # Tarjan's strongly connected components; any component with 2+ modules is a cycle.
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# Shrinks to empty as the refactor lands; a fixed arrow must be removed from here (exact match).
KNOWN_LAYER_VIOLATIONS: set[str] = set()
KNOWN_STORE_VIOLATIONS: set[str] = set()
KNOWN_CYCLES: list[list[str]] = []
KNOWN_SIBLING_IMPORTS: set[str] = set()


def test_imports_point_down_only():
    assert set(layer_violations()) == KNOWN_LAYER_VIOLATIONS


def test_only_catalog_search_and_data_touch_the_store():
    assert set(store_violations()) == KNOWN_STORE_VIOLATIONS


def test_front_end_modules_do_not_share_logic_sideways():
    """A CLI command module or an API route module imports no sibling: shared logic lives below."""
    assert set(sibling_imports()) == KNOWN_SIBLING_IMPORTS


def test_no_import_cycles():
    # Package __init__ files re-exporting their own submodules are not cycles of behaviour.
    real = [c for c in cycles() if not any(m.count(".") < 2 and _files()[m].name == "__init__.py" for m in c)]
    assert real == KNOWN_CYCLES


def test_top_level_holds_only_the_facade():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_MODULES, sorted(top - TOP_LEVEL_MODULES)
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


def test_the_checker_sees_nested_and_relative_imports(tmp_path):
    """The rules would pass vacuously if the parser missed imports inside functions."""
    pkg = tmp_path / "lookalike" / "data"
    (tmp_path / "lookalike" / "explore").mkdir(parents=True)
    pkg.mkdir(parents=True)
    for init in (tmp_path / "lookalike", pkg, tmp_path / "lookalike" / "explore"):
        (init / "__init__.py").write_text("")
    (tmp_path / "lookalike" / "explore" / "clusters.py").write_text("")
    (pkg / "x.py").write_text("def f():\n    from lookalike.catalog import Catalog\n    from ..explore import clusters\n")
    assert imports_of(pkg / "x.py", src=tmp_path) == [("lookalike.catalog", 2), ("lookalike.explore.clusters", 3)]


TESTS = Path(__file__).resolve().parent
TOP_LEVEL_TESTS = {"test_architecture.py", "test_catalog.py", "test_integration_real.py", "test_interfaces.py"}


def test_tests_mirror_the_tree():
    """Each test folder is named after the package it tests (web: the static app); only the facade,
    integration and rule tests sit at the top, next to the shared conftest.py and fakes.py; no
    __init__.py (pytest imports test files by basename, so those stay unique)."""
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert folders <= {p.name for p in PACKAGE.iterdir() if p.is_dir()}, sorted(folders)
    assert {p.name for p in TESTS.glob("test_*.py")} == TOP_LEVEL_TESTS
    assert {p.name for p in TESTS.glob("*.py")} - TOP_LEVEL_TESTS == {"conftest.py", "fakes.py"}
    assert not list(TESTS.rglob("__init__.py"))
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
