"""Same kind AND same colour: how the colour-fusion weight trades label precision for colour matches.

Relevant = same label and dominant colours within ΔE00 < 10 (foreground dominant colour, plus an
independent centre-crop dominant colour so the descriptor does not grade its own homework).
Needs a catalog indexed with the colour-blind CNN:

    lookalike index ../shared/datasets/clothing-small/catalog.csv --catalog clothing --encoder effnet-lite0
    python -m lookalike.bench.studies.colour_joint --catalog clothing
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image
from tqdm import tqdm

from lookalike import Catalog
from lookalike.encoders.colour import ciede2000, colour_summary
from lookalike.index.distances import l2_normalize
from lookalike.evaluation.retrieval import nearest_neighbours
from lookalike.data.images import open_image


def centre(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 4, h // 4, w - w // 4, h - h // 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--home")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.4")
    args = parser.parse_args()
    cat = Catalog.open(args.catalog, home=args.home)
    ids, cnn = cat.vectors("effnet-lite0")
    labels = np.array(cat.labels(encoder="effnet-lite0"), dtype=object)
    descriptors, dominant, dominant_centre = [], [], []
    for item_id in tqdm(ids, desc="colour"):
        image = open_image(cat.get(item_id).path, draft_size=128)
        desc, dom = colour_summary(image)
        descriptors.append(desc)
        dominant.append(dom)
        dominant_centre.append(colour_summary(centre(image), weighting="uniform")[1])
    colour = l2_normalize(np.stack(descriptors))
    cnn = l2_normalize(cnn)
    print("w    label P@1  label P@10  joint P@1  joint P@10  joint P@1 (centre)  joint P@10 (centre)")
    for w in (float(x) for x in args.weights.split(",")):
        fused = np.concatenate([np.sqrt(1 - w) * cnn, np.sqrt(w) * colour], axis=1)
        nn = nearest_neighbours(fused, 10)
        same = labels[nn] == labels[:, None]
        row = [w, same[:, 0].mean(), same.mean()]
        for dom in (np.stack(dominant), np.stack(dominant_centre)):
            joint = same & (ciede2000(dom[:, None], dom[nn]) < 10)
            row += [joint[:, 0].mean(), joint.mean()]
        print("  ".join(f"{x:.3f}" for x in row), flush=True)


if __name__ == "__main__":
    main()
