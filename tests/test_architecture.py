"""The layering rules of docs/architecture.md, checked on every import in src/ (nested ones too).

1. Imports point down only: cli, api -> bench -> catalog -> explore, shop -> train -> evaluation
   -> search -> index -> encoders -> viz -> data -> config. ``viz`` is a leaf that only draws
   (it may use data and config); ``bench`` is a leaf only the CLI reaches.
2. Only ``catalog``, ``search`` and ``data/`` touch the store.
No import cycles between modules. Library imports sit at the top of a module; one inside a function
must save loading a heavy package (torch, the `api` extra...) on a path that stays light.
"""
from __future__ import annotations

import ast
import subprocess
import sys
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
# Names through which a Catalog / IndexManager reaches its store (Catalog._store, Catalog._indexes).
STORE_ATTRIBUTES = {"store", "_store", "indexes", "_indexes"}
# bench is a leaf only the CLI reaches (and bench itself).
BENCH_USERS = {"cli", "bench"}
TOP_LEVEL_MODULES = {"__init__", "__main__", "config", "catalog", "search"}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _import_nodes(tree: ast.AST, where: str = "all") -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """(import statement, inside a function?) for ``where`` = "all", "top" (run on import: module
    level and class bodies, not ``if TYPE_CHECKING:``) or "function" (inside a def or lambda)."""
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                if where == "all":
                    visit(child, in_function)
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if where == "all" or (where == "function") == inside:
                    out.append((child, inside))
            visit(child, inside)

    visit(tree, False)
    return sorted(out, key=lambda pair: pair[0].lineno)


def imports_of(path: Path, src: Path = SRC, where: str = "all") -> list[tuple[str, int]]:
    """Every lookalike module imported by ``path`` (top-level and inside functions, or only
    ``where`` = "top" / "function"), with its line."""
    module = module_name(path, src)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node, _ in _import_nodes(ast.parse(path.read_text()), where):
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


def _graph(src: Path = SRC) -> dict[str, list[tuple[str, int]]]:
    return {module_name(p, src): imports_of(p, src) for p in sorted((src / "lookalike").rglob("*.py"))}


def _files(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / "lookalike").rglob("*.py"))}


def layer_violations(src_root: Path = SRC) -> list[str]:
    bad = []
    for module, targets in _graph(src_root).items():
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
            if dst == "bench" and src not in BENCH_USERS:
                ok = False  # bench is a leaf only the CLI reaches, whatever LAYERS allows
            if not ok:
                bad.append(f"{module}:{line} -> {target} ({src} may not import {dst})")
    return bad


def _store_reads(path: Path) -> list[tuple[str, int]]:
    """(name, line) of every ``x.store`` / ``x._store`` / ``x._indexes`` read and
    ``getattr(x, "store")``-style lookup in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in STORE_ATTRIBUTES:
            found.append((f".{node.attr}", node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in STORE_ATTRIBUTES):
            found.append((f"getattr {node.args[1].value!r}", node.lineno))
    return found


def store_violations(src: Path = SRC, tests: Path | None = None) -> list[str]:
    """Store access outside catalog, search and data/: an import of lookalike.data.store or a read
    of a catalog's store. In ``tests`` (default: this folder) only fakes.py may read it, for the
    fixtures that write vectors straight to the store; tests may import data.store to test it."""
    tests = Path(__file__).resolve().parent if tests is None else tests
    bad = []
    for module, path in _files(src).items():
        if component(module) in STORE_USERS:
            continue
        for target, line in imports_of(path, src):
            if target.startswith("lookalike.data.store"):
                bad.append(f"{module}:{line} imports {target}")
        bad += [f"{module}:{line} reads {what}" for what, line in _store_reads(path)]
    for path in sorted(tests.rglob("*.py")):
        if path.relative_to(tests).as_posix() != "fakes.py":
            bad += [f"tests/{path.relative_to(tests).as_posix()}:{line} reads {what}" for what, line in _store_reads(path)]
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


# Loading any of these costs seconds (torch ~8 s here) or needs an optional extra (`api`, `onnx`,
# `ray`, `shop`, `explore`, `milvus`). `import lookalike` and `lookalike --help` load none of them.
# (httpx is a base dependency: data.fetch downloads catalog images.)
HEAVY_PACKAGES = {"torch", "torchvision", "sklearn", "scipy", "matplotlib", "fastapi", "starlette", "uvicorn",
                  "onnx", "onnxruntime", "ray", "mediapipe", "umap", "imagehash", "pymilvus", "milvus_lite"}
LIGHT_ENTRY_POINTS = ["lookalike", "lookalike.cli"]


def _parents(module: str) -> list[str]:
    """``lookalike.a.b`` -> the packages whose ``__init__`` runs first: lookalike, lookalike.a."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def heavy_modules(src: Path = SRC) -> dict[str, str]:
    """Each lookalike module whose import loads a HEAVY_PACKAGES member, with the chain that does
    (e.g. ``lookalike.train.metric -> lookalike.train.losses -> torch``); only imports that run at
    import time count (module level and class bodies)."""
    files = {module_name(p, src): p for p in sorted((src / "lookalike").rglob("*.py"))}
    chains: dict[str, str | None] = {}

    def chain(module: str) -> str | None:
        if module not in files:
            return None
        if module in chains:
            return chains[module]
        chains[module] = None  # an import cycle ends here (test_no_import_cycles reports those)
        tree = ast.parse(files[module].read_text())
        third_party = sorted({a.name.split(".")[0] for node, _ in _import_nodes(tree, "top") if isinstance(node, ast.Import)
                              for a in node.names}
                             | {node.module.split(".")[0] for node, _ in _import_nodes(tree, "top")
                                if isinstance(node, ast.ImportFrom) and not node.level and node.module})
        found = next((f"{module} -> {name}" for name in third_party if name in HEAVY_PACKAGES), None)
        for target, _ in imports_of(files[module], src, "top"):
            if found:
                break
            for step in [*_parents(target), target]:
                sub = chain(step) if step != module else None
                if sub:
                    found = f"{module} -> {sub}"
                    break
        chains[module] = found
        return found

    return {m: c for m in files if (c := chain(m))}


def heavy_packages(src: Path = SRC) -> dict[str, set[str]]:
    """Every lookalike module -> the HEAVY_PACKAGES its import loads (module level and class bodies,
    through other lookalike modules and their parent packages too)."""
    files = {module_name(p, src): p for p in sorted((src / "lookalike").rglob("*.py"))}
    loads, steps = {}, {}
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        names = {a.name for node, _ in _import_nodes(tree, "top") if isinstance(node, ast.Import) for a in node.names}
        names |= {node.module for node, _ in _import_nodes(tree, "top")
                  if isinstance(node, ast.ImportFrom) and not node.level and node.module}
        loads[module] = {n.split(".")[0] for n in names} & HEAVY_PACKAGES
        steps[module] = {step for target, _ in imports_of(path, src, "top") for step in [*_parents(target), target]
                         if step in files and step != module}
    changed = True
    while changed:  # a fixpoint, so import cycles need no special case
        changed = False
        for module, found in loads.items():
            more = set().union(*(loads[s] for s in steps[module])) - found
            if more:
                found |= more
                changed = True
    return loads


def lazy_imports(src: Path = SRC) -> list[str]:
    """Library imports inside functions that have no reason to be there. The one reason: the import
    loads a heavy package (torch, the `api` extra...) that the importing module does not load itself,
    so ``import lookalike``, ``lookalike --help`` and every command that does not need it skip it
    (an API route module loads fastapi, yet one that imports torch lazily still spares the server it).
    Optional third-party extras stay lazy at their point of use, which this rule does not police."""
    heavy = heavy_packages(src)
    bad = []
    for path in sorted((src / "lookalike").rglob("*.py")):
        module = module_name(path, src)
        for target, line in imports_of(path, src, "function"):
            loads = set().union(*(heavy.get(m, set()) for m in [*_parents(target), target]))
            saves = loads - heavy[module]
            if not saves:
                why = "loads nothing heavy" if not loads else "its module is heavy already"
                bad.append(f"{module}:{line} -> {target} ({why}: import it at the top)")
    return list(dict.fromkeys(bad))  # `from x import a, b` is one import


def test_imports_point_down_only():
    assert layer_violations() == []


def test_only_catalog_search_and_data_touch_the_store():
    assert store_violations() == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    """A fake src/ holding ``files`` (path under lookalike/ -> code), every package with an __init__."""
    for rel, code in files.items():
        path = root / "lookalike" / rel
        for folder in [root / "lookalike", *[p for p in path.parents if root / "lookalike" in p.parents]]:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "__init__.py").touch()
        path.write_text(code)
    return root


def test_the_checker_sees_every_way_to_the_store(tmp_path):
    """Reads of ``.store``, ``._store``, ``._indexes`` and ``getattr(x, "store")`` are reported outside
    catalog, search and data/, and in every test file but fakes.py."""
    src = _tree(tmp_path / "src", {
        "catalog.py": "class Catalog:\n    def n(self):\n        return self._store.count()\n",
        "data/ingest.py": "def f(cat):\n    return cat._store\n",
        "explore/x.py": "import lookalike.data.store\ndef f(cat):\n    a = cat.store\n    b = cat._indexes\n"
                        "    return getattr(cat, '_store'), getattr(cat, 'store', None), cat.stored\n"})
    tests = tmp_path / "tests"
    (tests / "api").mkdir(parents=True)
    (tests / "fakes.py").write_text("def f(cat):\n    return cat._store\n")
    (tests / "api" / "test_y.py").write_text("from lookalike.data.store import Store\ndef test(cat):\n"
                                             "    assert cat._store\n")
    assert sorted(store_violations(src, tests)) == [
        "lookalike.explore.x:1 imports lookalike.data.store", "lookalike.explore.x:3 reads .store",
        "lookalike.explore.x:4 reads ._indexes", "lookalike.explore.x:5 reads getattr '_store'",
        "lookalike.explore.x:5 reads getattr 'store'", "tests/api/test_y.py:3 reads ._store"]


def test_only_the_cli_reaches_bench(tmp_path):
    """LAYERS puts api above bench, but bench is a leaf only the CLI (and bench itself) imports."""
    src = _tree(tmp_path, {"bench/api.py": "from lookalike.bench import data\n", "bench/data.py": "",
                           "cli/bench.py": "from lookalike.bench.api import run\n",
                           "api/routes/x.py": "def f():\n    from lookalike.bench import api\n"})
    assert layer_violations(src) == ["lookalike.api.routes.x:2 -> lookalike.bench.api (api may not import bench)"]


def test_front_end_modules_do_not_share_logic_sideways():
    """A CLI command module or an API route module imports no sibling: shared logic lives below."""
    assert sibling_imports() == []


def test_no_import_cycles():
    # Package __init__ files re-exporting their own submodules are not cycles of behaviour.
    real = [c for c in cycles() if not any(m.count(".") < 2 and _files()[m].name == "__init__.py" for m in c)]
    assert real == []


def test_library_imports_sit_at_the_top():
    """No import inside a function to dodge a cycle or for no reason: only to skip a heavy package."""
    assert lazy_imports() == []


def test_import_lookalike_and_the_cli_load_nothing_heavy():
    """The reason the remaining lazy imports exist: `import lookalike` (Catalog.open) and
    `lookalike --help` load no heavy package (measured: ~2 s with 2 busy cores, ~10 s with torch)."""
    for entry in LIGHT_ENTRY_POINTS:
        assert heavy_modules().get(entry) is None, heavy_modules()[entry]
    code = (f"import sys; import {', '.join(LIGHT_ENTRY_POINTS)}; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(SRC), "PATH": ""}).stdout.split()
    assert not HEAVY_PACKAGES & set(loaded), sorted(HEAVY_PACKAGES & set(loaded))


def test_the_checker_sees_lazy_imports_and_what_they_save(tmp_path):
    """A lazy import of a light module is reported; one that skips torch (directly or through
    another module) is not, unless its own module loads torch anyway (loading fastapi is no reason
    to load torch too); TYPE_CHECKING imports never run."""
    root = tmp_path / "lookalike"
    for package in ("", "data", "explore"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "data" / "light.py").write_text("import numpy\nfrom typing import TYPE_CHECKING\n"
                                            "if TYPE_CHECKING:\n    import torch\n")
    (root / "data" / "heavy.py").write_text("from torch import nn\n")
    (root / "data" / "heavier.py").write_text("from . import heavy\n")
    (root / "explore" / "x.py").write_text("def f():\n    from lookalike.data import light\n"
                                           "def g():\n    from lookalike.data.heavier import y\n")
    (root / "explore" / "torchy.py").write_text("import torch\nclass C:\n    def m(self):\n"
                                                "        from ..data import heavy\n")
    (root / "data" / "web.py").write_text("import fastapi\n")
    (root / "explore" / "route.py").write_text("import fastapi\ndef f():\n    from lookalike.data import heavier\n"
                                               "def g():\n    from lookalike.data import web\n")
    assert heavy_modules(tmp_path) == {"lookalike.data.heavy": "lookalike.data.heavy -> torch",
                                       "lookalike.data.heavier": "lookalike.data.heavier -> lookalike.data.heavy -> torch",
                                       "lookalike.explore.torchy": "lookalike.explore.torchy -> torch",
                                       "lookalike.data.web": "lookalike.data.web -> fastapi",
                                       "lookalike.explore.route": "lookalike.explore.route -> fastapi"}
    assert lazy_imports(tmp_path) == [
        "lookalike.explore.route:5 -> lookalike.data.web (its module is heavy already: import it at the top)",
        "lookalike.explore.torchy:4 -> lookalike.data.heavy (its module is heavy already: import it at the top)",
        "lookalike.explore.x:2 -> lookalike.data.light (loads nothing heavy: import it at the top)"]


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
