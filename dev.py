#!/usr/bin/env python3
"""One-command set-up and tasks for lookalike. Needs only python3.

    python3 dev.py demo    # create .venv, install, index the bundled sample catalog, serve the web app
    python3 dev.py test    # create .venv, install with test extras, run the test suite

Re-runs reuse the virtualenv and skip installing when nothing changed. Extra arguments after
`test` go to pytest (e.g. `python3 dev.py test -m slow`); after `demo`, to `lookalike serve`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; numpy<2 for mediapipe.
BASE = ["torch==2.13.0", "numpy==1.26.4"]
EXTRAS = {"demo": "api,onnx,shop,explore,tables", "test": "api,onnx,shop,explore,tables,backbones,milvus,ray,dev"}
# mediapipe's wheel declares heavy dependencies we do not need (jax, opencv-contrib, sounddevice);
# its lean runtime dependencies are in the [shop] extra, the wheel itself goes in without them.
NO_DEPS = ["mediapipe==0.10.21"]
SAMPLE = ROOT / "sample-catalog" / "catalog.csv"


def sh(*cmd: str | Path, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def ensure_venv(task: str) -> None:
    if not PY.exists():
        print(f"creating virtualenv in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    extras = EXTRAS[task]
    stamp = VENV / f".installed-{task}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + repr((BASE, extras, NO_DEPS)).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    sh(*pip, "--upgrade", "pip")
    sh(*pip, *BASE)
    sh(*pip, "-e", f"{ROOT}[{extras}]", "numpy==1.26.4", "torch==2.13.0")
    sh(*pip, "--no-deps", *NO_DEPS)
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """Browser tests drive Debian's chromium; install it when we can (root + apt), else they skip."""
    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        return
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        try:
            sh("apt-get", "update", "-qq")
            sh("apt-get", "install", "-y", "-qq", "chromium", env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        except subprocess.CalledProcessError:
            print("could not install chromium: browser tests will be skipped")
    else:
        print("chromium not found and not installable here: browser tests will be skipped")


def demo(args: list[str]) -> int:
    """Index the sample catalog, prepare every web-app panel, then serve it."""
    ensure_venv("demo")
    lookalike = [PY, "-m", "lookalike"]
    sh(*lookalike, "index", SAMPLE, "--catalog", "sample")
    sh(*lookalike, "cluster", "--catalog", "sample", "--k", "auto", "--label", "label")
    sh(*lookalike, "map", "--catalog", "sample", "--size", "2400")
    if not (home() / "models" / "vae" / "sample-vae" / "weights.pt").exists():
        # Once, at most ~3 min on 2 idle CPU cores (training stops at its 140 s budget): the latent explorer decodes with it.
        sh(*lookalike, "train", "autoencoder", "--catalog", "sample", "--kind", "vae", "--name", "sample-vae")
    sh(*lookalike, "search", "--catalog", "sample", "--item", first_item_id("shoes"), "-k", "8",
       "--grid", ROOT / "out" / "sample-search.png")
    return subprocess.call([str(c) for c in [*lookalike, "serve", "--catalog", "sample", *args]])


def home() -> Path:
    """Same rule as lookalike.config.home_dir (this script runs before lookalike is installed)."""
    return Path(os.environ.get("LOOKALIKE_HOME", "~/.lookalike")).expanduser()


def first_item_id(label: str) -> str:
    import csv

    with open(SAMPLE, newline="") as f:
        return next(row["id"] for row in csv.DictReader(f) if row["label"] == label)


def test(args: list[str]) -> int:
    ensure_venv("test")
    ensure_chromium()
    env = dict(os.environ, LOOKALIKE_THREADS=os.environ.get("LOOKALIKE_THREADS", "2"))
    code = subprocess.call([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env)
    return 0 if code == 5 and "-m" in args else code  # 5 = no test selected by a marker filter


def main() -> int:
    tasks = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in tasks:
        print(__doc__)
        return 2
    return tasks[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
