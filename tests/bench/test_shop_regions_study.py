"""The shop-regions study's scoring (lookalike.bench.studies.shop_regions): hand-made results with
known answers, and composites built from the bundled sample catalog."""
from __future__ import annotations

from lookalike.bench.studies.shop_regions import CANVAS, composites, score_look, summarise, sweep
from lookalike.catalog import Catalog
from lookalike.search import SearchResult
from lookalike.shop.pipeline import PersonResult, RegionResult, ShopResult


def hits(*labels):
    return [SearchResult(rank=i + 1, id=f"{label}-{i}", score=1.0 - i / 10, distance=i / 10, label=label, path="",
                         metadata={}) for i, label in enumerate(labels)]


def result(*regions):
    person = PersonResult(box=[0, 0, 1, 1], score=1.0, body={}, regions=list(regions))
    return ShopResult(catalog="c", encoder="e", detector="d", image={}, people=[person])


def test_scores_count_category_hit_rate_missing_and_extra_regions():
    look = result(RegionResult("onepiece", [0, 0, 1, 1], 1.0, ["dress"], hits("dress", "dress", "skirt", "dress", "dress", "dress"),
                               category="dress", confidence=0.9, fit=0.9),
                  RegionResult("head", [0, 0, 1, 1], 1.0, ["hat"], hits("hat"), category="hat", confidence=0.8, fit=0.8))
    truth = {"onepiece": "dress", "footwear": "shoes"}
    after = score_look(look, truth, pasted={"dress-0"}, decide=True)
    # the pasted item (dress-0) is dropped: the top 5 are dress, skirt, dress, dress, dress
    assert after["slots"]["onepiece"] == {"found": 1, "category": 1, "hit5": 0.8, "predicted": "dress", "confidence": 0.9,
                                          "fit": 0.9, "hits": ["dress", "skirt", "dress", "dress", "dress"]}
    assert after["slots"]["footwear"] == {"found": 0, "category": 0, "hit5": 0.0, "predicted": None, "confidence": None,
                                          "hits": []}
    assert after["extra"] == ["head"]
    # before: a dress is what the "top" box shows; its category is the first result's label
    before = score_look(result(RegionResult("top", [0, 0, 1, 1], 1.0, None, hits("skirt", "dress"))), truth, set(), False)
    assert before["slots"]["onepiece"] == {"found": 1, "category": 0, "hit5": 0.5, "predicted": "skirt",
                                           "confidence": None, "fit": None, "hits": ["skirt", "dress"]}
    table = summarise([after, before])
    assert table["onepiece"] == {"n": 2, "found": 1.0, "category_acc": 0.5, "hit@5": 0.65}
    assert table["all"]["n"] == 4 and table["extra_regions"] == {"head": 1}


def test_composites_paste_catalog_items_with_their_truth(sample_catalog, tmp_path):
    cat = Catalog.create("sample", home=tmp_path)
    cat.index(sample_catalog / "catalog.csv", encoder="colour-hist")
    looks = composites(cat, 6, seed=1, column="label", split_column=None)
    assert [look["kind"] for look in looks] == ["two", "outer", "dress"] * 2
    for look in looks:
        assert look["image"].size == CANVAS and len(look["ids"]) == len(look["truth"])
        labels = {cat.get(i).label for i in look["ids"]}
        assert labels == set(look["truth"].values())
    assert looks[2]["truth"]["onepiece"] == "dress" and looks[1]["truth"]["outerwear"] == "outwear"
    assert all(look["truth"]["footwear"] == "shoes" for look in looks)


def test_sweep_replays_the_category_rule_per_threshold():
    """Probe-led looks (the probe's label, its probability and fit, the top results' labels): at 0 the
    probe always decides, above 1 the results' majority; in between, by the probe's share p / fit."""
    def look(truth, predicted, p, fit, hits):
        return {"truth": {"bottom": truth}, "slots": {"bottom": {"found": 1, "predicted": predicted, "confidence": p,
                                                                  "fit": fit, "hits": hits}}}
    looks = [look("shorts", "skirt", 0.2, 0.5, ["shorts", "shorts", "skirt"]),     # share 0.4: results right
             look("pants", "pants", 0.45, 0.5, ["skirt", "skirt", "skirt"]),       # share 0.9: probe right
             {"truth": {"bottom": "pants"}, "slots": {"bottom": {"found": 0}}}]    # no region: wrong
    table = sweep(looks, thresholds=(0.0, 0.5, 1.01))
    assert table["0.00"]["bottom"] == table["0.00"]["all"] == round(1 / 3, 3)
    assert table["0.50"]["bottom"] == round(2 / 3, 3)
    assert table["1.01"]["bottom"] == round(1 / 3, 3)
