"""A small served catalog for the API and browser tests: the shapes as a CSV catalog (with metadata
columns and one exact duplicate), the fast colour-hist encoder, stored clusters, a map and a tiny VAE."""
from __future__ import annotations

import csv
from pathlib import Path

from lookalike.catalog import Catalog

FAST = "colour-hist"
DUPLICATE = ("circle-red-0", "circle-red-0-copy")  # same file under two ids


def write_shapes_csv(folder: Path, path: Path) -> Path:
    """The shapes folder as a CSV catalog with metadata columns (colour, shape) for filters."""
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
    cat = Catalog.create(name, home=home)
    report = cat.index(write_shapes_csv(shapes_folder, home / f"{name}.csv"), FAST)
    assert report.failed == 0
    return cat


def add_clusters_and_map(cat: Catalog) -> None:
    from lookalike.explore.clusters import cluster_catalog
    from lookalike.explore.projection import map_catalog

    cluster_catalog(cat, k=9)
    map_catalog(cat, method="pca", size=400, thumb=16)


def add_tiny_vae(cat: Catalog) -> str:
    """A VAE trained for one epoch at 16 px: enough for decoding to depend on the sliders."""
    import torch

    from lookalike.train.autoencoder import AutoencoderConfig

    torch.set_num_threads(2)
    result = cat.train_autoencoder(AutoencoderConfig(arch="vae", epochs=1, image_size=16, batch_size=32), progress=False)
    return result.dir.name


def build_web_home(home: Path, shapes_folder: Path) -> Path:
    cat = build_catalog(home, shapes_folder)
    add_clusters_and_map(cat)
    add_tiny_vae(cat)
    return home


# -- shop the look without the MediaPipe model: a detector that "finds" a known pose ------------
POSE = {  # an upright person in a 200 x 400 photo (as in tests/test_shop_the_look.py)
    "nose": (100, 40), "left_eye": (105, 35), "right_eye": (95, 35), "left_shoulder": (120, 80),
    "right_shoulder": (80, 80), "left_elbow": (130, 130), "right_elbow": (70, 130), "left_wrist": (135, 170),
    "right_wrist": (65, 170), "left_hip": (112, 180), "right_hip": (88, 180), "left_knee": (112, 260),
    "right_knee": (88, 260), "left_ankle": (112, 340), "right_ankle": (88, 340), "left_heel": (110, 350),
    "right_heel": (86, 350), "left_foot_index": (122, 356), "right_foot_index": (98, 356),
}


class FakeDetector:
    """Finds the POSE person on any photo at least 200 x 400, nobody on smaller ones."""
    name = "fake"

    def detect(self, image, max_people=1):
        import numpy as np

        from lookalike.shop.pose import INDEX, LANDMARKS, Person

        if image.width < 200 or image.height < 400:
            return []
        keypoints = np.zeros((len(LANDMARKS), 3), dtype=np.float32)
        for name, (x, y) in POSE.items():
            keypoints[INDEX[name]] = (x, y, 0.99)
        return [Person(keypoints=keypoints)][:max_people]


def outfit_photo(width: int = 200, height: int = 400):
    """Red top, blue trousers, black shoes on white, where POSE puts them."""
    import numpy as np
    from PIL import Image

    img = np.full((height, width, 3), 255, dtype=np.uint8)
    img[70:200, 65:135] = (200, 30, 30)
    img[175:345, 85:115] = (40, 60, 160)
    img[338:360, 84:124] = (20, 20, 20)
    return Image.fromarray(img)
