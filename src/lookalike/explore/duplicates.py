"""Exact and near-duplicate images: groups by embedding distance, a perceptual-hash baseline, and
precision/recall on generated copies.

* exact duplicates share a content hash (sha256 of the file);
* near duplicates are pairs closer than a threshold — cosine distance between embeddings
  (``embedding``), or Hamming distance between 64-bit perceptual hashes (``phash``, imagehash);
  or either of the two (``both``: the hash catches heavy re-compression, the embedding crops);
* pairs are joined into groups (connected components), so A~B and B~C put A, B, C together.

``evaluate_on_copies`` builds a labelled test set from the catalog itself: it makes augmented
copies (resized, re-compressed, cropped, recoloured) of sampled items, picks each method's
threshold on half of the copies and reports precision/recall on the other half.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from lookalike.data.artifacts import KeyedCache, atomic_file, encoder_key, write_json
from lookalike.data.images import ImageError, open_image
from lookalike.index.distances import hamming_pairs, prepare, range_pairs
from lookalike.search.diversity import NEAR_DUPLICATE_DISTANCE
from lookalike.train.base import artifact_dir
from lookalike.viz.grids import group_grid

# What ``choose_threshold`` picked on generated copies of clothing-small (effnet-lite0), see
# docs/explore.md; above them distinct photos of similar products start to chain into groups.
# The embedding threshold lives in search.diversity, which collapses near duplicates in search results.
DEFAULT_THRESHOLD = NEAR_DUPLICATE_DISTANCE   # cosine distance
DEFAULT_PHASH_BITS = 4     # Hamming distance out of 64
METHODS = ("embedding", "phash", "both")
AUGMENTATIONS = ("resize", "jpeg", "crop", "recolour", "combined")


@dataclass
class Group:
    rows: list[int]
    exact: bool               # all members have the same file content
    max_distance: float       # largest distance of a linking pair (0 for exact groups)


# -- pairs and groups --------------------------------------------------------------------------

def embedding_pairs(vectors: np.ndarray, threshold: float, metric: str = "cosine") -> list[tuple[int, int, float]]:
    """(i, j, distance) with i < j for every pair within ``threshold`` (``index.distances.range_pairs``).
    Cosine: distance = 1 - cos; l2: Euclidean distance."""
    if metric not in ("cosine", "l2"):
        raise ValueError("near-duplicate search supports cosine and l2 vectors")
    return range_pairs(vectors, threshold, metric)


def hash_pairs(codes: np.ndarray, max_bits: int) -> list[tuple[int, int, float]]:
    """(i, j, Hamming distance) with i < j for (n, 8) uint8 hash codes within ``max_bits``."""
    return hamming_pairs(codes, max_bits)


def exact_pairs(keys: Sequence[str]) -> list[tuple[int, int, float]]:
    """Pairs of rows with the same content hash (chained: first row with each other)."""
    first: dict[str, int] = {}
    pairs = []
    for row, key in enumerate(keys):
        if not key:
            continue
        if key in first:
            pairs.append((first[key], row, 0.0))
        else:
            first[key] = row
    return pairs


def group_pairs(n: int, pairs: Sequence[tuple[int, int, float]], keys: Sequence[str] | None = None) -> list[Group]:
    """Connected components of the pair graph with 2+ members, largest first."""
    # scipy loads only when duplicates are grouped, not at CLI start
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return []
    i = np.array([p[0] for p in pairs])
    j = np.array([p[1] for p in pairs])
    graph = coo_matrix((np.ones(len(pairs)), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    worst: dict[int, float] = {}
    for a, _, d in pairs:
        worst[component[a]] = max(worst.get(component[a], 0.0), d)
    members: dict[int, list[int]] = {}
    for row in np.unique(np.concatenate([i, j])):
        members.setdefault(int(component[row]), []).append(int(row))
    groups = [Group(rows=rows, max_distance=worst.get(c, 0.0),
                    exact=bool(keys) and len({keys[r] for r in rows}) == 1 and bool(keys[rows[0]]))
              for c, rows in members.items()]
    return sorted(groups, key=lambda g: (-len(g.rows), g.rows[0]))


def find_duplicates(vectors: np.ndarray, keys: Sequence[str] | None = None, threshold: float = DEFAULT_THRESHOLD,
                    metric: str = "cosine") -> list[Group]:
    """Exact (same ``keys``) and near (embedding distance <= ``threshold``) duplicate groups."""
    pairs = embedding_pairs(vectors, threshold, metric)
    if keys is not None:
        pairs += exact_pairs(keys)
    return group_pairs(len(vectors), pairs, keys)


# -- perceptual hash -----------------------------------------------------------------------------

def phash_code(image: Image.Image) -> np.ndarray:
    """64-bit DCT perceptual hash (imagehash.phash) as 8 bytes."""
    try:
        import imagehash
    except ImportError:
        raise ValueError("perceptual hashes need imagehash: pip install 'lookalike[explore]'") from None

    return np.packbits(imagehash.phash(image).hash.ravel())


def phash_codes(images: Sequence, progress: Callable | None = None) -> tuple[np.ndarray, list[int]]:
    """Codes for image paths or PIL images; unreadable ones get all-zero codes and are listed."""
    codes = np.zeros((len(images), 8), np.uint8)
    failed = []
    for row, source in enumerate(images):
        try:
            codes[row] = phash_code(open_image(source))
        except ImageError:
            failed.append(row)
        if progress:
            progress(1)
    return codes, failed


# -- generated copies -------------------------------------------------------------------------------

def augment(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One near-duplicate of ``image``: the edits shops make to the same product photo."""
    w, h = image.size
    if kind == "resize":
        scale = rng.uniform(0.4, 0.7)
        return image.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.BILINEAR)
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(15, 40)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "crop":
        left, top = rng.uniform(0.03, 0.1) * w, rng.uniform(0.03, 0.1) * h
        right, bottom = w - rng.uniform(0.03, 0.1) * w, h - rng.uniform(0.03, 0.1) * h
        return image.crop((int(left), int(top), int(right), int(bottom)))
    if kind == "recolour":
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.15))
        return ImageEnhance.Color(image).enhance(rng.uniform(0.75, 1.25))
    if kind == "combined":
        for step in ("crop", "recolour", "resize", "jpeg"):
            image = augment(image, step, rng)
        return image
    raise ValueError(f"unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTATIONS)}")


@dataclass
class Copies:
    sources: list[int]        # row of the original each copy was made from
    kinds: list[str]
    images: list[Image.Image]


def make_copies(paths: Sequence[str], n: int, seed: int = 0) -> Copies:
    """One augmented copy of each of ``n`` sampled originals, augmentations taken in turn."""
    rng = np.random.default_rng(seed)
    copies = Copies([], [], [])
    for row in rng.permutation(len(paths)):
        if len(copies.sources) >= n:
            break
        try:
            original = open_image(paths[row])
        except ImageError:
            continue
        kind = AUGMENTATIONS[len(copies.sources) % len(AUGMENTATIONS)]
        copies.sources.append(int(row))
        copies.kinds.append(kind)
        copies.images.append(augment(original, kind, rng))
    return copies


def _pair_set(groups: list[Group]) -> set[tuple[int, int]]:
    return {(a, b) for g in groups for x, a in enumerate(g.rows) for b in g.rows[x + 1:]}


def score_groups(groups: list[Group], n_originals: int, copy_sources: Sequence[int],
                 copy_rows: Sequence[int] | None = None) -> dict:
    """Precision/recall over pairs that involve a generated copy (rows >= ``n_originals``).

    Copy ``c`` (row ``n_originals + c``) is truly a duplicate of ``copy_sources[c]`` only — pairs
    between two originals are left out because the catalog may hold real duplicates nobody
    labelled; they are counted separately for inspection. ``copy_rows`` scores a subset of copies.
    """
    scored = set(range(len(copy_sources))) if copy_rows is None else set(copy_rows)
    truth = {(copy_sources[c], n_originals + c) for c in scored}
    predicted = {p for p in _pair_set(groups)
                 if p[1] >= n_originals and (p[1] - n_originals) in scored
                 and (p[0] < n_originals or (p[0] - n_originals) in scored)}
    correct = len(predicted & truth)
    precision = correct / len(predicted) if predicted else 1.0
    recall = correct / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": len(truth),
            "predicted_pairs": len(predicted),
            "original_pairs": sum(1 for a, b in _pair_set(groups) if b < n_originals)}


def sweep(pairs_at: Callable[[float], list], thresholds: Sequence[float], n: int, n_originals: int,
          copy_sources: Sequence[int], copy_rows: Sequence[int]) -> list[dict]:
    """Scores for each threshold; ``pairs_at(t)`` gives the near pairs at threshold ``t``."""
    rows = []
    for t in thresholds:
        score = score_groups(group_pairs(n, pairs_at(t)), n_originals, copy_sources, copy_rows)
        rows.append({"threshold": t, **score})
    return rows


# -- measuring on a catalog -------------------------------------------------------------------------

EMBEDDING_THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.17, 0.2)
PHASH_THRESHOLDS = (0, 2, 4, 6, 8, 10, 12)


MIN_PRECISION = 0.95


def choose_threshold(sweep_rows: list[dict], min_precision: float = MIN_PRECISION) -> float:
    """Best-F1 threshold among those keeping precision >= ``min_precision`` (merging two different
    products is worse than missing a copy); best F1 overall when none does."""
    safe = [r for r in sweep_rows if r["precision"] >= min_precision] or sweep_rows
    return max(safe, key=lambda r: (r["f1"], -r["threshold"]))["threshold"]


def _filtered(pairs: list, limit: float) -> list:
    return [p for p in pairs if p[2] <= limit]


def evaluate_on_copies(vectors: np.ndarray, paths: Sequence[str], embed: Callable[[list], np.ndarray],
                       n_copies: int = 300, metric: str = "cosine", seed: int = 0,
                       phash_of_originals: np.ndarray | None = None,
                       embedding_thresholds: Sequence[float] = EMBEDDING_THRESHOLDS,
                       phash_thresholds: Sequence[int] = PHASH_THRESHOLDS, progress: Callable | None = None) -> dict:
    """Embedding distance vs perceptual hash at finding generated copies among the originals.

    Each method's threshold is chosen on the even-numbered copies (calibration, see
    ``choose_threshold``); the
    figures reported are on the odd-numbered copies (held out), so neither method is scored on the
    data its threshold was tuned on. ``embed`` turns PIL images into vectors exactly as indexing does.
    """
    copies = make_copies(paths, n_copies, seed)
    n_orig, n_all = len(vectors), len(vectors) + len(copies.images)
    all_vectors = np.vstack([prepare(vectors, metric), prepare(embed(copies.images), metric)])
    if phash_of_originals is None:
        phash_of_originals, _ = phash_codes(paths, progress)
    codes = np.vstack([phash_of_originals, phash_codes(copies.images)[0]])
    near = {"embedding": embedding_pairs(all_vectors, max(embedding_thresholds), metric),
            "phash": hash_pairs(codes, int(max(phash_thresholds)))}
    grid = {"embedding": embedding_thresholds, "phash": phash_thresholds}
    calibration = list(range(0, len(copies.sources), 2))
    held_out = list(range(1, len(copies.sources), 2))
    report = {"originals": n_orig, "copies": len(copies.sources), "held_out_copies": len(held_out),
              "augmentations": {k: copies.kinds.count(k) for k in AUGMENTATIONS}, "methods": {}}
    for method, pairs in near.items():
        tuning = sweep(lambda t, p=pairs: _filtered(p, t), grid[method], n_all, n_orig, copies.sources, calibration)
        best = choose_threshold(tuning)
        groups = group_pairs(n_all, _filtered(pairs, best))
        per_kind = {kind: score_groups(groups, n_orig, copies.sources,
                                       [c for c in held_out if copies.kinds[c] == kind])["recall"]
                    for kind in AUGMENTATIONS}
        report["methods"][method] = {"threshold": best, "held_out": score_groups(groups, n_orig, copies.sources, held_out),
                                     "recall_by_augmentation": per_kind, "calibration_sweep": tuning}
    # both: the union of the two methods' pairs, each at its own calibrated threshold
    chosen = {m: report["methods"][m]["threshold"] for m in near}
    groups = group_pairs(n_all, _filtered(near["embedding"], chosen["embedding"]) + _filtered(near["phash"], chosen["phash"]))
    report["methods"]["both"] = {
        "threshold": f"{chosen['embedding']} / {chosen['phash']}",
        "held_out": score_groups(groups, n_orig, copies.sources, held_out),
        "recall_by_augmentation": {kind: score_groups(groups, n_orig, copies.sources,
                                                      [c for c in held_out if copies.kinds[c] == kind])["recall"]
                                   for kind in AUGMENTATIONS}}
    return report


# -- catalog layer ----------------------------------------------------------------------------------

def catalog_phash(cat, ids: Sequence[str], progress: Callable | None = None) -> np.ndarray:
    """Perceptual hashes of catalog items, cached by content hash in ``cache/phash.npz``."""
    items = {it.id: it for it in cat.items()}
    cache = KeyedCache(cat.dir / "cache" / "phash.npz", ("codes",))
    keys = [items[i].sha256 or items[i].path for i in ids]
    missing = [r for r, key in enumerate(keys) if key not in cache]
    if missing:
        codes, failed = phash_codes([items[ids[r]].path for r in missing], progress)
        failed = set(failed)
        for pos, row in enumerate(missing):
            if pos not in failed:
                cache[keys[row]] = np.asarray(codes[pos], np.uint8).reshape(8)
        cache.save()
    return np.array([cache.get(key, np.zeros(8, np.uint8)) for key in keys], np.uint8).reshape(-1, 8)


@dataclass
class CatalogGroups:
    """Duplicate groups of a catalog (``duplicate_groups``); ``Group.rows`` index ``ids``/``items``."""
    encoder: str
    ids: list[str]
    items: list                # the catalog Item of each id (path, label, sha256)
    groups: list[Group]        # largest first
    name: str                  # artifact folder name: the encoder key, "phash" or "<key>+phash"


def duplicate_groups(cat, encoder: str | None = None, threshold: float = DEFAULT_THRESHOLD, method: str = "embedding",
                     phash_bits: int = DEFAULT_PHASH_BITS, progress: Callable | None = None) -> CatalogGroups:
    """Exact (same content hash) and near duplicate groups of ``cat``: by embedding distance <=
    ``threshold`` (``embedding``), phash Hamming distance <= ``phash_bits`` (``phash``) or either
    (``both``). The one path behind ``lookalike duplicates`` and ``GET /api/duplicates``.
    Raises ValueError for an unknown method, LookupError when ``cat`` has no such vectors."""
    encoder, ids, matrix, metric = cat.vectors_with_metric(encoder)
    by_id = {it.id: it for it in cat.items()}
    items = [by_id[i] for i in ids]
    keys = [it.sha256 for it in items]
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    pairs = embedding_pairs(matrix, threshold, metric) if method in ("embedding", "both") else []
    if method in ("phash", "both"):
        pairs += hash_pairs(catalog_phash(cat, ids, progress), phash_bits)
    name = {"embedding": encoder_key(encoder), "phash": "phash", "both": f"{encoder_key(encoder)}+phash"}[method]
    return CatalogGroups(encoder, list(ids), items, group_pairs(len(ids), pairs + exact_pairs(keys), keys), name)


def catalog_duplicates(cat, encoder: str | None = None, threshold: float = DEFAULT_THRESHOLD, method: str = "embedding",
                       phash_bits: int = DEFAULT_PHASH_BITS, max_png: int = 50,
                       progress: Callable | None = None) -> dict:
    """Find duplicate groups in ``cat`` (``duplicate_groups``); write groups.json, groups.csv and
    group PNGs under ``artifacts/duplicates/<method>/``; return a summary."""
    found = duplicate_groups(cat, encoder, threshold, method, phash_bits, progress)
    encoder, ids, groups = found.encoder, found.ids, found.groups
    items = dict(zip(ids, found.items))
    folder = artifact_dir(cat.dir, "duplicates") / found.name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("group-*.png"):
        old.unlink()
    docs = []
    for n, group in enumerate(groups, start=1):
        members = [{"id": ids[r], "path": items[ids[r]].path, "label": items[ids[r]].label} for r in group.rows]
        doc = {"group": n, "size": len(group.rows), "exact": group.exact, "max_distance": round(group.max_distance, 5),
               "items": members}
        if n <= max_png:
            doc["png"] = str(group_grid([m["path"] for m in members], [m["id"] for m in members],
                                       folder / f"group-{n:04d}.png"))
        docs.append(doc)
    summary = {"catalog": cat.name, "method": method, "encoder": encoder if method != "phash" else None,
               "threshold": threshold if method != "phash" else None,
               "phash_bits": phash_bits if method != "embedding" else None, "items": len(ids),
               "groups": len(groups), "exact_groups": sum(g.exact for g in groups),
               "items_in_groups": sum(len(g.rows) for g in groups), "folder": str(folder)}
    write_json(folder / "groups.json", {**summary, "duplicate_groups": docs}, indent=2)
    with atomic_file(folder / "groups.csv", "w") as f:
        writer = csv.writer(f)
        writer.writerow(["group", "size", "exact", "max_distance", "id", "label", "path"])
        for doc in docs:
            for m in doc["items"]:
                writer.writerow([doc["group"], doc["size"], doc["exact"], doc["max_distance"], m["id"], m["label"] or "",
                                 m["path"]])
    summary["top_groups"] = docs[:10]
    return summary


def evaluate_catalog(cat, encoder: str | None = None, n_copies: int = 300, seed: int = 0,
                     progress: Callable | None = None) -> dict:
    """``evaluate_on_copies`` on a catalog's own images, embedding copies as indexing would; the
    report is also written to ``artifacts/duplicates/evaluation.json`` (its path under ``report``)."""
    encoder, ids, matrix, metric = cat.vectors_with_metric(encoder)
    items = {it.id: it for it in cat.items()}
    report = evaluate_on_copies(matrix, [items[i].path for i in ids],
                                embed=lambda images: cat.embed_images(images, encoder), n_copies=n_copies,
                                metric=metric, seed=seed, phash_of_originals=catalog_phash(cat, ids, progress))
    report = {"catalog": cat.name, "encoder": encoder, **report}
    target = write_json(artifact_dir(cat.dir, "duplicates") / "evaluation.json", report, indent=2)
    return {**report, "report": str(target)}
