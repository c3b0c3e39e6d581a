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
    from lookalike.clustering import cluster_catalog
    from lookalike.viz_map import map_catalog

    cluster_catalog(cat, k=9)
    map_catalog(cat, method="pca", size=400, thumb=16)


def add_tiny_vae(cat: Catalog) -> str:
    """A VAE trained for one epoch at 16 px: enough for decoding to depend on the sliders."""
    import torch

    from lookalike.encoders.train_ae import TrainConfig, train_catalog

    torch.set_num_threads(2)
    result = train_catalog(cat, TrainConfig(arch="vae", epochs=1, image_size=16, batch_size=32), progress=False)
    return result.dir.name


def build_web_home(home: Path, shapes_folder: Path) -> Path:
    cat = build_catalog(home, shapes_folder)
    add_clusters_and_map(cat)
    add_tiny_vae(cat)
    return home
