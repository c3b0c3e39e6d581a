"""A `kill -9` during ingest, then the same command again: nothing lost, nothing duplicated."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
from PIL import Image

N_IMAGES = 1500


def make_many(root, n=N_IMAGES):
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        Image.new("RGB", (24, 24), colour).save(folder / f"img{i:05d}.png")
    return root


def stored_counts(db_path):
    if not db_path.exists():
        return 0, 0
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            vectors = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return items, vectors
    except sqlite3.OperationalError:  # schema not created yet
        return 0, 0


def index_cmd(source, home):
    return [sys.executable, "-m", "lookalike", "index", str(source), "--catalog", "kill", "--encoder", "colour-hist",
            "--batch-size", "4", "--home", str(home)]


def test_kill_during_ingest_then_resume(tmp_path):
    source = make_many(tmp_path / "src")
    home = tmp_path / "home"
    db_path = home / "catalogs" / "kill" / "catalog.sqlite"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(index_cmd(source, home), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        items, _ = stored_counts(db_path)
        if items >= 40:
            proc.send_signal(signal.SIGKILL)
            killed_at = items
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert killed_at is not None, "ingest finished before it could be killed; raise N_IMAGES"
    items, vectors = stored_counts(db_path)
    assert 0 < items < N_IMAGES and items == vectors  # whole batches only

    done = subprocess.run(index_cmd(source, home) + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    items, vectors = stored_counts(db_path)
    assert items == vectors == N_IMAGES
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(DISTINCT id) FROM items").fetchone()[0] == N_IMAGES
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    import json

    report = json.loads(done.stdout)
    assert report["unchanged"] >= killed_at - 4 and report["added"] + report["unchanged"] == N_IMAGES
