"""The latent explorer routes: slider ranges, decoding, nearest items, interpolation."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fakes import QUERY_ID, assert_error  # noqa: E402


def test_latent_info_gives_slider_ranges(client):
    body = client.get("/api/latent").json()
    assert body["model"] == "shapes-vae" and body["encoder"] == "vae:shapes-vae"
    assert body["dim"] == 16 and len(body["ranges"]) == 16 and body["image_size"] == 16
    for r in body["ranges"]:
        assert r["min"] <= r["mean"] <= r["max"] and r["std"] >= 0


def test_decode_latent_vector_to_png(client):
    # far apart in the prior (a one-epoch VAE's catalog ranges are narrow)
    low = client.post("/api/latent/decode?size=64", json={"z": [-3.0] * 16})
    high = client.post("/api/latent/decode?size=64", json={"z": [3.0] * 16})
    assert low.status_code == 200 and low.headers["content-type"] == "image/png"
    a, b = (np.asarray(Image.open(io.BytesIO(x.content))) for x in (low, high))
    assert a.shape == (64, 64, 3) and np.abs(a.astype(int) - b.astype(int)).mean() > 2
    native = Image.open(io.BytesIO(client.post("/api/latent/decode?size=0", json={"z": [0.0] * 16}).content))
    assert native.size == (16, 16)


def test_decode_errors(client):
    assert_error(client.post("/api/latent/decode", json={"z": [0.0] * 3}), 422, "bad_request")
    assert_error(client.post("/api/latent/decode", json={"z": []}), 422)
    assert_error(client.post("/api/latent/decode?size=100", json={"z": [0.0] * 16}), 422)
    nan = json.dumps({"z": [0.0] * 15 + [float("nan")]})
    assert_error(client.post("/api/latent/decode", content=nan, headers={"content-type": "application/json"}), 422)


def test_latent_nearest_and_item_position(client):
    z = client.get(f"/api/items/{QUERY_ID}/latent").json()["z"]
    assert len(z) == 16
    body = client.post("/api/latent/nearest?k=4", json={"z": z}).json()
    assert len(body["results"]) == 4 and body["results"][0]["id"] == QUERY_ID  # its own µ is nearest
    assert_error(client.get("/api/items/missing/latent"), 404)
    assert_error(client.post("/api/latent/nearest?k=0", json={"z": z}), 422)


def test_latent_interpolation(client):
    a, b = QUERY_ID, "square-blue-3"
    body = client.get(f"/api/latent/interpolate?a={a}&b={b}&steps=5").json()
    assert len(body["steps"]) == 5 and len(body["images"]) == 5
    assert body["images"][0].startswith("data:image/png;base64,")
    za = client.get(f"/api/items/{a}/latent").json()["z"]
    zb = client.get(f"/api/items/{b}/latent").json()["z"]
    assert np.allclose(body["steps"][0], za, atol=1e-5) and np.allclose(body["steps"][-1], zb, atol=1e-5)
    assert_error(client.get(f"/api/latent/interpolate?a={a}&b=missing"), 404)
    assert_error(client.get(f"/api/latent/interpolate?a={a}&b={b}&steps=1"), 422)


def test_latent_sample_is_seeded_and_lands_among_the_items(client):
    first = client.get("/api/latent/sample?seed=3").json()["z"]
    assert len(first) == 16 and first == client.get("/api/latent/sample?seed=3").json()["z"]
    assert first != client.get("/api/latent/sample?seed=4").json()["z"]
    ranges = client.get("/api/latent").json()["ranges"]
    # 200 aggregate draws centre on the items' mean (the standard prior centres on 0)
    draws = np.array([client.get(f"/api/latent/sample?seed={s}").json()["z"] for s in range(200)])
    means, stds = np.array([r["mean"] for r in ranges]), np.array([r["std"] for r in ranges])
    assert (np.abs(draws.mean(0) - means) < 0.5 * stds + 0.5 * draws.std(0)).all()
    standard = client.get("/api/latent/sample?seed=3&prior=standard").json()["z"]
    assert len(standard) == 16 and standard != first
    assert_error(client.get("/api/latent/sample?prior=gmm"), 422)
    assert_error(client.get("/api/latent/sample?seed=-1"), 422)
