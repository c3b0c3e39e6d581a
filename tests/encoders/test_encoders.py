"""Encoders: registry, shapes/colours of known classes, own weights, colour fusion, colour maths."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.encoders.colour import ciede2000, colour_descriptor, dominant_colour, rgb_to_lab
from lookalike.encoders import available, describe, get_encoder
from lookalike.evaluation.retrieval import evaluate_vectors

from fakes import draw_shape

CHANCE = 1 / 9  # nine shape-colour classes


@pytest.fixture(scope="module")
def shapes(shapes_folder):
    # Four of each of the nine classes keeps the CNN tests to a few seconds.
    paths = [p for p in sorted(Path(shapes_folder).glob("*/*.png")) if int(p.stem.rsplit("-", 1)[1]) < 4]
    images = [Image.open(p).convert("RGB") for p in paths]
    labels = [p.parent.name for p in paths]
    return images, labels


def _p_at_1(encoder, images, labels) -> float:
    vectors = encoder.encode(images)
    assert vectors.shape == (len(images), encoder.dim) and vectors.dtype == np.float32
    return evaluate_vectors(vectors, labels, ks=(1,), metric=encoder.metric).overall["P@1"]


def test_registry_lists_and_describes_builtins():
    for name in ("effnet-lite0", "effnet-lite0-colour", "colour-hist", "tiny"):
        assert name in available()
        assert describe()[name]
    with pytest.raises(KeyError):
        get_encoder("no-such-encoder")


def test_every_registering_module_is_listed_for_lazy_import():
    """A kind whose module is missing from _LAZY_MODULES is unreachable by get_encoder (KeyError):
    import every encoders module, then each registered kind must be listed under its own module."""
    import lookalike.encoders as encoders

    for module in pkgutil.iter_modules(encoders.__path__, "lookalike.encoders."):
        importlib.import_module(module.name)
    registered = {kind: factory.__module__ for kind, factory in encoders._FACTORIES.items()}
    assert registered == encoders._LAZY_MODULES


def test_classical_baselines_beat_chance(shapes):
    images, labels = shapes
    # A histogram sees colour, not shape: well above chance on colour alone (chance 1/3).
    colours = [label.split("-")[1] for label in labels]
    assert _p_at_1(get_encoder("colour-hist"), images, colours) > 0.7
    assert _p_at_1(get_encoder("tiny"), images, labels) > 2 * CHANCE
    assert get_encoder("tiny").metric == "l2"
    with pytest.raises(ValueError):
        get_encoder("tiny:x")


def test_effnet_beats_chance_and_is_normalised(shapes):
    images, labels = shapes
    encoder = get_encoder("effnet-lite0")
    assert encoder.dim == 1280 and encoder.metric == "cosine"
    p_at_1 = _p_at_1(encoder, images, labels)
    assert p_at_1 > 4 * CHANCE  # measured 0.89 on these 36 images
    vectors = encoder.encode(images[:3])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Same image, same vector; deterministic across calls.
    assert np.allclose(encoder.encode(images[:1]), vectors[:1], atol=1e-5)


def test_own_weights_file(tmp_path, shapes):
    images, _ = shapes
    default = get_encoder("effnet-lite0")
    state = default.backbone.net.state_dict()
    # A "fine-tuned" checkpoint: nested, DataParallel-prefixed, different classifier, changed head.
    tuned = {f"module.{k}": v.clone() for k, v in state.items() if not k.startswith("_fc.")}
    tuned["module._fc.weight"] = torch.zeros(5, 1280)
    tuned["module._bn1.bias"] += 0.5
    path = tmp_path / "tuned.pth"
    torch.save({"state_dict": tuned, "epoch": 3}, path)
    own = get_encoder(f"effnet-lite0:{path}")
    assert own.fingerprint() != default.fingerprint()
    a, b = default.encode(images[:2]), own.encode(images[:2])
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)

    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(ValueError, match="EfficientNet-Lite0"):
        get_encoder(f"effnet-lite0:{bad}")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        get_encoder(f"effnet-lite0:{junk}")
    with pytest.raises(FileNotFoundError):
        get_encoder(f"effnet-lite0:{tmp_path / 'missing.pth'}")


def test_options_change_fingerprint_and_bad_options_fail():
    plain = get_encoder("effnet-lite0:colour=0")
    flipped = get_encoder("effnet-lite0:flip=1,colour=0")
    assert plain.fingerprint() != flipped.fingerprint()
    with pytest.raises(ValueError):
        get_encoder("effnet-lite0:resize=sideways")
    with pytest.raises(ValueError):
        get_encoder("effnet-lite0:bogus=1")


def test_colour_fusion_is_a_weighted_cosine(shapes):
    images, labels = shapes
    w = 0.4
    fused = get_encoder(f"effnet-lite0-colour:{w}")
    plain = get_encoder("effnet-lite0:colour=0")
    v = fused.encode(images[:4])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cnn = plain.encode(images[:4])
    col = np.stack([colour_descriptor(im) for im in images[:4]])
    expected = (1 - w) * cnn @ cnn.T + w * col @ col.T
    assert np.allclose(v @ v.T, expected, atol=1e-4)


def test_colour_fusion_keeps_the_colour(shapes):
    images, labels = shapes
    colours = [label.split("-")[1] for label in labels]
    kinds = [label.split("-")[0] for label in labels]
    plain = get_encoder("effnet-lite0").encode(images)
    fused = get_encoder("effnet-lite0-colour").encode(images)
    p5 = lambda v, y: evaluate_vectors(v, y, ks=(5,)).overall["P@5"]  # noqa: E731
    # Measured on these 36 images: same-colour P@5 0.46 -> 0.61, same-shape P@5 1.00 -> 0.99.
    assert p5(fused, colours) > p5(plain, colours) + 0.1
    assert p5(fused, kinds) > 0.9


def test_transparent_png_matches_white_background_rgb(tmp_path, shapes):
    from lookalike.data.images import open_image

    images, _ = shapes
    rgb = images[0]
    # The same picture with its light background made transparent: to_rgb composites on white.
    rgba = rgb.convert("RGBA")
    alpha = np.where(np.asarray(rgb).min(axis=2) > 210, 0, 255).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "a.png")
    flat = Image.fromarray(np.where(alpha[..., None] == 0, 255, np.asarray(rgb)).astype(np.uint8))
    encoder = get_encoder("effnet-lite0")
    a, b = encoder.encode([open_image(tmp_path / "a.png"), flat])
    assert float(a @ b) > 0.999


# -- colour maths ------------------------------------------------------------------------------
@pytest.mark.parametrize("lab1, lab2, expected", [
    # Reference pairs from Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula".
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
])
def test_ciede2000_reference_pairs(lab1, lab2, expected):
    assert ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)
    assert ciede2000(lab2, lab1) == pytest.approx(expected, abs=1e-4)


def test_rgb_to_lab_anchors():
    assert rgb_to_lab([255, 255, 255]) == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert rgb_to_lab([0, 0, 0]) == pytest.approx([0.0, 0.0, 0.0], abs=0.01)
    assert rgb_to_lab([255, 0, 0]) == pytest.approx([53.24, 80.09, 67.20], abs=0.05)


def test_dominant_colour_ignores_the_background():
    red, blue = draw_shape("square", (220, 40, 40), seed=1), draw_shape("circle", (40, 70, 220), seed=2)
    assert ciede2000(dominant_colour(red), rgb_to_lab([220, 40, 40])) < 10
    assert ciede2000(dominant_colour(blue), rgb_to_lab([40, 70, 220])) < 10
    # A small red product on a big grey floor is still red.
    floor = Image.new("RGB", (200, 200), (128, 128, 128))
    floor.paste((200, 30, 30), (80, 80, 130, 130))
    assert ciede2000(dominant_colour(floor), rgb_to_lab([200, 30, 30])) < 10
    d = colour_descriptor(floor)
    assert d.shape == (245,) and np.linalg.norm(d) == pytest.approx(1.0, abs=1e-5)


# -- foreground crop (crop=fg) ----------------------------------------------------------------------
def _object_on_plain(width=300, height=200, box=(200, 40, 260, 160), colour=(200, 30, 30)):
    from PIL import Image

    image = Image.new("RGB", (width, height), (245, 245, 240))
    image.paste(colour, box)
    return image


def test_foreground_box_finds_an_off_centre_object():
    from lookalike.encoders.colour import foreground_box

    box = (200, 40, 260, 160)
    image = _object_on_plain(box=box)
    tight = foreground_box(image, square=False, margin=0.0)
    assert all(abs(a - b) <= 8 for a, b in zip(tight, box)), tight
    grown = foreground_box(image)  # square, with margin, inside the image, around the object
    assert grown[0] <= box[0] and grown[1] <= box[1] and grown[2] >= box[2] and grown[3] >= box[3]
    assert grown[2] <= 300 and grown[3] <= 200 and grown[0] >= 0 and grown[1] >= 0
    assert abs((grown[2] - grown[0]) - (grown[3] - grown[1])) <= 2
    # nothing stands out from the border: the whole image
    from PIL import Image

    plain = Image.new("RGB", (120, 90), (10, 120, 200))
    assert foreground_box(plain) == (0, 0, 120, 90)


def test_effnet_crop_option_embeds_the_product_box():
    from lookalike.encoders import get_encoder
    from lookalike.encoders.colour import foreground_box
    from lookalike.encoders.pretrained import preprocess_image

    image = _object_on_plain()
    plain, cropped = get_encoder("effnet-lite0"), get_encoder("effnet-lite0:crop=fg")
    assert cropped.name == "effnet-lite0:crop=fg" and "crop=fg" in cropped.fingerprint()
    assert plain.fingerprint() != cropped.fingerprint()
    np.testing.assert_allclose(cropped.preprocess(image), preprocess_image(image.crop(foreground_box(image))))
    assert not np.allclose(cropped.preprocess(image), plain.preprocess(image))
    # the colour part stays on the whole photo: same as the uncropped fused encoder's
    fused, fused_crop = get_encoder("effnet-lite0-colour"), get_encoder("effnet-lite0-colour:crop=fg")
    np.testing.assert_allclose(fused.preprocess(image)[-245:], fused_crop.preprocess(image)[-245:])
    with pytest.raises(ValueError, match="crop"):
        get_encoder("effnet-lite0:crop=box")
