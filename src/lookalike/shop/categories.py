"""Which catalog categories a body region may hold: a small synonym table as a prior, the catalog's
own label probe as the evidence.

    prior = region_prior(["t-shirt", "dress", "bag", "kimono"])      # label -> regions its name fits
    fit = region_fit("top", probabilities, prior)                    # how well the catalog fits a crop
    guess = best_category("top", probabilities, prior)               # (label, probability) or None

A label's name decides nothing on its own: the probe (a linear classifier on the catalog's vectors,
:mod:`lookalike.train.probes`) says which of the catalog's labels a crop looks like, and the prior
only says which of those labels a region may hold. The prior weight ``π(region, label)`` is

* 1 when the label's name is in the region's synonym list (:data:`SYNONYMS`; matched per word,
  case, hyphens and a plural ``s`` ignored, so "Women's Jeans", "T-Shirts" and "tshirt" match);
* 0 when it is in another region's list (a "shoes" crop can never be a top);
* :data:`UNKNOWN_PRIOR` (0.5) when it is in no list: a catalog with its own vocabulary ("kurta",
  "SKU-123") still works, led by the probe's confidence alone.

The fit of a region crop is ``Σ_label p(label | crop) · π(region, label)`` (the probability mass the
probe puts on labels the region may hold); a candidate region is kept when its fit reaches
:data:`MIN_FIT`. A region is searched among its prior labels plus the unknown-vocabulary labels the
probe gives at least :data:`CONFIDENT` on that crop. Top, bottom and footwear need no fit
(:data:`CORE_FIT`), head and hands :data:`EXTRA_FIT`; one-piece,
outerwear, head and hands are looked for only when at least one label is named for them
(:data:`NEEDS_NAMED_LABEL`), so a catalog in its own vocabulary gets the classic three. Explicit categories from the shop config
(``--category top=...``) replace the prior for their region.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

# The slot a region's garment fills. "onepiece" is the torso-to-knee/ankle garment (dress, jumpsuit)
# and may also hold a long coat, so it accepts the outerwear words as well.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "head": ("hat", "cap", "beanie", "beret", "headwear", "headband", "helmet", "fedora", "bucket hat", "turban"),
    "top": ("t-shirt", "tshirt", "tee", "shirt", "longsleeve", "top", "blouse", "sweater", "jumper", "hoodie",
            "sweatshirt", "polo", "tank", "camisole", "cardigan", "tunic", "bodysuit", "pullover", "kurta"),
    "outerwear": ("outwear", "outerwear", "jacket", "coat", "blazer", "parka", "anorak", "windbreaker", "gilet",
                  "poncho", "trench", "raincoat", "overcoat"),
    "onepiece": ("dress", "jumpsuit", "romper", "playsuit", "gown", "overall", "overalls", "dungarees", "saree",
                 "sari", "kaftan", "onesie", "sundress"),
    "bottom": ("pants", "trousers", "jeans", "shorts", "skirt", "leggings", "chinos", "joggers", "sweatpants",
               "bottoms", "capris", "culottes", "slacks"),
    "footwear": ("shoes", "shoe", "sneakers", "boots", "sandals", "heels", "loafers", "slippers", "flats",
                 "footwear", "trainers", "pumps", "clogs", "flip-flops", "espadrilles", "mules"),
    "hands": ("bag", "handbag", "purse", "backpack", "clutch", "tote", "wallet", "satchel", "gloves", "umbrella"),
}
# A region may hold the garments of these slots (a long coat fills the one-piece region).
SLOTS: dict[str, tuple[str, ...]] = {"head": ("head",), "top": ("top",), "outerwear": ("outerwear",),
                                     "onepiece": ("onepiece", "outerwear"), "bottom": ("bottom",),
                                     "footwear": ("footwear",), "hands": ("hands",)}
UNKNOWN_PRIOR = 0.5     # prior weight of a label no synonym list names
MIN_FIT = 0.3           # a candidate region is kept when the probe's mass on its labels reaches this ...
# ... except head and hands: there is often nothing there (a bare head, an empty hand), and the probe
# has no "nothing" class, so it still names its likeliest label (a bare head: hat p=0.66 on the
# shared businessman photo, a cap p=0.97 on the boy photo): they need stronger evidence.
EXTRA_FIT = 0.75
OPTIONAL = ("head", "hands")
# The classic three are kept whenever their keypoints are seen and the catalog has labels they may
# hold (a seen torso, legs or feet nearly always wear something): the probe reads crops of people
# less surely than product photos, and gating them at MIN_FIT dropped 37 % of the shoes and 40 % of
# the bottoms on the composites of bench/studies/shop_regions (at 0.1: 25 % and 22 %). Their fit is
# still reported, and a top whose fit is below MIN_FIT gives way to a kept outerwear region.
CORE_FIT = 0.0
CORE = ("top", "bottom", "footwear")
# Regions beyond the classic three are looked for only when the catalog has them: at least one label
# the synonym table (or the config) names for the region.
NEEDS_NAMED_LABEL = ("onepiece", "outerwear", "head", "hands")
CONFIDENT = 0.25        # an unknown-vocabulary label this probable on a crop is searched too
# A region's reported category: the probe's best category when its share of the region's fit
# (p·π / Σ p·π: its probability among the labels this region may hold) is at least PROBE_TRUSTED,
# else the majority label of the region's top VOTES search results (already restricted to the
# region's categories). Chosen on bench/studies/shop_regions composites of the validation split
# (60 looks; category accuracy 0.767 with the probe alone, 0.744 with the results alone, 0.783 at
# 0.6 and 0.7; see docs/shop-the-look.md), never on the test composites.
PROBE_TRUSTED = 0.6
VOTES = 5


def _words(text: str) -> set[str]:
    """Normalised forms of a label: the whole name without separators, and each word, singular."""
    low = str(text).lower().strip()
    words = {w for w in re.split(r"[^a-z0-9]+", low) if len(w) > 1}
    forms = {re.sub(r"[^a-z0-9]+", "", low)} | words
    return {f[:-1] if f.endswith("s") and len(f) > 3 else f for f in forms if f}


_TABLE = {slot: set().union(*(_words(s) for s in names)) for slot, names in SYNONYMS.items()}


def slots_of(label: str) -> set[str]:
    """The slots whose synonym list names ``label`` (empty: unknown vocabulary)."""
    forms = _words(label)
    return {slot for slot, words in _TABLE.items() if forms & words}


def region_prior(labels: Sequence[str], explicit: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict[str, float]]:
    """``{region: {label: π}}`` for every region in :data:`SLOTS` and every catalog label.

    ``explicit`` (region -> labels, from the shop config) replaces the table for those regions: π = 1
    for the listed labels, 0 for the rest."""
    explicit = explicit or {}
    label_slots = {label: slots_of(label) for label in labels}
    prior: dict[str, dict[str, float]] = {}
    for region, slots in SLOTS.items():
        if region in explicit:
            wanted = {str(v) for v in explicit[region]}
            prior[region] = {label: float(label in wanted) for label in labels}
            continue
        prior[region] = {label: (1.0 if found & set(slots) else 0.0) if found else UNKNOWN_PRIOR
                         for label, found in label_slots.items()}
    return prior


def min_fit(region: str) -> float:
    """The fit a candidate ``region`` needs to be kept (:data:`CORE_FIT`, :data:`MIN_FIT`, :data:`EXTRA_FIT`)."""
    return EXTRA_FIT if region in OPTIONAL else CORE_FIT if region in CORE else MIN_FIT


def region_fit(region: str, probabilities: Mapping[str, float], prior: Mapping[str, Mapping[str, float]]) -> float:
    """``Σ p(label | crop) · π(region, label)`` in [0, 1]."""
    weights = prior[region]
    return float(sum(p * weights.get(label, 0.0) for label, p in probabilities.items()))


def best_category(region: str, probabilities: Mapping[str, float],
                  prior: Mapping[str, Mapping[str, float]]) -> tuple[str, float] | None:
    """The label maximising ``p · π`` for this region and its probe probability; None when every
    label has π = 0 for it (the catalog has nothing this region could hold)."""
    weights = prior[region]
    scored = [(p * weights.get(label, 0.0), label) for label, p in probabilities.items()]
    scored = [s for s in scored if s[0] > 0]
    if not scored:
        return None
    _, label = max(scored)
    return label, float(probabilities[label])


def region_share(label: str, probabilities: Mapping[str, float], prior: Mapping[str, Mapping[str, float]],
                 region: str) -> float:
    """``p(label)·π / Σ p·π`` in [0, 1]: the probe's probability of ``label`` among the labels
    ``region`` may hold (0 when their mass is 0)."""
    fit = region_fit(region, probabilities, prior)
    return float(probabilities.get(label, 0.0) * prior[region].get(label, 0.0) / fit) if fit > 0 else 0.0


def hit_vote(labels: Sequence[str | None], votes: int = VOTES) -> tuple[str, float] | None:
    """The most frequent label among the first ``votes`` result labels (best first) and its share of
    them; a tie goes to the label ranked first. None when no result has a label."""
    top = [str(label) for label in list(labels)[:votes] if label is not None]
    if not top:
        return None
    counts = {label: top.count(label) for label in dict.fromkeys(top)}  # insertion order = first rank
    label = max(counts, key=lambda name: (counts[name], -top.index(name)))
    return label, counts[label] / len(top)


def final_category(guess: tuple[str, float] | None, hit_labels: Sequence[str | None],
                   threshold: float = PROBE_TRUSTED, votes: int = VOTES) -> tuple[str | None, float | None, str]:
    """A region's category from two pieces of evidence: the probe's ``guess`` (label, its share of the
    region's fit, see :func:`region_share`) and the labels of the region's results, best first.

    Rule: the probe's label when its share is >= ``threshold``; otherwise the majority label
    of the first ``votes`` results (:func:`hit_vote`; its confidence is its vote share); the probe's
    label again when no result has a label. Returns (label, confidence, source) with source
    ``"probe"`` or ``"results"`` (label None, source "probe" when neither exists)."""
    if guess is not None and guess[1] >= threshold:
        return guess[0], guess[1], "probe"
    vote = hit_vote(hit_labels, votes)
    if vote is not None:
        return vote[0], vote[1], "results"
    return (guess[0], guess[1], "probe") if guess is not None else (None, None, "probe")


def searched_categories(region: str, probabilities: Mapping[str, float],
                        prior: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Labels to search a region among: its prior labels (π = 1) plus unknown-vocabulary labels the
    probe gives at least :data:`CONFIDENT`; the best category when that leaves none."""
    weights = prior[region]
    chosen = [label for label, w in weights.items() if w >= 1.0]
    chosen += [label for label, w in weights.items() if 0 < w < 1.0 and probabilities.get(label, 0.0) >= CONFIDENT]
    if not chosen:
        best = best_category(region, probabilities, prior)
        chosen = [best[0]] if best else []
    return sorted(chosen)


def probabilities_of(classes: Sequence[str], rows: np.ndarray) -> list[dict[str, float]]:
    """Probe output ``(n, classes)`` as one ``{label: p}`` dict per crop."""
    return [{str(c): float(p) for c, p in zip(classes, row)} for row in np.atleast_2d(rows)]
