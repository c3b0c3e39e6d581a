"""Region decisions: the synonym prior, the probe-led fit, one garment or two (with a probe and with
the colour rule), optional regions (head, hands) and what each skipped region says.

Photos are drawn on the fake upright person (tests/fakes.py: shoulders y=80, hips 180, knees 260,
ankles 340, T=100); a fake label probe reads colours (red = dress, green = t-shirt, blue = pants,
yellow = hat, black = shoes, magenta = outwear; skin spreads evenly over every class, as a probe
without a "nothing" class does on a bare head)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.shop import categories as cats
from lookalike.shop.pipeline import RegionChooser
from lookalike.shop.regions import ALL_REGIONS, garment_regions, onepiece_by_colour

from fakes import upright_person

SKIN = (224, 172, 140)
PALETTE = {"dress": (220, 20, 20), "t-shirt": (20, 200, 20), "pants": (20, 20, 220), "hat": (240, 220, 0),
           "shoes": (10, 10, 10), "outwear": (220, 0, 220)}


class ColourCatalog:
    """embed_images -> the share of each palette colour (+ skin) in each crop."""

    def embed_images(self, crops, encoder=None):
        rows = []
        for crop in crops:
            a = np.asarray(crop, np.int32).reshape(-1, 3)
            shares = [np.mean(np.abs(a - np.array(c)).max(axis=1) < 30) for c in [*PALETTE.values(), SKIN]]
            rows.append(shares)
        return np.array(rows, np.float32)


class ColourProbe:
    classes = list(PALETTE)
    encoder = "colours"

    def predict(self, vectors):
        vectors = np.atleast_2d(vectors)
        garments, skin = vectors[:, :-1], vectors[:, -1:]
        mass = garments + skin / len(self.classes) + 1e-3
        probabilities = mass / mass.sum(axis=1, keepdims=True)
        return [self.classes[i] for i in probabilities.argmax(axis=1)], probabilities


def photo(top, bottom, legs_apart=True, shins=SKIN, head=SKIN, hand=None):
    """200 x 400 white photo: ``top`` colour on the torso, ``bottom`` from the hips to the knees
    (one block covering the gap, or two legs with white between them), ``shins`` below, shoes."""
    a = np.full((400, 200, 3), 255, np.uint8)
    a[5:50, 80:120] = head
    a[70:195, 65:135] = top
    if legs_apart:  # trousers: joined down to the crotch, then two legs
        a[180:215, 84:116] = bottom
        a[180:270, 84:97] = bottom
        a[180:270, 103:116] = bottom
    else:
        a[180:275, 78:122] = bottom
    a[275:338, 85:97] = shins
    a[275:338, 103:115] = shins
    a[338:360, 84:124] = PALETTE["shoes"]
    if hand is not None:
        a[160:200, 120:150] = hand
    return a


def decide(pixels, chooser=None):
    person = upright_person()
    image = Image.fromarray(pixels)
    found, skipped = garment_regions(person, image.size, ALL_REGIONS, image=pixels, use_mask=False)
    chooser = chooser or RegionChooser(ColourProbe(), cats.region_prior(ColourProbe.classes), {}, set(PALETTE))
    kept, skipped, decisions, _ = chooser.decide(ColourCatalog(), image, person, pixels, found, skipped)
    return ({r.name: d for r, d in zip(kept, decisions)}, {s.name: s.reason for s in skipped})


def test_synonym_prior_matches_words_not_exact_names():
    assert cats.slots_of("T-Shirts") == {"top"} and cats.slots_of("Women's Jeans") == {"bottom"}
    assert cats.slots_of("outwear") == {"outerwear"} and cats.slots_of("Maxi Dress") == {"onepiece"}
    assert cats.slots_of("sneakers") == {"footwear"} and cats.slots_of("Leather handbag") == {"hands"}
    assert cats.slots_of("kurta") == {"top"} and cats.slots_of("SKU-77") == set()
    prior = cats.region_prior(["dress", "pants", "sku-77"], explicit={"bottom": ["sku-77"]})
    assert prior["onepiece"] == {"dress": 1.0, "pants": 0.0, "sku-77": cats.UNKNOWN_PRIOR}
    assert prior["bottom"] == {"dress": 0.0, "pants": 0.0, "sku-77": 1.0}  # explicit replaces the table
    assert prior["outerwear"]["dress"] == 0.0


def test_fit_best_category_and_searched_set_follow_the_probe():
    prior = cats.region_prior(["t-shirt", "shirt", "pants", "kurti", "shoes"])
    p = {"t-shirt": 0.1, "shirt": 0.2, "pants": 0.05, "kurti": 0.6, "shoes": 0.05}
    assert cats.region_fit("top", p, prior) == pytest.approx(0.1 + 0.2 + 0.5 * 0.6)
    assert cats.best_category("top", p, prior) == ("kurti", 0.6)  # unknown word, confident probe
    assert cats.searched_categories("top", p, prior) == ["kurti", "shirt", "t-shirt"]
    # an unknown word the probe is confident about on this crop is searched too, known words only in their region
    assert cats.searched_categories("footwear", p, prior) == ["kurti", "shoes"]
    assert cats.searched_categories("footwear", {**p, "kurti": 0.1}, prior) == ["shoes"]
    assert cats.best_category("hands", {"pants": 1.0}, cats.region_prior(["pants"])) is None
    assert cats.min_fit("head") == cats.EXTRA_FIT > cats.min_fit("outerwear") == cats.MIN_FIT
    assert cats.min_fit("top") == cats.min_fit("footwear") == cats.CORE_FIT < cats.MIN_FIT


def test_dress_is_one_garment_searched_among_one_piece_categories():
    kept, skipped = decide(photo(PALETTE["dress"], PALETTE["dress"], legs_apart=False))
    assert "onepiece" in kept and "top" not in kept and "bottom" not in kept
    assert kept["onepiece"].category == "dress" and kept["onepiece"].categories == ["dress", "outwear"]
    assert "one garment from the shoulders down" in skipped["top"] and "label probe" in skipped["bottom"]
    assert kept["footwear"].category == "shoes"


def test_top_and_trousers_are_two_garments():
    kept, skipped = decide(photo(PALETTE["t-shirt"], PALETTE["pants"]))
    assert {"top", "bottom", "footwear"} <= set(kept) and "onepiece" not in kept
    assert kept["top"].category == "t-shirt" and kept["top"].categories == ["t-shirt"]
    assert kept["bottom"].category == "pants" and kept["bottom"].confidence > 0.5
    assert "separate garments" in skipped["onepiece"]
    assert "do not fit" in skipped["outerwear"] and "p=" in skipped["outerwear"]


def test_probe_saying_dress_is_overruled_when_the_thighs_are_apart():
    kept, skipped = decide(photo(PALETTE["dress"], PALETTE["dress"], legs_apart=True))
    assert "onepiece" not in kept and "thighs are apart" in skipped["onepiece"]
    # top and bottom stay (a seen torso and legs wear something), each with the probe's low fit
    assert kept["top"].fit < cats.MIN_FIT and kept["bottom"].fit < cats.MIN_FIT
    assert kept["bottom"].category in ("pants", "shorts", "skirt") and kept["bottom"].categories == ["pants"]


def test_head_and_hands_need_strong_evidence():
    kept, skipped = decide(photo(PALETTE["t-shirt"], PALETTE["pants"], head=PALETTE["hat"]))
    assert kept["head"].category == "hat" and kept["head"].fit >= cats.EXTRA_FIT
    kept, skipped = decide(photo(PALETTE["t-shirt"], PALETTE["pants"]))  # bare head
    assert "head" not in kept and f"< {cats.EXTRA_FIT}" in skipped["head"]

    class SkinIsHatProbe(ColourProbe):  # a probe that calls a bare head a hat (it has no "nothing" class)
        def predict(self, vectors):
            vectors = np.array(np.atleast_2d(vectors))
            vectors[:, 3] += vectors[:, -1]
            vectors[:, -1] = 0
            return super().predict(vectors)

    fooled = RegionChooser(SkinIsHatProbe(), cats.region_prior(ColourProbe.classes), {}, set(PALETTE))
    kept, skipped = decide(photo(PALETTE["t-shirt"], PALETTE["pants"]), fooled)
    assert "head" not in kept and "bare head" in skipped["head"]  # the forehead band is skin
    kept, _ = decide(photo(PALETTE["t-shirt"], PALETTE["pants"], head=PALETTE["hat"]), fooled)
    assert kept["head"].category == "hat"
    assert "hands" not in kept and "no hands categories" in skipped["hands"]  # no bag-like label in this catalog
    # with a bag label, the hands are looked for (and kept only on strong evidence)
    with_bag = RegionChooser(ColourProbe(), cats.region_prior([*PALETTE, "tote bag"]), {}, set(PALETTE))
    kept, skipped = decide(photo(PALETTE["t-shirt"], PALETTE["pants"]), with_bag)
    assert "hands" not in kept and "no label is named like" not in skipped["hands"]  # looked for, then dropped


def test_a_catalog_in_its_own_vocabulary_gets_the_classic_three():
    own = {"dress": "kurti-long", "t-shirt": "choli-x", "pants": "pyjama-b", "hat": "topi", "shoes": "jutti", "outwear": "ch"}

    class OwnProbe(ColourProbe):
        classes = [own[c] for c in ColourProbe.classes]

    chooser = RegionChooser(OwnProbe(), cats.region_prior(OwnProbe.classes), {}, set(OwnProbe.classes))
    kept, skipped = decide(photo(PALETTE["t-shirt"], PALETTE["pants"]), chooser)
    assert set(kept) == {"top", "bottom", "footwear"}
    assert kept["top"].category == "choli-x" and kept["top"].categories == ["choli-x"]  # the confident unknown word
    assert kept["bottom"].categories == ["pyjama-b"] and kept["top"].fit == pytest.approx(cats.UNKNOWN_PRIOR, abs=0.01)
    assert all("no" in skipped[r] and "categories" in skipped[r] for r in ("onepiece", "outerwear", "head", "hands"))


def test_outerwear_over_the_top():
    kept, skipped = decide(photo(PALETTE["outwear"], PALETTE["pants"]))
    assert kept["outerwear"].category == "outwear" and "onepiece" not in kept and "bottom" in kept
    assert "top" not in kept and "covered by the outerwear" in skipped["top"]  # the jacket hides it


def test_without_a_probe_the_colour_rule_decides_and_extras_are_not_looked_for():
    no_probe = RegionChooser(None, cats.region_prior(list(PALETTE)), {}, set(PALETTE))
    kept, skipped = decide(photo(PALETTE["dress"], PALETTE["dress"], legs_apart=False), no_probe)
    assert "onepiece" in kept and kept["onepiece"].categories == ["dress", "outwear"] and kept["onepiece"].fit is None
    assert "colour rule" in skipped["top"] and "label probe" in skipped["head"]
    kept, skipped = decide(photo(PALETTE["t-shirt"], PALETTE["pants"]), no_probe)
    assert {"top", "bottom", "footwear"} == set(kept) and "colour rule" in skipped["onepiece"]
    assert kept["top"].categories == ["t-shirt"]
    pixels = photo(PALETTE["t-shirt"], PALETTE["t-shirt"], legs_apart=False)
    one, why = onepiece_by_colour(upright_person(), (200, 400), pixels)
    assert one and "between the thighs 0" in why


def test_region_share_is_the_probability_among_the_regions_labels():
    prior = cats.region_prior(["t-shirt", "dress", "pants", "shorts", "kurti"])
    p = {"t-shirt": 0.5, "dress": 0.3, "pants": 0.04, "shorts": 0.01, "kurti": 0.15}
    # a bottom crop the probe reads as a top: pants is only 0.04, but 0.04 / (0.04 + 0.01 + 0.5 * 0.15) among bottoms
    assert cats.region_share("pants", p, prior, "bottom") == pytest.approx(0.04 / 0.125)
    assert cats.region_share("dress", p, prior, "bottom") == 0.0  # a label the region may not hold
    assert cats.region_share("pants", {"t-shirt": 1.0}, prior, "bottom") == 0.0  # no mass on its labels


def test_hit_vote_majority_with_ties_to_the_first_ranked():
    assert cats.hit_vote(["skirt", "shorts", "shorts", "skirt", "pants"]) == ("skirt", 0.4)  # 2-2: skirt ranks first
    assert cats.hit_vote(["pants", "shorts", "shorts", "skirt", "shorts", "pants", "pants"]) == ("shorts", 0.6)
    assert cats.hit_vote(["pants", "shorts", "shorts"], votes=1) == ("pants", 1.0)
    assert cats.hit_vote([None, "shorts", None]) == ("shorts", 1.0) and cats.hit_vote([None]) is None
    assert cats.hit_vote([]) is None


def test_final_category_trusts_the_probe_above_the_threshold_else_the_results():
    hits = ["shorts", "shorts", "pants", "shorts", "skirt"]
    t = cats.PROBE_TRUSTED
    assert cats.final_category(("skirt", t), hits) == ("skirt", t, "probe")  # at the threshold: the probe
    assert cats.final_category(("skirt", t - 0.01), hits) == ("shorts", 0.6, "results")
    assert cats.final_category(("skirt", 0.3), hits, threshold=0.2) == ("skirt", 0.3, "probe")
    assert cats.final_category(("skirt", 0.1), [None, None]) == ("skirt", 0.1, "probe")  # no labelled results
    assert cats.final_category(None, hits) == ("shorts", 0.6, "results")
    assert cats.final_category(None, []) == (None, None, "probe")
    assert 0 < cats.PROBE_TRUSTED <= 1


def test_decision_carries_the_share_of_its_category():
    kept, _ = decide(photo(PALETTE["t-shirt"], PALETTE["pants"]))
    assert kept["bottom"].category == "pants" and kept["bottom"].share == pytest.approx(1.0)  # the only bottom label
    assert kept["top"].category == "t-shirt" and 0 < kept["top"].share <= 1
