"""Same kind AND same colour: how the colour-fusion weight trades label precision for colour matches.

Relevant = same label and dominant colours within ΔE00 < 10 (foreground dominant colour, plus an
independent centre-crop dominant colour so the descriptor does not grade its own homework).
Needs a catalog indexed with the colour-blind CNN (``--encoder``, default effnet-lite0; effnet-lite1 and
effnet-lite2 too). Each weight ``w`` fuses its stored vectors with the colour descriptor exactly as
the ``colour=w`` encoder option does (``sqrt(1-w)·cnn ⊕ sqrt(w)·colour``, the descriptor of the
photo decoded at the encoder's input size), so ``w=0.2`` rows are ``effnet-liteN:colour=0.2``
without embedding the catalog again; label mAP@10 is the leave-one-out number `lookalike evaluate`
prints.

    lookalike index ../shared/datasets/clothing-small/catalog.csv --catalog clothing --encoder effnet-lite0
    python -m lookalike.bench.studies.colour_joint --catalog clothing [--encoder effnet-lite1]
"""
from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from lookalike import Catalog
from lookalike.data.artifacts import KeyedCache
from lookalike.data.images import open_image
from lookalike.encoders import get_encoder
from lookalike.encoders.colour import DESCRIPTOR_VERSION, ciede2000, colour_descriptor, colour_summary
from lookalike.evaluation.retrieval import evaluate_vectors, nearest_neighbours
from lookalike.index.distances import l2_normalize


def centre(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 4, h // 4, w - w // 4, h - h // 4))


def _colours(job: tuple[str, tuple[int, ...]]) -> tuple:
    """One photo -> (foreground dominant, centre dominant) from a 128-px decode, and the colour
    descriptor of the photo decoded at each encoder input size (what ``colour=w`` fuses)."""
    path, sizes = job
    image = open_image(path, draft_size=128)
    _, dom = colour_summary(image)
    dom_centre = colour_summary(centre(image), weighting="uniform")[1]
    descriptors, by_shape = [], {}
    for size in sizes:  # decodes at nearby sizes are often the same pixels: compute once per shape
        decoded = open_image(path, draft_size=size)
        if decoded.size not in by_shape:
            by_shape[decoded.size] = colour_descriptor(decoded)
        descriptors.append(by_shape[decoded.size])
    return dom, dom_centre, np.stack(descriptors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--home")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.4")
    parser.add_argument("--encoder", default="effnet-lite0",
                        help="colour-blind CNN(s) whose stored vectors are fused, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="processes computing the colours")
    args = parser.parse_args()
    cat = Catalog.open(args.catalog, home=args.home)
    encoders = args.encoder.split(",")
    ids = cat.vectors(encoders[0])[0]
    labels = np.array(cat.labels(encoder=encoders[0]), dtype=object)
    sizes = tuple(get_encoder(e).image_size for e in encoders)  # each encoder decodes at its input size
    # Colours are cached per image content and sizes (re-runs and other encoders only evaluate).
    cache = KeyedCache(cat.dir / "cache" / "colour-joint.npz", ("dominant", "dominant_centre", "descriptors"),
                       stamp=f"{DESCRIPTOR_VERSION} sizes={sizes}")
    items = [cat.get(i) for i in ids]
    keys = [it.sha256 or it.path for it in items]
    todo = [(k, it.path) for k, it in zip(keys, items) if k not in cache]
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        jobs = [(path, sizes) for _, path in todo]
        for (key, _), row in tqdm(zip(todo, pool.map(_colours, jobs, chunksize=16)), total=len(todo), desc="colour"):
            cache[key] = row
    cache.save()
    dominant = np.stack([cache[k][0] for k in keys])
    dominant_centre = np.stack([cache[k][1] for k in keys])
    for e, encoder in enumerate(encoders):
        vector_ids, cnn = cat.vectors(encoder)
        if list(vector_ids) != list(ids):
            raise SystemExit(f"{encoder} is not indexed for the same items as {encoders[0]}")
        colour = l2_normalize(np.stack([cache[k][2][e] for k in keys]))
        cnn = l2_normalize(cnn)
        print(f"{encoder} on {args.catalog} ({len(ids)} items, leave-one-out)")
        print("w    label P@1  label P@10  joint P@1  joint P@10  joint P@1 (centre)  joint P@10 (centre)  label mAP@10")
        for w in (float(x) for x in args.weights.split(",")):
            fused = np.concatenate([np.sqrt(1 - w) * cnn, np.sqrt(w) * colour], axis=1)
            nn = nearest_neighbours(fused, 10)
            same = labels[nn] == labels[:, None]
            row = [w, same[:, 0].mean(), same.mean()]
            for dom in (dominant, dominant_centre):
                joint = same & (ciede2000(dom[:, None], dom[nn]) < 10)
                row += [joint[:, 0].mean(), joint.mean()]
            row.append(evaluate_vectors(fused, list(labels), (10,)).overall["mAP@10"])
            print("  ".join(f"{x:.3f}" for x in row), flush=True)


if __name__ == "__main__":
    main()
