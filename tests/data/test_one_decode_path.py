"""One decode path: the same file gives the same vector through ingest, the Python API (path and
bytes), the CLI and an HTTP upload, and ranks itself first with cosine score 1.0 everywhere
(issue #13: an uploaded catalog photo used to rank a smaller web copy of itself above itself)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.catalog import Catalog
from lookalike.cli import app

ENCODER = "colour-hist"  # cosine; 64 px input, so a 960 px JPEG decodes in JPEG draft mode (1/8)


def textured(width: int, height: int, seed: int) -> Image.Image:
    """A noisy colour gradient: its histogram depends on how the pixels were decoded and scaled."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    base = np.stack([x * 255, y * 255, (1 - x) * 180 + 40], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def decode_catalog(home, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    big = textured(960, 720, 0)
    big.save(folder / "p2.jpg", quality=92)
    big.resize((240, 180), Image.LANCZOS).save(folder / "p2_web.jpg", quality=85)  # the smaller web copy
    rgba = textured(300, 200, 1).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((300, 200)))
    rgba.save(folder / "cutout.png")
    for n in range(3):
        textured(400, 300, 10 + n).save(folder / f"other{n}.jpg")
    cat = Catalog.create("decode", home=home)
    assert cat.index(folder, ENCODER).failed == 0
    return cat, folder


@pytest.mark.parametrize("item", ["p2", "cutout"])
def test_same_bytes_same_vector_in_every_path(decode_catalog, home, item):
    cat, folder = decode_catalog
    path = next(folder.glob(f"{item}.*"))
    with Image.open(path) as probe:
        assert probe.format == ("JPEG" if item == "p2" else "PNG")
        assert min(probe.size) >= 2 * cat.encoder().image_size or item == "cutout"  # draft applies to p2
    ids, matrix = cat.vectors()
    stored = matrix[ids.index(item)]
    data = path.read_bytes()
    for query in (path, str(path), data):
        np.testing.assert_allclose(cat.embed_images([query])[0], stored, atol=1e-5)
        top = cat.search(image=query, k=3)[0]
        assert top.id == item and top.score == pytest.approx(1.0, abs=1e-5)

    result = CliRunner().invoke(app, ["search", "--catalog", "decode", "--image", str(path), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["results"][0]
    assert top["id"] == item and top["score"] == pytest.approx(1.0, abs=1e-5)

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lookalike.api import create_app

    with TestClient(create_app("decode", home=home, api_key="")) as client:
        response = client.post("/api/search/image", files={"file": (path.name, data)}, data={"k": "3"})
    assert response.status_code == 200, response.text
    top = response.json()["results"][0]
    assert top["id"] == item and top["score"] == pytest.approx(1.0, abs=1e-5)
