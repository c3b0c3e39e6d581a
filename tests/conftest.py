"""Shared fixtures: a temporary lookalike home, synthetic labelled images, the shared datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKALIKE_SHARED", REPO.parent / "shared")) / "datasets"
SAMPLE_CATALOG = REPO / "sample-catalog"

os.environ.setdefault("LOOKALIKE_THREADS", "2")

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220)}


def draw_shape(shape: str, colour: tuple[int, int, int], size: int = 96, seed: int = 0) -> Image.Image:
    """A coloured shape at a jittered position/scale on a light noisy background."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(215, 256, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    r = size * rng.uniform(0.22, 0.34)
    cx, cy = size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8)
    jitter = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=jitter)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=jitter)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=jitter)
    return img


def make_shapes_folder(root: Path, per_class: int = 6, size: int = 96) -> Path:
    """root/<shape>-<colour>/<n>.png — a folder catalog with 9 classes of known content."""
    seed = 0
    for shape in SHAPES:
        for name, rgb in COLOURS.items():
            folder = root / f"{shape}-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                draw_shape(shape, rgb, size, seed).save(folder / f"{shape}-{name}-{i}.png")
                seed += 1
    return root


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An isolated LOOKALIKE_HOME for the test."""
    path = tmp_path / "home"
    monkeypatch.setenv("LOOKALIKE_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory) -> Path:
    return make_shapes_folder(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED} (set LOOKALIKE_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def clothing_small(shared_datasets) -> Path:
    path = shared_datasets / "clothing-small"
    if not (path / "catalog.csv").exists():
        pytest.skip("clothing-small not present in the shared datasets")
    return path


@pytest.fixture(scope="session")
def sample_catalog() -> Path:
    return SAMPLE_CATALOG


@pytest.fixture(scope="session")
def web_home(tmp_path_factory, shapes_folder) -> Path:
    """A home with catalog 'shapes' (colour-hist, metadata columns, one exact duplicate) plus stored
    clusters, a map and a tiny VAE: what the API and browser tests serve (see tests/web_catalog.py)."""
    from web_catalog import build_web_home

    return build_web_home(tmp_path_factory.mktemp("web-home"), shapes_folder)
