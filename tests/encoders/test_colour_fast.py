"""The separable colour histogram (lookalike.encoders.colour.colour_summary) against a frozen copy of
the direct computation it replaced (every thumbnail pixel against all 245 Lab bin centres, float64
sRGB -> Lab): the same descriptor within 1e-5 and the same dominant colour, on generated photos."""
import numpy as np
import pytest
from PIL import Image

from lookalike.encoders import colour
from lookalike.encoders.pretrained import IMAGENET_MEAN, IMAGENET_STD, preprocess_image


# -- the previous implementation, verbatim in substance (colourdesc/v1 before the speed-up) ------------
def _old_rgb_to_lab(rgb):
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _old_weights(lab, border=3, sigma=12.0):
    h, w, _ = lab.shape
    ys, xs = np.mgrid[0:h, 0:w]
    centre = np.exp(-(((ys - (h - 1) / 2) / (0.35 * h)) ** 2 + ((xs - (w - 1) / 2) / (0.35 * w)) ** 2) / 2)
    centre = centre.astype(np.float32)
    ring = np.ones((h, w), bool)
    ring[border:-border, border:-border] = False
    edge = lab[ring][:: max(1, ring.sum() // 96)]
    flat = lab.reshape(-1, 3)
    d2 = (flat**2).sum(1)[:, None] + (edge**2).sum(1)[None] - 2.0 * flat @ edge.T
    nearest = np.sqrt(np.maximum(d2.min(axis=1), 0.0)).reshape(h, w)
    return centre * (1 - 0.9 * np.exp(-((nearest / sigma) ** 2)))


def _old_summary(image):
    small = image.convert("RGB").resize((colour.THUMB, colour.THUMB), Image.BOX)
    lab = _old_rgb_to_lab(np.asarray(small)).astype(np.float32)
    weights = _old_weights(lab).reshape(-1)
    pixels = lab.reshape(-1, 3)
    grid_sq = (colour.GRID**2).sum(1)
    d2 = np.maximum((pixels**2).sum(1)[:, None] + grid_sq[None] - 2.0 * pixels @ colour.GRID.T, 0.0)
    soft = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) * np.float32(0.5 / 12.0**2))
    soft /= soft.sum(axis=1, keepdims=True)
    hist = np.sqrt((soft * weights[:, None]).sum(axis=0))
    descriptor = (hist / max(np.linalg.norm(hist), 1e-12)).astype(np.float32)
    best = int(np.bincount(d2.argmin(axis=1), weights=weights, minlength=colour.COLOUR_DIM).argmax())
    near = d2[:, best] <= 20.0**2
    dominant = (pixels[near] * weights[near, None]).sum(0) / weights[near].sum() if near.any() else colour.GRID[best]
    return descriptor, dominant


def _photos(n=24, seed=0):
    """Product-like photos: a textured background, a product of another colour off centre, noise;
    some saturated, dark, grey or with colours outside the Lab grid (pure blue, pure yellow)."""
    rng = np.random.default_rng(seed)
    extremes = [(0, 0, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0)]
    out = []
    for i in range(n):
        h, w = rng.integers(120, 400, 2)
        background = rng.integers(0, 256, 3) if i % 3 else np.array(extremes[i % len(extremes)])
        product = np.array(extremes[(i + 2) % len(extremes)]) if i % 4 == 0 else rng.integers(0, 256, 3)
        a = np.empty((h, w, 3)); a[:] = background
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        a[y0:y0 + h // 2, x0:x0 + w // 2] = product
        a += rng.normal(0, 6 + 10 * (i % 2), a.shape)
        out.append(Image.fromarray(a.clip(0, 255).astype(np.uint8)))
    out.append(Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).convert("L"))   # greyscale input
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_separable_histogram_matches_the_direct_one(seed):
    for image in _photos(seed=seed):
        new_descriptor, new_dominant = colour.colour_summary(image)
        old_descriptor, old_dominant = _old_summary(image)
        assert new_descriptor.dtype == np.float32 and new_descriptor.shape == (colour.COLOUR_DIM,)
        np.testing.assert_allclose(new_descriptor, old_descriptor, atol=1e-5, rtol=0)
        np.testing.assert_allclose(new_dominant, old_dominant, atol=1e-3)


def test_lab_lookup_table_matches_the_formula():
    values = np.arange(256, dtype=np.uint8).reshape(-1, 1).repeat(3, 1)
    np.testing.assert_allclose(colour.rgb_to_lab(values), _old_rgb_to_lab(values), atol=1e-9)
    np.testing.assert_allclose(colour.rgb_to_lab(values.astype(float)), _old_rgb_to_lab(values), atol=1e-9)


def test_fused_multiply_add_preprocessing_matches_the_textbook_one():
    for image in _photos(6, seed=3):
        square = np.asarray(image.convert("RGB").resize((224, 224)), dtype=np.float32) / 255.0
        reference = ((square - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
        fast = preprocess_image(image.convert("RGB").resize((224, 224)), 224)
        assert fast.shape == (3, 224, 224) and fast.dtype == np.float32 and fast.flags.c_contiguous
        np.testing.assert_allclose(fast, reference, atol=2e-6)


def test_fused_encoder_colour_part_is_the_old_descriptor():
    """The colour-fused encoder computes the descriptor in its preprocess (the ingest pipeline's
    decode threads): its colour part is still the old per-image descriptor."""
    from lookalike.encoders import get_encoder

    encoder = get_encoder("effnet-lite0-colour:0.5,runtime=torch")
    photos = _photos(5, seed=4)
    vectors = encoder.encode(photos)
    assert vectors.shape == (len(photos), encoder.dim)
    for photo, vector in zip(photos, vectors):
        np.testing.assert_allclose(vector[-colour.COLOUR_DIM:] / np.sqrt(0.5), _old_summary(photo)[0], atol=1e-5)


def test_float32_lab_planes_match_the_float64_formula_over_the_rgb_cube():
    rgb = np.stack(np.meshgrid(*[np.arange(0, 256, 5)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.uint8)
    planes = colour.lab_planes(rgb)
    assert planes.shape == (3, len(rgb)) and planes.dtype == np.float32 and planes.flags.c_contiguous
    np.testing.assert_allclose(planes.T, _old_rgb_to_lab(rgb), atol=2e-4, rtol=0)
    image = _photos(1)[0]
    np.testing.assert_allclose(colour.lab_thumbnail(image), _old_rgb_to_lab(colour.rgb_thumbnail(image)), atol=2e-4)


def test_descriptor_alone_equals_the_summary_and_the_batched_summaries():
    photos = _photos(6, seed=5)
    labs = np.stack([colour.lab_thumbnail(p) for p in photos])
    descriptors, dominants = colour.colour_summaries(labs)
    for photo, descriptor, dominant in zip(photos, descriptors, dominants):
        np.testing.assert_allclose(colour.colour_descriptor(photo), descriptor, atol=1e-6)
        np.testing.assert_allclose(colour.colour_summary(photo)[1], dominant, atol=1e-4)


@pytest.mark.integration
def test_real_photos_keep_their_descriptor(clothing_small):
    """On 60 real clothing-small photos (decoded as ingest does): the fast descriptor is the direct
    computation's within 1e-5, and the dominant colour the same within 1e-3 Lab units."""
    from lookalike.data.images import open_image

    paths = sorted((clothing_small / "images").rglob("*.jpg"))[::60][:60]
    assert len(paths) >= 30
    for path in paths:
        image = open_image(path, draft_size=224)
        old_descriptor, old_dominant = _old_summary(image)
        np.testing.assert_allclose(colour.colour_descriptor(image), old_descriptor, atol=1e-5, rtol=0)
        np.testing.assert_allclose(colour.colour_summary(image)[1], old_dominant, atol=1e-3)
