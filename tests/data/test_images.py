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


# -- every Pillow mode as a viewer shows it (issue #13) ---------------------------------------
def pixel(source, xy=(0, 0)) -> tuple[int, int, int]:
    return open_image(source).getpixel(xy)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16_bit_greyscale_scaled_from_full_range(mode):
    img = Image.new(mode, (8, 4), 0)
    for x, value in enumerate((0, 257, 1000, 32768, 40000, 65535, 300, 128)):
        img.putpixel((x, 0), value)
    out = open_image(img)
    # value / 257: 300 and 128 are near black in a 16-bit image, not white (convert("L") clips them)
    assert [out.getpixel((x, 0))[0] for x in range(8)] == [0, 1, 4, 128, 156, 255, 1, 0]


def test_16_bit_png_file():
    ramp = np.tile(np.array([0, 1000, 32768, 65535], np.uint16), (4, 1))
    out = open_image(encode(Image.fromarray(ramp), "PNG"))
    assert [out.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (4, 4, 4), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("values,expected", [
    ([0, 100, 255], [0, 100, 255]),              # 8-bit data in a 32-bit image: as is
    ([0, 300, 65535], [0, 1, 255]),              # 16-bit data (e.g. an old 16-bit PNG decode)
    ([-5, 1_000_000, 2_000_000], [0, 128, 255]),  # beyond 16 bits: its own maximum is white
])
def test_32_bit_integer_greyscale(values, expected):
    out = open_image(Image.fromarray(np.array([values], np.int32)))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == expected


@pytest.mark.parametrize("values,expected", [
    ([0.0, 0.5, 1.0], [0, 128, 255]),            # the usual 0..1 float image
    ([0.0, 127.5, 255.0], [0, 128, 255]),        # float data on the 8-bit scale
    ([float("nan"), -1.0, 0.25], [0, 0, 64]),
])
def test_float_greyscale(values, expected):
    out = open_image(Image.fromarray(np.array([values], np.float32)))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == expected


def test_float_tiff_file():
    data = encode(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), "TIFF")
    assert [pixel(data, (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_greyscale_alpha_over_white():
    la = Image.new("LA", (3, 1))
    for x, value in enumerate(((0, 255), (0, 0), (0, 128))):
        la.putpixel((x, 0), value)
    out = open_image(encode(la, "PNG"))
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (255, 255, 255), (127, 127, 127)]


def test_palette_with_transparency_over_white():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1            # tRNS: blue is transparent
    out = open_image(encode(palette, "PNG", transparency=1))
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)
    gif = open_image(encode(palette, "GIF", transparency=1))
    assert gif.getpixel((1, 0)) == (255, 255, 255)
    pa = Image.new("PA", (1, 1))
    pa.putpalette([0, 200, 0])
    pa.putpixel((0, 0), (0, 0))
    assert open_image(pa).getpixel((0, 0)) == (255, 255, 255)


def test_rgba_partial_alpha_and_rgb_transparency_key():
    rgba = Image.new("RGBA", (1, 1), (0, 0, 0, 64))
    assert pixel(encode(rgba, "PNG")) == (191, 191, 191)
    rgb = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb.putpixel((1, 0), (0, 0, 0))
    out = open_image(encode(rgb, "PNG", transparency=(0, 0, 0)))
    assert out.getpixel((0, 0)) == (10, 20, 30) and out.getpixel((1, 0)) == (255, 255, 255)


def test_cmyk_jpeg_adobe_inverted_and_tiff():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))   # pure red ink
    data = encode(cmyk, "JPEG", quality=95)
    assert b"Adobe" in data[:200]                           # Pillow writes Adobe (inverted) CMYK JPEGs
    red = np.asarray(open_image(data), np.int16)[8, 8]
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    assert pixel(encode(Image.new("CMYK", (2, 2), (0, 0, 0, 255)), "TIFF")) == (0, 0, 0)


def test_one_bit_and_ycbcr():
    bw = Image.new("1", (2, 1), 0)
    bw.putpixel((1, 0), 1)
    out = open_image(encode(bw, "PNG"))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)
    ycc = Image.new("RGB", (2, 2), (200, 40, 90)).convert("YCbCr")
    assert np.abs(np.subtract(open_image(ycc).getpixel((0, 0)), (200, 40, 90))).max() <= 2


@pytest.mark.parametrize("orientation,size", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientations(orientation, size):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))                  # red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = open_image(encode(img, "PNG", exif=exif.tobytes()))
    assert out.size == size
    corner = {1: (0, 0), 3: (39, 19), 6: (19, 0), 8: (0, 39)}[orientation]
    assert out.getpixel(corner)[0] > 200


def linear_rgb_profile() -> bytes:
    """A minimal ICC v2 display profile: sRGB primaries (D50-adapted) with a gamma 1.0 (linear)
    tone curve, built byte by byte (ImageCms can only create sRGB, LAB and XYZ profiles)."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    curve = b"curv\0\0\0\0" + struct.pack(">I", 1) + struct.pack(">H", 0x0100) + b"\0\0"   # gamma 1.0
    text = b"linear sRGB\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 70
    desc += b"\0" * (-len(desc) % 4)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text\0\0\0\0none\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_embedded_icc_profile_converted_to_srgb():
    icc = linear_rgb_profile()
    img = Image.new("RGB", (4, 4), (128, 128, 128))        # linear 0.5 = sRGB 188
    for fmt in ("PNG", "JPEG", "TIFF"):
        out = pixel(encode(img, fmt, icc_profile=icc, **({"quality": 100} if fmt == "JPEG" else {})))
        assert all(abs(c - 188) <= 2 for c in out), (fmt, out)
    # transparency kept through the conversion; a broken profile is ignored (as viewers do)
    rgba = Image.new("RGBA", (1, 1), (128, 128, 128, 0))
    assert pixel(encode(rgba, "PNG", icc_profile=icc)) == (255, 255, 255)
    assert pixel(encode(img, "PNG", icc_profile=b"not a profile")) == (128, 128, 128)


def test_heic_and_avif_round_trip_or_unsupported_by_name():
    from PIL import features

    ref = reference()
    for fmt, available in (("HEIF", "HEIF" in Image.SAVE), ("AVIF", features.check("avif"))):
        if not available:
            continue
        out = open_image(encode(ref, fmt, quality=90))
        assert out.mode == "RGB" and out.size == ref.size
        assert np.abs(np.asarray(out, np.int16) - np.asarray(ref, np.int16)).mean() < 8, fmt
    # formats no installed plugin reads are named, not called "not an image"
    for head, name in ((b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\0" * 32, "JPEG XL"),
                       (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG")):
        with pytest.raises(ImageError) as info:
            open_image(head)
        assert info.value.reason == "unsupported_format" and name in info.value.message


def test_heic_plugin_registered_when_installed():
    """pillow-heif (a dependency in pyproject) is registered by importing lookalike.data.images."""
    pytest.importorskip("pillow_heif", reason="pillow-heif not installed (pip install pillow-heif)")
    assert "HEIF" in Image.OPEN


# -- damaged metadata, damaged headers, decoder exceptions (breaker, session 9) -------------------------------
#: a big-endian EXIF block (TIFF header + one IFD): orientation 6 plus tag 0x0140 (ColorMap, a SHORT tag in
#: Pillow's tables) holding ASCII text. Pillow parses it, but ``ImageOps.exif_transpose`` re-serialises the block
#: and fails with ``struct.error`` (found by fuzzing a WebP; an upload of such a photo was a 500).
BROKEN_EXIF = (b"MM\x00*\x00\x00\x00\x08\x00\x02\x01@\x00\x02\x00\x00\x00\x04Cam\x00"
               b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00")


@pytest.mark.parametrize("fmt,prefix", [("JPEG", b"Exif\x00\x00"), ("PNG", b""), ("WEBP", b"")])
def test_damaged_exif_block_keeps_pixels_and_orientation(fmt, prefix):
    img = reference().resize((64, 48))
    out = open_image(encode(img, fmt, exif=prefix + BROKEN_EXIF))
    assert out.size == (48, 64)   # the readable orientation (6: rotate) still applies


def test_unreadable_exif_counts_as_upright(monkeypatch):
    def broken(self):
        raise SyntaxError("not a TIFF file")
    monkeypatch.setattr(Image.Image, "getexif", broken)
    assert open_image(encode(reference().resize((64, 48)), "PNG")).size == (64, 48)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "WEBP"])
@pytest.mark.parametrize("keep", [12, 20, 30])
def test_cut_short_header_is_corrupt_not_another_kind_of_file(fmt, keep):
    data = encode(reference(), fmt)[:keep]
    with pytest.raises(ImageError) as err:
        open_image(data)
    assert err.value.reason == "corrupt", err.value.message


@pytest.mark.parametrize("exc", [__import__("struct").error("bad pack"), KeyError(7), IndexError("tile"),
                                 TypeError("x"), ZeroDivisionError("scale")])
def test_any_decoder_exception_is_corrupt(monkeypatch, exc):
    """Pillow's plugins raise more than OSError on odd bytes; every such failure is one row's ``corrupt``."""
    data = encode(reference(), "PNG")

    def load(self):
        raise exc
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", load)
    with pytest.raises(ImageError) as err:
        open_image(data)
    assert err.value.reason == "corrupt" and type(exc).__name__ in err.value.message


def test_random_damage_never_escapes_as_another_exception():
    """Mutated, cut and padded files of every format: ImageError or an image, nothing else."""
    rng = np.random.default_rng(0)
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"):
        data = encode(reference(), fmt, **({"exif": b"Exif\x00\x00" + BROKEN_EXIF} if fmt == "JPEG" else {}))
        for _ in range(60):
            d = bytearray(data)
            for j in rng.integers(0, len(d), size=int(rng.integers(1, 8))):
                d[j] = int(rng.integers(0, 256))
            d = d[: int(rng.integers(1, len(d) + 1))]
            try:
                open_image(bytes(d))
            except ImageError:
                pass


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_a_cut_short_avif_or_heic_is_corrupt_when_its_plugin_is_installed(fmt):
    """A truncated AVIF was 'unsupported_format: AVIF image: not supported by the installed Pillow plugins'
    although the plugin was there and read the whole file."""
    from lookalike.data.images import plugin_installed
    name = {"AVIF": "AVIF", "HEIF": "HEIC/HEIF"}[fmt]
    if not plugin_installed(name):
        pytest.skip(f"no {fmt} plugin here")
    data = encode(reference(), fmt)
    assert open_image(data).size == (64, 64)
    for cut in (0.3, 0.6):
        with pytest.raises(ImageError) as err:
            open_image(data[: int(len(data) * cut)])
        assert err.value.reason == "corrupt", err.value.message
