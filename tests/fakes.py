"""Generated test data, written once for every test: coloured-shape images and catalogs built from
them, the served catalog of the API and browser tests, an upright pose with a fake detector that
finds it, and pixel checks for the PNG figures.

Import it as ``from fakes import ...`` (tests/ is on sys.path through pytest's rootdir conftest).
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lookalike.catalog import Catalog

# -- images ------------------------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220)}
FAST = "colour-hist"  # the encoder that needs no weights and indexes 54 images in well under a second


def draw_shape(shape: str, colour: tuple[int, int, int], size: int = 96, seed: int = 0) -> Image.Image:
    """A coloured shape at a jittered position/scale on a light noisy background.

    The shape always covers the centre of the image (radius >= 0.22 * size, centre jitter <= 8 px),
    so the centre pixel is the shape's colour (each channel within 25 of ``colour``)."""
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


def shape_images(per_class: int = 1, size: int = 48) -> tuple[list[Image.Image], list[str]]:
    """``per_class`` images of each of the 9 shape-colour classes, and their labels ("circle-red"...)."""
    images, labels, seed = [], [], 0
    for shape in SHAPES:
        for name, rgb in COLOURS.items():
            for _ in range(per_class):
                images.append(draw_shape(shape, rgb, size, seed))
                labels.append(f"{shape}-{name}")
                seed += 1
    return images, labels


def make_shapes_folder(root: Path, per_class: int = 6, size: int = 96) -> Path:
    """root/<shape>-<colour>/<shape>-<colour>-<n>.png: a folder catalog with 9 classes of known content."""
    seed = 0
    for shape in SHAPES:
        for name, rgb in COLOURS.items():
            folder = root / f"{shape}-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                draw_shape(shape, rgb, size, seed).save(folder / f"{shape}-{name}-{i}.png")
                seed += 1
    return root


def make_shapes_csv(root: Path, per_class: int = 6, size: int = 64) -> Path:
    """root/catalog.csv over new shape PNGs: label = the shape, metadata columns ``colour`` and
    ``split`` (the first two of each class are "test", the rest "train")."""
    rows, seed = [], 0
    for shape in SHAPES:
        for colour, rgb in COLOURS.items():
            for i in range(per_class):
                path = root / f"{shape}-{colour}-{i}.png"
                draw_shape(shape, rgb, size, seed).save(path)
                rows.append({"id": path.stem, "image": str(path), "label": shape, "colour": colour,
                             "split": "test" if i < 2 else "train"})
                seed += 1
    source = root / "catalog.csv"
    with open(source, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return source


# -- catalogs ----------------------------------------------------------------------------------
def indexed_catalog(home: Path, source, encoder: str = FAST, name: str = "shapes") -> Catalog:
    """A new catalog ``name`` in ``home`` with every image of ``source`` (folder or CSV) indexed."""
    cat = Catalog.create(name, home=home)
    report = cat.index(source, encoder)
    assert report.failed == 0, report.errors
    return cat


def vector_catalog(home: Path, name: str, vectors: np.ndarray, labels: Sequence[str],
                   encoder: str = "tiny", metric: str = "cosine", metadata: Sequence[dict] | None = None) -> Catalog:
    """A catalog whose items ``item-<i>`` hold ``vectors`` (and ``metadata[i]``) written straight to
    the store: no images (the paths point nowhere), so any number of items costs no encoding."""
    from lookalike.data.store import NewItem

    cat = Catalog.create(name, home=home)
    metadata = metadata or [{} for _ in labels]
    items = [NewItem(f"item-{i}", f"/nowhere/{i}.jpg", label, dict(meta), f"{i:064x}", 8, 8)
             for i, (label, meta) in enumerate(zip(labels, metadata))]
    cat._store.write_batch(items, np.asarray(vectors, np.float32), encoder, "fp", metric)
    cat.set_default_encoder(encoder)
    return cat


def record_runtime_choice(cat: Catalog, encoder: str, choice: dict) -> None:
    """Record ``choice`` as the int8 decision ``Catalog.index`` took for ``encoder`` (no calibration)."""
    cat._store.set_state(f"runtime:{encoder}", choice)


def run_search_via_hits(store, index, query, k, metric, where=None, exclude=None, min_score=None, filters=(), *,
                        rowids_only=False):
    """``run_search`` whose ``rowids_only`` mode builds the hits and looks their ids up again, as αQE's
    first stage did before it read the index alone (the reference tests compare against)."""
    from lookalike.search.engine import run_search

    hits = run_search(store, index, query, k, metric, where, exclude, min_score, filters)
    if not rowids_only:
        return hits
    found = store.get_many([hit.id for hit in hits])
    return [found[hit.id].rowid for hit in hits if hit.id in found]


def stored_vector(cat: Catalog, item_id: str, encoder: str = FAST) -> np.ndarray:
    """The (dim,) float32 vector ``cat`` stores for item ``item_id`` under ``encoder``, through the facade."""
    ids, matrix = cat.vectors(encoder)
    return matrix[ids.index(item_id)]


# -- the served catalog of the API and browser tests -------------------------------------------
DUPLICATE = ("circle-red-0", "circle-red-0-copy")  # same file under two ids
QUERY_ID = "circle-red-1"   # an item of the served catalog that the API and browser tests query
N_ITEMS = 55                # 9 classes x 6 shapes + the duplicate


def write_shapes_csv(folder: Path, path: Path) -> Path:
    """The shapes folder as a CSV catalog with metadata columns (colour, shape) for filters, plus
    the DUPLICATE row."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "label", "colour", "shape"])
        for image in sorted(folder.glob("*/*.png")):
            shape, colour = image.parent.name.split("-")
            writer.writerow([image.stem, str(image), image.parent.name, colour, shape])
            if image.stem == DUPLICATE[0]:
                writer.writerow([DUPLICATE[1], str(image), image.parent.name, colour, shape])
    return path


def build_catalog(home: Path, shapes_folder: Path, name: str = "shapes") -> Catalog:
    """The shapes as a CSV catalog (55 items: 54 + the duplicate) indexed with FAST."""
    return indexed_catalog(home, write_shapes_csv(shapes_folder, home / f"{name}.csv"), FAST, name)


def build_web_home(home: Path, shapes_folder: Path) -> Path:
    """Catalog 'shapes' (see build_catalog) with stored clusters (k=9), a PCA map and a tiny VAE
    trained for one epoch at 16 px: enough for decoding to depend on the sliders."""
    from lookalike.explore.clusters import cluster_catalog
    from lookalike.explore.projection import map_catalog
    from lookalike.train.autoencoder import AutoencoderConfig

    cat = build_catalog(home, shapes_folder)
    cluster_catalog(cat, k=9)
    map_catalog(cat, method="pca", size=400, thumb=16)
    cat.train_autoencoder(AutoencoderConfig(arch="vae", epochs=1, image_size=16, batch_size=32), progress=False)
    return home


# -- the HTTP API ------------------------------------------------------------------------------
# Ids as a folder walk or a CSV gives them: slashes, every item route word (api/routes), characters
# that mean something in URLs (space, %, ?, #), unicode. No item `shoes`: /api/items/shoes/image is a 404.
AWKWARD_IDS = ("dress", "dress/image", "shoes/image", "shoes/similar", "bag/thumb", "hat/goes-with", "top/latent",
               "coat/shop", "a b", "50% off", "50%2Foff", "what?", "c#1", "café/été ☂", "dress/image/image")


def awkward_catalog(home: Path, shapes_folder: Path, name: str = "awkward") -> dict[str, Path]:
    """Catalog ``name`` in ``home`` whose items carry AWKWARD_IDS (explicit CSV ids), each a different
    shapes image; returns id -> image file."""
    images = dict(zip(AWKWARD_IDS, sorted(shapes_folder.glob("*/*.png"))[::3]))
    home.mkdir(parents=True, exist_ok=True)
    source = home / f"{name}.csv"
    with open(source, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "label"])
        writer.writerows([item, str(image), image.parent.name] for item, image in images.items())
    indexed_catalog(home, source, name=name)
    return images


def save_image(path: Path, fmt: str = "JPEG", colour=(200, 30, 30)) -> Path:
    """A 12x12 single-colour image at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), colour).save(path, format=fmt)
    return path


def messy_folder(root: Path) -> dict[str, str]:
    """One file of every outcome of a folder walk (lookalike.data.sources) under ``root``: relative
    path -> "row" or the reason it is skipped or fails."""
    expected = {}
    for name in ("shoes/red.jpg", "shoes/red.png", "bags/tote.jfif", "noext"):
        save_image(root / name, fmt="PNG" if name.endswith(".png") or name == "noext" else "JPEG")
        expected[name] = "row"
    (root / "shoes" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    expected["shoes/broken.jpg"] = "row"           # named like an image: fails in the pipeline
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", "shoes/._red.jpg", "__MACOSX/shoes/red.jpg",
                 "@eaDir/red.jpg@SynoEAStream", "~$catalog.xlsx"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x00junk")
        expected[name] = "system_file"
    save_image(root / ".hidden.jpg")
    save_image(root / ".cache" / "thumb.jpg")
    expected[".hidden.jpg"] = expected[".cache/thumb.jpg"] = "hidden"
    (root / "README.md").write_text("# my catalog")
    expected["README.md"] = "not_an_image"
    (root / "x.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    (root / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    expected["logo.svg"] = "unsupported_format"
    # a HEIC cut inside its header: where pillow-heif reads HEIC it is a damaged image, a row that fails as
    # corrupt (as the same bytes in a table or an upload); without the plugin, a format not read here
    from lookalike.data.images import plugin_installed
    expected["x.heic"] = "row" if plugin_installed("HEIC/HEIF") else "unsupported_format"
    if hasattr(os, "symlink"):
        os.symlink(root / "shoes", root / "link-to-shoes")
        os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
        expected["link-to-shoes"], expected["dangling.jpg"] = "link_to_folder", "missing"
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe")
        expected["pipe"] = "not_a_file"
    return expected


#: modes some Pillow writers need (1-bit, palette, greyscale)
WRITER_MODE = {"XBM": "1", "MSP": "1", "BLP": "P", "SPIDER": "L", "IM": "RGB"}


def encoded_in(fmt: str) -> bytes | None:
    """A 48x40 two-colour picture written in the Pillow format ``fmt``, or None when Pillow cannot
    write it here (a writer needing a library or mode this install lacks)."""
    image = Image.new("RGB", (48, 40), (210, 40, 40))
    image.paste((40, 40, 210), (0, 20, 48, 40))
    image = image.convert(WRITER_MODE.get(fmt, "RGB"))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return None
    return buf.getvalue()


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    """``image`` encoded as an upload body."""
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is the API's JSON error (``status``, a message, the ``code`` if given); its body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"] and isinstance(body["message"], str)
    if code:
        assert body["error"] == code
    return body


# -- shop the look without the MediaPipe model -------------------------------------------------
# An upright person facing the camera in a 200 x 400 photo (the person's left is the image's right).
UPRIGHT = {
    "nose": (100, 40), "left_eye": (105, 35), "right_eye": (95, 35), "left_ear": (110, 40), "right_ear": (90, 40),
    "left_shoulder": (120, 80), "right_shoulder": (80, 80), "left_elbow": (130, 130), "right_elbow": (70, 130),
    "left_wrist": (135, 170), "right_wrist": (65, 170), "left_hip": (112, 180), "right_hip": (88, 180),
    "left_knee": (112, 260), "right_knee": (88, 260), "left_ankle": (112, 340), "right_ankle": (88, 340),
    "left_heel": (110, 350), "right_heel": (86, 350), "left_foot_index": (122, 356), "right_foot_index": (98, 356),
}


def upright_person(points: dict = UPRIGHT, visibility: dict | None = None, transform=None,
                   scale: float = 1.0, dx: float = 0.0):
    """A :class:`~lookalike.shop.pose.Person` with ``points`` seen (visibility 0.99), every other
    landmark (mouth, fingers...) unseen on the nose; ``visibility`` overrides some scores,
    ``transform`` maps the (33, 2) coordinates, ``scale``/``dx`` shrink and shift the person."""
    from lookalike.shop.pose import INDEX, LANDMARKS, Person

    kp = np.zeros((len(LANDMARKS), 3), dtype=np.float32)
    for name in LANDMARKS:
        kp[INDEX[name]] = (*points["nose"], 0.0)
    for name, (x, y) in points.items():
        kp[INDEX[name]] = (x, y, 0.99)
    for name, v in (visibility or {}).items():
        kp[INDEX[name], 2] = v
    kp[:, 0] = kp[:, 0] * scale + dx
    kp[:, 1] *= scale
    if transform is not None:
        kp[:, :2] = transform(kp[:, :2])
    return Person(keypoints=kp)


class FakeDetector:
    """A pose detector that returns ``people`` (the first ``max_people``); without ``people`` it
    finds the upright person on any photo at least 200 x 400 and nobody on smaller ones."""
    name = "fake"

    def __init__(self, people: list | None = None):
        self.people = people

    def detect(self, image, max_people: int = 1):
        if self.people is not None:
            return self.people[:max_people]
        if image.width < 200 or image.height < 400:
            return []
        return [upright_person()][:max_people]


def outfit_photo(width: int = 200, height: int = 400) -> Image.Image:
    """Red top, blue trousers, black shoes on white, where UPRIGHT puts them."""
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    img[70:200, 65:135] = (200, 30, 30)
    img[175:345, 85:115] = (40, 60, 160)
    img[338:360, 84:124] = (20, 20, 20)
    return Image.fromarray(img)


# -- checking PNG figures ----------------------------------------------------------------------
def centre_colour(source, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The mean RGB (float, shape (3,)) of the central 5 x 5 pixels of an image or of ``box`` in it."""
    image = source if isinstance(source, Image.Image) else Image.open(source)
    image = image.convert("RGB")
    if box is not None:
        image = image.crop(box)
    a = np.asarray(image, np.float32)
    cy, cx = a.shape[0] // 2, a.shape[1] // 2
    return a[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3).mean(0)


def same_colour(a, b, tol: float = 30) -> bool:
    """Two RGB colours within ``tol`` per channel."""
    return bool(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max() <= tol)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def tile_boxes(source, min_size: int = 24) -> list[tuple[int, int, int, int]]:
    """The thumbnails of a figure on a white canvas, as (x0, y0, x1, y1) boxes in reading order:
    bands of rows that hold ink (a channel < 245) at least ``min_size`` tall (caption lines are
    shorter), cut into runs of inked columns at least ``min_size`` wide. Frames around a tile count
    as part of it. Geometry-free, so it holds whatever tile size, padding and captions a figure uses."""
    image = source if isinstance(source, Image.Image) else Image.open(source)
    ink = (np.asarray(image.convert("RGB")) < 245).any(axis=2)
    boxes = []
    for y0, y1 in _runs(ink.any(axis=1)):
        if y1 - y0 < min_size:
            continue
        boxes += [(x0, y0, x1, y1) for x0, x1 in _runs(ink[y0:y1].any(axis=0)) if x1 - x0 >= min_size]
    return boxes
