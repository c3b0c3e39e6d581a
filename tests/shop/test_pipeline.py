"""Shop the look end to end: category mapping, attribute filter, several people, bad inputs, CLI.

A small catalog is built from the bundled sample catalog with the fast colour-hist encoder, plus a
made-up ``gender`` column (alternating rows) so the attribute filter has something to filter on.
Tests with a fake detector run everywhere; those with the MediaPipe model skip when it is absent.
"""
from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.catalog import Catalog
from lookalike.shop.pipeline import (DEFAULT_CATEGORIES, NoPersonFound, ShopError, load_config, load_photo,
                                     parse_category_option, region_categories, shop_the_look)
from lookalike.viz.shop import PAD, PHOTO_HEIGHT

from fakes import FakeDetector, outfit_photo, tile_boxes, upright_person


@pytest.fixture(scope="module")
def shop_home(tmp_path_factory, sample_catalog):
    home = tmp_path_factory.mktemp("shop-home")
    table = home / "catalog.csv"
    with open(sample_catalog / "catalog.csv") as src, open(table, "w", newline="") as dst:
        rows = list(csv.DictReader(src))
        writer = csv.DictWriter(dst, fieldnames=["id", "image", "label", "gender"])
        writer.writeheader()
        for n, row in enumerate(rows):
            writer.writerow({"id": row["id"], "image": str(sample_catalog / row["image"]), "label": row["label"],
                             "gender": "women" if n % 2 else "men"})
    cat = Catalog.create("sample", home=home)
    report = cat.index(table, encoder="colour-hist")
    assert report.failed == 0
    return home


@pytest.fixture
def sample(shop_home):
    return Catalog.open("sample", home=shop_home)


def labels_of(region):
    return {hit.label for hit in region.results}


def test_config_file_and_category_option(tmp_path):
    assert load_config()["categories"] == {}  # the synonym prior + label probe decide (shop.categories)
    flat = tmp_path / "map.json"
    flat.write_text(json.dumps({"top": ["shirt"], "footwear": "shoes"}))
    assert load_config(flat)["categories"] == {"top": ["shirt"], "footwear": ["shoes"]}
    toml = tmp_path / "shop.toml"
    toml.write_text('attributes = []\nbottom_end = "knees"\n[categories]\nbottom = ["skirt"]\n')
    config = load_config(toml)
    assert config["categories"] == {"bottom": ["skirt"]} and config["bottom_end"] == "knees"
    assert parse_category_option(["top=shirt, t-shirt", "footwear=shoes"]) == {
        "top": ["shirt", "t-shirt"], "footwear": ["shoes"]}
    # --category options replace single regions of the file's mapping, the rest stay
    config = load_config(toml, category_options=["top=shirt, t-shirt"], bottom_end="ankles")
    assert config["categories"] == {"bottom": ["skirt"], "top": ["shirt", "t-shirt"]} and config["bottom_end"] == "ankles"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for call, message in ((lambda: load_config(bad), "cannot read config"),
                          (lambda: load_config(tmp_path / "none.json"), "not found"),
                          (lambda: load_config(categories={"hat": ["hat"]}), "unknown region"),
                          (lambda: parse_category_option(["top"]), "REGION="),
                          (lambda: load_config(category_options=["hat=cap"]), "REGION=")):
        with pytest.raises(ShopError, match=message):
            call()


def test_region_categories_and_catalog_without_labels(sample, tmp_path, sample_catalog):
    mapping, notes = region_categories(sample, {"top": ["shirt", "kimono"], "bottom": ["kilt"]})
    assert mapping == {"top": ["shirt"], "bottom": None, "footwear": None}
    assert any("kimono" in n for n in notes) and any("kilt" in n and "whole catalog" in n for n in notes)
    table = tmp_path / "unlabelled.csv"
    rows = list(csv.DictReader(open(sample_catalog / "catalog.csv")))[::40]
    table.write_text("id,image\n" + "".join(f"{r['id']},{sample_catalog / r['image']}\n" for r in rows))
    bare = Catalog.create("bare", home=tmp_path / "home")
    bare.index(table, encoder="colour-hist")
    mapping, notes = region_categories(bare, DEFAULT_CATEGORIES)
    assert mapping == {"top": None, "bottom": None, "footwear": None} and "whole catalog" in notes[0]
    result = shop_the_look(bare, outfit_photo(), k=3, detector=FakeDetector([upright_person()]), attribute_filter=False)
    assert [len(r.results) for r in result.people[0].regions] == [3, 3, 3]
    # no labels: no probe; head, hands and outerwear are not looked for, the colour rule splits the outfit
    assert [r.name for r in result.people[0].regions] == ["top", "bottom", "footwear"]
    assert all(r.categories is None and r.category is None for r in result.people[0].regions)
    reasons = {s["name"]: s["reason"] for s in result.people[0].skipped}
    assert "label probe" in reasons["head"] and "colour rule" in reasons["onepiece"]
    assert any("no label probe" in n for n in result.notes)


def test_each_region_searches_only_its_categories(sample, tmp_path):
    result = shop_the_look(sample, outfit_photo(), k=5, detector=FakeDetector([upright_person()]),
                           attribute_filter=False, annotate=tmp_path / "look.png", decide=False)
    person = result.people[0]
    assert [r.name for r in person.regions] == ["top", "bottom", "footwear"] and not person.skipped
    for region in person.regions:
        assert len(region.results) == 5
        assert labels_of(region) <= set(DEFAULT_CATEGORIES[region.name]), region.name
    assert person.body["full_body"]
    # the figure: right of the photo (scaled to PHOTO_HEIGHT), one row of 5 thumbnails per region
    figure = Image.open(result.annotated)
    strip = figure.crop((round(200 * PHOTO_HEIGHT / 400) + 2 * PAD, 0, figure.width, figure.height))
    assert sorted(Counter(y0 for _, y0, _, _ in tile_boxes(strip)).values()) == [5, 5, 5]
    json.dumps(result.to_dict())  # JSON-ready
    unrestricted = shop_the_look(sample, outfit_photo(), k=20, detector=FakeDetector([upright_person()]),
                                 attribute_filter=False, restrict=False, decide=False)
    seen = set().union(*(labels_of(r) for r in unrestricted.people[0].regions))
    assert not seen <= set(DEFAULT_CATEGORIES["footwear"])  # whole catalog: other labels come back too


def test_decided_regions_search_the_probes_categories(sample):
    """decide=True with the sample's label probe (trained on first use): every kept region names the
    category the probe sees, searches only labels its region may hold, and every candidate that was
    not kept is listed with a reason."""
    result = shop_the_look(sample, outfit_photo(), k=4, detector=FakeDetector([upright_person()]),
                           attribute_filter=False)
    person = result.people[0]
    assert person.regions and any("label probe" in n for n in result.notes + ["label probe"])
    allowed = {"top": {"t-shirt", "shirt", "longsleeve"}, "bottom": {"pants", "shorts", "skirt"},
               "footwear": {"shoes"}, "outerwear": {"outwear"}, "onepiece": {"dress", "outwear"}, "head": {"hat"}}
    for region in person.regions:
        assert set(region.categories) <= allowed[region.name] and labels_of(region) <= set(region.categories)
        assert region.category in region.categories and 0 < region.confidence <= 1
        assert region.fit >= (0.0 if region.name in ("top", "bottom", "footwear") else 0.3)
        assert region.fit >= 0.3 or any("doubts" in n for n in region.notes)
    names = [r.name for r in person.regions] + [s["name"] for s in person.skipped]
    assert set(names) == {"top", "bottom", "footwear", "onepiece", "outerwear", "head", "hands"}
    assert not ({"top", "bottom"} & {r.name for r in person.regions} and "onepiece" in {r.name for r in person.regions})
    assert all(s["reason"] for s in person.skipped)


def test_custom_mapping_and_region_subset(sample):
    config = load_config(categories={"top": ["hat"], "bottom": ["skirt"], "footwear": ["shoes"]})
    result = shop_the_look(sample, outfit_photo(), k=4, regions=["top", "bottom"], config=config,
                           detector=FakeDetector([upright_person()]), attribute_filter=False, decide=False)
    regions = {r.name: r for r in result.people[0].regions}
    assert set(regions) == {"top", "bottom"}
    assert labels_of(regions["top"]) == {"hat"} and labels_of(regions["bottom"]) == {"skirt"}


def test_attribute_filter_with_and_without_probe(sample):
    pytest.importorskip("lookalike.train.probes")
    detector = FakeDetector([upright_person()])
    before = shop_the_look(sample, outfit_photo(), k=3, detector=detector)
    assert any("no probe for 'gender'" in n for n in before.people[0].notes)
    sample.train_probe(label="gender")
    after = shop_the_look(sample, outfit_photo(), k=5, detector=detector)
    (attribute,) = after.people[0].attributes
    assert attribute["column"] == "gender" and attribute["value"] in ("men", "women")
    for region in after.people[0].regions:
        assert {sample.get(hit.id).metadata["gender"] for hit in region.results} == {attribute["value"]}
    off = shop_the_look(sample, outfit_photo(), k=3, detector=detector, attribute_filter=False)
    assert off.people[0].attributes == [] and "attribute filter off" in off.people[0].notes
    other = load_config(attributes=["age"])
    notes = shop_the_look(sample, outfit_photo(), k=3, detector=detector, config=other).people[0].notes
    assert any("no 'age' column" in n for n in notes)


def test_largest_person_or_everyone(sample):
    photo = Image.new("RGB", (400, 400), "white")
    small, large = upright_person(scale=0.5, dx=250), upright_person(scale=0.95)
    result = shop_the_look(sample, photo, k=2, detector=FakeDetector([small, large]), attribute_filter=False)
    assert len(result.people) == 1 and result.people[0].box[0] < 200  # the large one, on the left
    assert any("kept the largest" in n for n in result.notes)
    everyone = shop_the_look(sample, photo, k=2, detector=FakeDetector([small, large]), attribute_filter=False,
                             all_people=True)
    assert len(everyone.people) == 2


def test_bad_inputs_get_clear_errors(sample, tmp_path):
    detector = FakeDetector([upright_person()])
    junk = tmp_path / "notes.jpg"
    junk.write_text("this is not an image")
    cases = [(tmp_path / "missing.jpg", {}, "file not found"),
             (junk, {}, "not a recognised image"),
             (b"", {}, "empty"),
             (Image.new("RGB", (40, 300)), {}, "too small"),
             (outfit_photo(), {"k": 0}, "k must be"),
             (outfit_photo(), {"regions": ["hat"]}, "regions must be"),
             (outfit_photo(), {"regions": ["head"], "decide": False}, "regions must be")]
    for image, kwargs, message in cases:
        with pytest.raises(ShopError, match=message):
            shop_the_look(sample, image, detector=detector, **kwargs)
    with pytest.raises(NoPersonFound, match="no person found"):
        shop_the_look(sample, outfit_photo(), detector=FakeDetector([]))


# -- with the real pose model ----------------------------------------------------------------
def test_real_photo_returns_only_mapped_categories(sample, people):
    result = shop_the_look(sample, people / "businessman-suit.jpg", k=5, attribute_filter=False, decide=False)
    person = result.people[0]
    assert person.body["full_body"] and [r.name for r in person.regions] == ["top", "bottom", "footwear"]
    for region in person.regions:
        assert region.results and labels_of(region) <= set(DEFAULT_CATEGORIES[region.name])


def test_real_upper_body_photo_says_what_was_skipped(sample, people):
    person = shop_the_look(sample, people / "boy-cap-upper-body.jpg", k=3, attribute_filter=False,
                           decide=False).people[0]
    assert [r.name for r in person.regions] == ["top"]
    assert {s["name"] for s in person.skipped} == {"bottom", "footwear"}
    decided = shop_the_look(sample, people / "boy-cap-upper-body.jpg", k=3, attribute_filter=False).people[0]
    reasons = {s["name"]: s["reason"] for s in decided.skipped}
    assert reasons["bottom"] == "hips not visible" and reasons["onepiece"] == "hips not visible"
    assert any("not a full-body photo" in n for n in person.notes)
    blank = Image.new("RGB", (320, 480), (250, 250, 250))
    with pytest.raises(NoPersonFound):
        shop_the_look(sample, blank)


def test_cli(shop_home, people, tmp_path):
    from lookalike.cli import app

    runner = CliRunner()
    png = tmp_path / "out.png"
    args = ["shop", "--catalog", "sample", "--home", str(shop_home), "-k", "2", "--no-attribute-filter", "--fixed-boxes"]
    ok = runner.invoke(app, args + ["--image", str(people / "skier.jpg"), "--json", "--out", str(png)])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert [r["name"] for r in data["people"][0]["regions"]] == ["top", "bottom", "footwear"]
    photo, figure = load_photo(people / "skier.jpg"), Image.open(png)   # the figure: a row of 2 per region
    strip = figure.crop((round(photo.width * PHOTO_HEIGHT / photo.height) + 2 * PAD, 0, figure.width, figure.height))
    assert sorted(Counter(y0 for _, y0, _, _ in tile_boxes(strip)).values()) == [2, 2, 2]
    text = runner.invoke(app, args + ["--image", str(people / "boy-cap-upper-body.jpg"), "--category", "top=shirt"])
    assert text.exit_code == 0 and "bottom skipped" in text.output
    for extra, message in ((["--image", str(tmp_path / "nope.jpg")], "file not found"),
                           (["--image", str(people / "skier.jpg"), "--regions", "hats"], "--regions"),
                           (["--image", str(people / "skier.jpg"), "--regions", "head"], "--regions"),  # fixed boxes
                           (["--image", str(people / "skier.jpg"), "--category", "hat=x"], "REGION=")):
        bad = runner.invoke(app, args + extra)
        assert bad.exit_code == 1 and message in bad.output and "Traceback" not in bad.output


def test_weak_probe_category_gives_way_to_the_results_labels(sample):
    """probe_trusted above 1: every region's category is its top results' majority label (with a note
    when it differs from the probe's); at 0 the probe's category stands. ``exclude`` drops ids."""
    photo, person = outfit_photo(), FakeDetector([upright_person()])
    probe_led = shop_the_look(sample, photo, k=5, detector=person, attribute_filter=False,
                              config=load_config(probe_trusted=0.0)).people[0]
    by_hits = shop_the_look(sample, photo, k=5, detector=person, attribute_filter=False,
                            config=load_config(probe_trusted=1.01)).people[0]
    for led, voted in zip(probe_led.regions, by_hits.regions):
        assert led.name == voted.name and [h.id for h in led.results] == [h.id for h in voted.results]
        top = [h.label for h in voted.results]
        assert voted.category == max(dict.fromkeys(top), key=lambda x: (top.count(x), -top.index(x)))
        changed = voted.category != led.category
        assert voted.confidence == (round(top.count(voted.category) / len(top), 3) if changed else led.confidence)
        assert changed == any("category from the top" in n for n in voted.notes)
        assert not any("category from the top" in n for n in led.notes)
    first = probe_led.regions[0]
    dropped = {h.id for h in first.results[:2]}
    again = shop_the_look(sample, photo, k=5, detector=person, attribute_filter=False, exclude=dropped).people[0]
    assert not dropped & {h.id for h in again.regions[0].results} and len(again.regions[0].results) == 5
