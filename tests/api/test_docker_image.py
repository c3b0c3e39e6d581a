"""The Docker image serves every panel and documents what it reads (no Docker daemon needed):
the Dockerfile's extras exist in pyproject and cover every feature ``Catalog.features()`` names, the
MediaPipe wheel goes in as dev.py installs it, and docs/deploy.md's table lists every ``LOOKALIKE_*``
variable the code reads (and nothing stale)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from lookalike.catalog import Catalog

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
# What each panel (a key of Catalog.features()) needs beyond the base install and the `api` extra.
FEATURE_EXTRAS = {"goes_with": set(), "duplicates": {"explore"}, "latent": set(), "clusters": set(),
                  "map": {"explore"}, "shop": {"shop"}}
# Not panels, but what `lookalike index` of a table and the int8/ONNX runtimes need inside the image.
ALSO = {"api", "onnx", "tables"}


def _docker_run_lines() -> str:
    """The Dockerfile's instructions with continuation lines joined and comment lines dropped."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(lines).replace("\\\n", " ")


def _installed_extras() -> set[str]:
    found = re.findall(r'pip install "?\.\[([a-z0-9_,-]+)\]', _docker_run_lines())
    assert len(found) == 1, f"expected one `pip install .[extras]` in the Dockerfile, found {found}"
    return set(found[0].split(","))


def test_extras_exist_and_cover_every_panel(tmp_path):
    extras = _installed_extras()
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared), f"Dockerfile installs extras pyproject does not declare: {extras - set(declared)}"
    features = set(Catalog.create("probe", home=tmp_path).features())
    assert features == set(FEATURE_EXTRAS), ("Catalog.features() changed: say in FEATURE_EXTRAS which extra each "
                                             f"panel needs ({features ^ set(FEATURE_EXTRAS)})")
    needed = set().union(*FEATURE_EXTRAS.values(), ALSO)
    assert needed <= extras, f"the image would answer 409 feature_unavailable for panels needing {needed - extras}"


def test_mediapipe_installed_as_dev_py_does():
    dev = (REPO / "dev.py").read_text()
    pins = re.findall(r'"(mediapipe==[0-9.]+)"', dev)
    assert pins, "dev.py no longer pins mediapipe"
    run = _docker_run_lines()
    assert re.search(rf'pip install --no-deps "?{re.escape(pins[0])}', run), \
        f"the Dockerfile must install {pins[0]} with --no-deps (its declared deps are heavy and unused)"
    assert "mediapipe.python.solutions.pose" in run   # the build fails if shop the look cannot load


def test_volume_and_home():
    assert re.search(r"LOOKALIKE_HOME=/data\b", DOCKERFILE)
    assert 'VOLUME ["/data"]' in DOCKERFILE


_SCAN = """
import ast, json, re, sys
from pathlib import Path
repo = Path(sys.argv[1])
found = {}
for path in sorted((repo / "src" / "lookalike").rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \\
                and re.fullmatch(r"LOOKALIKE_[A-Z0-9_]+", node.value):
            found.setdefault(node.value, str(path.relative_to(repo)))
print(json.dumps(found))
"""


def _env_reads() -> dict[str, str]:
    """Every ``LOOKALIKE_*`` string constant in src/ (os.environ / getenv keys, typer ``envvar=``) -> a file.
    Parsed in a fresh interpreter: in a test process with other threads alive, CPython 3.11's AST
    constructor can raise a spurious ``SystemError: AST constructor recursion depth mismatch``
    (python/cpython gh-106905; seen once in CI)."""
    out = subprocess.run([sys.executable, "-c", _SCAN, str(REPO)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_every_env_variable_is_documented_once():
    doc = (REPO / "docs" / "deploy.md").read_text()
    table = doc[doc.index("## Environment variables"):]
    rows = re.findall(r"^\| `(LOOKALIKE_[A-Z0-9_]+)` \|", table, flags=re.M)
    assert len(rows) == len(set(rows)), "a variable is listed twice"
    reads = _env_reads()
    assert {"LOOKALIKE_HOME", "LOOKALIKE_API_KEY"} <= set(reads)   # the scan itself works
    missing = {name: where for name, where in reads.items() if name not in rows}
    assert not missing, f"add these to the table in docs/deploy.md: {missing}"
    stale = set(rows) - set(reads)
    assert not stale, f"docs/deploy.md lists variables no code reads: {stale}"
    for name in re.findall(r"\b(LOOKALIKE_[A-Z0-9_]+)=", _docker_run_lines()):
        assert name in rows, f"the Dockerfile sets {name}, undocumented"
