"""Quality without labels: the default decision, every candidate side by side in one run.

On a labelled catalog (clothing-small: all items, leave-one-out, relevance = same label) this
scores the label-free options on the same vectors: colour weight (the fused encoder's parts are
separable, so every weight comes from one stored matrix), foreground crop (``effnet-lite0,crop=fg``
vectors, when the catalog has them), αQE and DBA re-ranking (:mod:`lookalike.search.expansion`,
leave-one-out without the query leaking into the augmented gallery), and any other encoder the
catalog holds (``--encoders``, e.g. effnet-lite1). Columns: P@1, mAP@10 and NDCG@10 (same label),
and the "same kind and same colour" P@1 of ``colour_joint``: the top hit has the same label and a
dominant colour within ΔE00 < 10, judged by the foreground dominant colour and by the independent
centre-crop one. Needs the catalog indexed with the default encoder (and ``effnet-lite0:crop=fg``
for the crop rows)::

    lookalike index ../shared/datasets/clothing-small/catalog.csv --catalog clothing
    lookalike index ../shared/datasets/clothing-small/catalog.csv --catalog clothing --encoder effnet-lite0:crop=fg
    python -m lookalike.bench.studies.label_free --catalog clothing --out label_free.json

The colour window (``window=N,colour=W``, :class:`lookalike.search.expansion.ColourWindow`): the
CNN part alone ranks (and picks αQE's neighbours), and the colour part, at weight W, re-orders only
its first N hits; the rows sweep N and W (weight-0 rows skip it: there is no colour part).

Centring and PCA-whitening fitted on the catalog (:mod:`lookalike.search.whitening`): the
``centre=1`` re-rankings, and ``--whitening DIM/POWER/SHRINK;…`` rows (the fused vectors at
``--whitening-weight`` transformed first; DIM ``all`` keeps every axis). GeM pooling and flip
test-time augmentation come from the backbone's cached last feature maps (``--maps DIR``: one CNN
pass per view over the catalog's images, computed there once with ``--build-maps``; the rows reuse
the catalog's own colour parts), so every variant is scored on the same items in the same run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike import Catalog
from lookalike.bench.studies.colour_joint import centre
from lookalike.data.artifacts import write_json
from lookalike.data.images import open_image
from lookalike.encoders.colour import ciede2000, colour_summary, fuse_parts, split_fused
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.evaluation.tuning import variant_spec
from lookalike.search.expansion import Expansion, expanded_neighbours
from lookalike.search.whitening import Whitening, WhiteningConfig

WEIGHTS = "0,0.1,0.15,0.2"
EXPANSIONS = ("none;qe=5;dba=10;qe=5,dba=10;qe=10,dba=20;qe=20,dba=30;centre=1;centre=1,qe=10,dba=20;"
              "centre=1,qe=15,dba=30,alpha=2;centre=1,qe=15,dba=20,alpha=2;"
              "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.2;centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.3;"
              "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.4;centre=1,qe=15,dba=20,alpha=2,window=12,colour=0.3;"
              "centre=1,qe=15,dba=20,alpha=2,window=15,colour=0.3;centre=1,qe=15,dba=20,alpha=2,window=20,colour=0.3")
# DIM/POWER/SHRINK[/cnn] (lookalike.search.whitening; "/cnn": the colour part is not centred)
WHITENING = "all/0/0/cnn;512/0/0;512/0.25/0;512/0.5/1;256/0.5/0"
MAP_VIEWS = ("avg", "gem", "avg+flip", "gem+flip")   # pooled variants from the cached feature maps
GEM_P = 3.0   # Radenović et al. 2018's GeM exponent
CROP_EXPANSIONS = "none;qe=10,dba=20"  # the crop rows: without and with the re-ranking
JOINT_DELTA_E = 10.0  # colour_joint's threshold: dominant colours this close count as "the same colour"


def dominant_colours(cat: Catalog, ids: list[str], cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) foreground and (n, 3) centre-crop dominant Lab colours per item (colour_joint's proxies)."""
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            if list(saved["ids"]) == list(ids):
                return saved["foreground"], saved["centre"]
    foreground, middle = [], []
    for item_id in tqdm(ids, desc="dominant colours"):
        image = open_image(cat.get(item_id).path, draft_size=128)
        foreground.append(colour_summary(image)[1])
        middle.append(colour_summary(centre(image), weighting="uniform")[1])
    foreground, middle = np.stack(foreground).astype(np.float32), np.stack(middle).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.array(ids), foreground=foreground, centre=middle)
    return foreground, middle


def build_maps(cat: Catalog, ids: list[str], folder: Path, flip: bool = True, batch: int = 32) -> None:
    """Cache the default backbone's last feature maps of ``ids`` (centre crop, the encoder's
    preprocessing) as float16 ``maps.npy`` (n, 1280, h, w), ``maps_flip.npy`` for the mirrored
    images when ``flip``, and ``ids.npy``: one CNN pass per view, under --maps."""
    import torch  # heavy: only this option runs the CNN here

    from lookalike.encoders.pretrained import load_backbone, preprocess_image

    folder.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone()
    paths = [cat.get(i).path for i in ids]
    for view in ("maps",) + (("maps_flip",) if flip else ()):
        if (folder / f"{view}.npy").exists():
            continue
        out = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(paths), batch), desc=f"CNN {view}"):
                x = torch.from_numpy(np.stack([preprocess_image(open_image(p, draft_size=224), 224, "crop")
                                               for p in paths[start:start + batch]]))
                if view == "maps_flip":
                    x = torch.flip(x, dims=[3])
                out.append(backbone.feature_maps(x).numpy().astype(np.float16))
        np.save(folder / f"{view}.npy", np.concatenate(out))
    np.save(folder / "ids.npy", np.array(ids))


def pooled_views(folder: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """(n, 1280) CNN parts of ``ids`` from the cached maps: average / GeM pooling, with and without
    the flipped view averaged in (flip rows only when ``maps_flip.npy`` is there)."""
    cached = list(np.load(folder / "ids.npy"))
    row = {i: n for n, i in enumerate(cached)}
    order = np.array([row[i] for i in ids])
    views = {}
    for name in ("maps", "maps_flip"):
        if not (folder / f"{name}.npy").exists():
            continue
        maps = np.load(folder / f"{name}.npy", mmap_mode="r")
        avg, gem = [], []
        for start in range(0, len(order), 256):
            chunk = np.asarray(maps[np.sort(order[start:start + 256])], np.float32)
            back = np.argsort(np.argsort(order[start:start + 256]))
            chunk = chunk[back]
            avg.append(chunk.mean(axis=(2, 3)))
            gem.append((np.maximum(chunk, 1e-6) ** GEM_P).mean(axis=(2, 3)) ** (1 / GEM_P))
        views[name] = (np.concatenate(avg), np.concatenate(gem))
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
    out = {"avg": unit(views["maps"][0]), "gem": unit(views["maps"][1])}
    if "maps_flip" in views:
        out["avg+flip"] = unit(unit(views["maps"][0]) + unit(views["maps_flip"][0]))
        out["gem+flip"] = unit(unit(views["maps"][1]) + unit(views["maps_flip"][1]))
    return out


def whitening_config(text: str, keep: int) -> WhiteningConfig:
    """``"DIM/POWER/SHRINK[/cnn]"`` (DIM ``all``: every axis; ``/cnn``: leave the colour part
    uncentred) -> a config with ``keep`` trailing values."""
    dim, power, shrink, *only = text.split("/")
    return WhiteningConfig(dim=None if dim == "all" else int(dim), power=float(power), shrink=float(shrink), keep=keep,
                           centre_kept=only != ["cnn"])


def score(vectors: np.ndarray, labels: np.ndarray, expansion: Expansion, dominant: tuple[np.ndarray, np.ndarray],
          keep: int = 0) -> dict:
    started = time.perf_counter()
    nn = expanded_neighbours(vectors, 10, expansion, keep=keep)
    seconds = time.perf_counter() - started
    report = evaluate_vectors(vectors, list(labels), ks=(1, 10), neighbours=nn)
    top = nn[:, 0]
    same = labels[top] == labels
    row = {"P@1": report.overall["P@1"], "mAP@10": report.overall["mAP@10"], "NDCG@10": report.overall["NDCG@10"]}
    for name, dom in zip(("joint P@1 (fg)", "joint P@1 (centre)"), dominant):
        row[name] = float((same & (ciede2000(dom, dom[top]) < JOINT_DELTA_E)).mean())
    row["rank s"] = seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--home")
    parser.add_argument("--base", help="stored fused encoder the weights come from (default: the catalog's)")
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--expansions", default=EXPANSIONS, help="';'-separated re-rankings (search.expansion)")
    parser.add_argument("--crop-expansions", default=CROP_EXPANSIONS, help="re-rankings of the crop=fg rows")
    parser.add_argument("--whole", default="0.2|qe=5,dba=10;0.2|qe=10,dba=20;0.1|qe=10,dba=20",
                        help="weight|re-ranking rows also run with the colour part re-ranked too (keep=0)")
    parser.add_argument("--encoders", default="", help="','-free list of other stored encoders, ';'-separated")
    parser.add_argument("--whitening", default=WHITENING, help="';'-separated DIM/POWER/SHRINK rows ('' for none)")
    parser.add_argument("--whitening-weight", type=float, default=0.1, help="colour weight of the whitening rows")
    parser.add_argument("--whitening-expansions", default="none;qe=15,dba=30,alpha=2")
    parser.add_argument("--maps", type=Path, help="cached feature maps for the GeM / flip rows (see --build-maps)")
    parser.add_argument("--build-maps", action="store_true", help="compute --maps first when missing (a CNN pass per view)")
    parser.add_argument("--maps-weights", default="0,0.1")
    parser.add_argument("--maps-expansions", default="none;centre=1,qe=15,dba=30,alpha=2")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-label-free"))
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args()

    cat = Catalog.open(args.catalog, home=args.home)
    args.base = args.base or cat.default_encoder
    ids, fused = cat.vectors(args.base)
    labels = np.array(cat.labels(encoder=args.base), dtype=object)
    dominant = dominant_colours(cat, ids, args.cache / f"{cat.name}-dominant.npz")
    base_weight = cat.encoder(args.base).colour
    cnn, colour = split_fused(fused, base_weight)
    parts = {"none": cnn}
    crop_spec = variant_spec(args.base, 0.0, "fg")
    if cat.encoder_info(crop_spec) is not None:
        crop_ids, crop_vectors = cat.vectors(crop_spec)
        row = {i: n for n, i in enumerate(crop_ids)}
        if all(i in row for i in ids):
            parts["fg"] = split_fused(np.asarray(crop_vectors)[[row[i] for i in ids]], 0.0)[0]
    crop_expansions = [Expansion.parse(e) for e in args.crop_expansions.split(";")]
    expansions = [Expansion.parse(e) for e in args.expansions.split(";")]
    candidates = []  # (spec, vectors, re-rankings, kept trailing dims, note)
    for crop, cnn_part in parts.items():
        for w in (float(x) for x in args.weights.split(",")):
            settings = expansions if crop == "none" else crop_expansions
            if w <= 0:   # no colour part: a colour window changes nothing (its rows would repeat others)
                settings = [e for e in settings if not e.window]
            candidates.append((variant_spec(args.base, w, crop), fuse_parts(cnn_part, colour, w),
                               settings, colour.shape[1] if w > 0 else 0, ""))
    for entry in filter(None, args.whole.split(";")):
        w, expansion = entry.split("|")
        candidates.append((variant_spec(args.base, float(w), "none"), fuse_parts(cnn, colour, float(w)),
                           [Expansion.parse(expansion)], 0, " (colour part re-ranked too)"))
    keep = colour.shape[1]
    for text in filter(None, args.whitening.split(";")):
        config = whitening_config(text, keep if args.whitening_weight > 0 else 0)
        fused_w = fuse_parts(cnn, colour, args.whitening_weight)
        candidates.append((variant_spec(args.base, args.whitening_weight, "none"),
                           Whitening(config).fit(fused_w).transform(fused_w),
                           [Expansion.parse(e) for e in args.whitening_expansions.split(";")],
                           config.keep, f" after PCA d={config.dim or 'all'} power={config.power:g} "
                                        f"shrink={config.shrink:g}" + ("" if config.rotates else " (centring)")
                                        + ("" if config.centre_kept else ", colour part not centred")))
    if args.maps is not None:
        if args.build_maps:
            build_maps(cat, ids, args.maps)
        for view, cnn_view in pooled_views(args.maps, ids).items():
            for w in (float(x) for x in args.maps_weights.split(",")):
                candidates.append((variant_spec(args.base, w, "none"), fuse_parts(cnn_view, colour, w),
                                   [Expansion.parse(e) for e in args.maps_expansions.split(";")],
                                   keep if w > 0 else 0, f" [cached maps: {view}]"))
    for spec in filter(None, (s.strip() for s in args.encoders.split(";"))):
        if cat.encoder_info(spec) is None:
            print(f"skipped {spec}: not indexed in {cat.name}")
            continue
        other_ids, other = cat.vectors(spec)
        row = {i: n for n, i in enumerate(other_ids)}
        candidates.append((spec, np.asarray(other)[[row[i] for i in ids]], expansions,
                           cat.encoder(spec).unexpanded_dims, ""))

    rows = []
    header = ["encoder", "re-ranking", "P@1", "mAP@10", "NDCG@10", "joint P@1 (fg)", "joint P@1 (centre)", "rank s"]
    print(f"{cat.name}: {len(ids)} items, leave-one-out, relevance = same label")
    print(" | ".join(header))
    for spec, vectors, settings, keep, note in candidates:
        for expansion in settings:
            row = {"encoder": spec, "re-ranking": str(expansion) + note,
                   **score(vectors, labels, expansion, dominant, keep)}
            rows.append(row)
            print(" | ".join(str(row[h]) if isinstance(row[h], str) else f"{row[h]:.3f}" for h in header), flush=True)
    if args.out:
        write_json(args.out, {"catalog": cat.name, "items": len(ids), "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
