"""Every supported format normalises to the same RGB; every bad input gets its reason."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lookalike.data.images import ImageError, open_image, resize_square, to_rgb


def reference() -> Image.Image:
    """A smooth RGB image (so lossy formats stay close to it)."""
    x = np.linspace(0, 255, 64, dtype=np.float32)
    rgb = np.stack([np.tile(x, (64, 1)), np.tile(x[:, None], (1, 64)), np.full((64, 64), 128.0)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kwargs,tolerance", [
    ("PNG", {}, 0), ("BMP", {}, 0), ("TIFF", {}, 0), ("WEBP", {"lossless": True}, 0),
    ("JPEG", {"quality": 95}, 6), ("WEBP", {"quality": 90}, 8),
])
def test_formats_decode_to_same_rgb(fmt, kwargs, tolerance):
    ref = reference()
    out = open_image(encode(ref, fmt, **kwargs))
    assert out.mode == "RGB" and out.size == ref.size
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(ref, np.int16)).mean()
    assert diff <= tolerance


def test_gif_first_frame_palette():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = open_image(buf.getvalue())
    assert out.mode == "RGB"
    assert out.getpixel((5, 5))[0] > 200 and out.getpixel((5, 5))[2] < 50  # red, the first frame


def test_alpha_and_palette_composite_on_white():
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = open_image(encode(rgba, "PNG"))
    assert out.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white
    assert out.getpixel((0, 0)) == (0, 0, 255)
    palette = rgba.convert("P")
    assert open_image(encode(palette, "PNG")).mode == "RGB"


def test_greyscale_cmyk_and_16_bit():
    grey = reference().convert("L")
    assert open_image(encode(grey, "PNG")).getpixel((10, 10)) == (grey.getpixel((10, 10)),) * 3
    cmyk = reference().convert("CMYK")
    out = open_image(encode(cmyk, "JPEG", quality=95))
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out, np.int16) - np.asarray(reference(), np.int16)).mean() < 12
    sixteen = Image.fromarray((np.tile(np.linspace(0, 65535, 32), (32, 1))).astype(np.uint16))
    out16 = open_image(encode(sixteen, "PNG"))
    assert out16.mode == "RGB" and out16.getpixel((31, 0))[0] >= 250 and out16.getpixel((0, 0))[0] <= 5


def test_exif_orientation_applied():
    img = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = open_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_bad_inputs_have_reasons(tmp_path):
    cases = {
        "missing": tmp_path / "nope.jpg",
        "empty": tmp_path / "empty.jpg",
        "not_an_image": tmp_path / "text.jpg",
        "corrupt": tmp_path / "truncated.jpg",
    }
    cases["empty"].write_bytes(b"")
    cases["not_an_image"].write_text("hello, I am not a picture")
    cases["corrupt"].write_bytes(encode(reference().resize((400, 400)), "JPEG")[:600])
    for reason, path in cases.items():
        with pytest.raises(ImageError) as info:
            open_image(path)
        assert info.value.reason == reason, (reason, info.value.message)


def test_decompression_bomb_refused_before_decoding():
    bomb = encode(Image.new("L", (5000, 5000)), "PNG")  # tiny file, 25 Mpx
    with pytest.raises(ImageError) as info:
        open_image(bomb, max_pixels=10_000_000)
    assert info.value.reason == "too_large"


def test_draft_keeps_at_least_requested_size():
    big = encode(reference().resize((1024, 768)), "JPEG")
    out = open_image(big, draft_size=224)
    assert min(out.size) >= 224 and max(out.size) < 1024


def test_resize_modes():
    img = Image.new("RGB", (100, 50), (10, 10, 10))
    for mode in ("pad", "crop", "stretch"):
        assert resize_square(img, 32, mode).size == (32, 32)
    assert resize_square(img, 32, "pad").getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("LA", (4, 4))).mode == "RGB"
