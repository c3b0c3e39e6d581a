"""The VAE's input preprocessing: the product cropped to its foreground onto a uniform background."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from lookalike.data.images import resize_square
from lookalike.encoders.autoencoder import foreground_mask, foreground_square, pixel_transform, to_pixels


def photo(seed: int = 0, size=(240, 180), box=(30, 20, 100, 80), colour=(200, 30, 40)) -> Image.Image:
    """A small red product off-centre on a noisy beige 'floor' that fills the frame's border."""
    rng = np.random.default_rng(seed)
    floor = np.clip(np.array([196, 180, 150]) + rng.normal(0, 6, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(floor)
    ImageDraw.Draw(image).rectangle(box, fill=colour)
    return image


def test_the_product_is_cropped_centred_and_the_background_made_uniform():
    out = np.asarray(foreground_square(photo(), 64)).astype(int)
    assert out.shape == (64, 64, 3)
    red = (out[..., 0] > 150) & (out[..., 1] < 90) & (out[..., 2] < 100)
    ys, xs = np.nonzero(red)
    # the 70 x 60 px product now fills most of the square (it was under a third of the photo's width)
    assert xs.max() - xs.min() + 1 >= 0.75 * 64 and ys.max() - ys.min() + 1 >= 0.6 * 64
    assert abs((xs.min() + xs.max()) / 2 - 31.5) <= 3 and abs((ys.min() + ys.max()) / 2 - 31.5) <= 3
    # the padding is white, and no floor texture is left beyond the product's softened edge
    assert (out[:3] == 255).all() and (out[-3:] == 255).all()
    floor = (np.abs(out - [196, 180, 150]) < 25).all(-1)
    assert not (floor & ~ndimage.binary_dilation(red, iterations=5)).any()


def test_a_photo_without_a_separable_product_falls_back_to_the_padded_photo():
    flat = Image.new("RGB", (120, 90), (90, 120, 200))
    assert foreground_mask(flat) is None
    assert np.array_equal(np.asarray(foreground_square(flat, 32)), np.asarray(resize_square(flat, 32, "pad")))


def test_the_mask_keeps_a_product_whose_colour_touches_the_border():
    # a red product reaching the photo's bottom edge: red is on the border, but not the border's common colour
    image = photo(box=(70, 60, 170, 179))
    alpha = foreground_mask(image)
    assert alpha is not None and alpha[30:40, 20:28].mean() > 0.9  # the product's middle is kept


def test_preprocess_modes_and_their_pixel_cache_keys():
    image = photo()
    assert np.array_equal(to_pixels(image, 32), np.asarray(resize_square(image, 32, "pad")))
    assert np.array_equal(to_pixels(image, 32, "foreground"), np.asarray(foreground_square(image, 32)))
    assert pixel_transform("pad") == (None, "")
    transform, key = pixel_transform("foreground")
    assert transform is foreground_square and key


def test_the_catalog_pixel_cache_keeps_each_preprocessing_apart(tmp_path):
    from lookalike.catalog import Catalog
    from lookalike.data.pixel_cache import catalog_pixels

    for i in range(3):
        photo(seed=i).save(tmp_path / f"p{i}.png")
    cat = Catalog("fg", home=tmp_path / "home", create=True)
    cat.index(str(tmp_path), encoder="colour-hist")
    transform, key = pixel_transform("foreground")
    padded = catalog_pixels(cat, 32, progress=False)
    cropped = catalog_pixels(cat, 32, progress=False, transform=transform, transform_key=key)
    assert padded.pixels.shape == cropped.pixels.shape == (3, 32, 32, 3)
    assert not np.array_equal(padded.pixels, cropped.pixels)
    assert (cat.dir / "cache" / f"pixels-32-{key}" / "pixels.npz").exists() and (cat.dir / "cache" / "pixels-32").exists()
    again = catalog_pixels(cat, 32, progress=False, transform=transform, transform_key=key)  # from the cache
    assert np.array_equal(again.pixels, cropped.pixels)
