"""The default-decision study (bench.studies.label_free) end to end on a slice of clothing-small:
every candidate row comes out, and its plain default row equals `Catalog.evaluate`."""
import csv
import json
import sys

import pytest

from lookalike import Catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_label_free_study_on_a_slice(clothing_small, tmp_path, monkeypatch):
    from lookalike.bench.studies import label_free

    with open(clothing_small / "catalog.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("shoes", "hat", "pants")]
    rows = rows[:16] + [r for r in rows if r["label"] == "hat"][:12] + [r for r in rows if r["label"] == "pants"][:12]
    source = tmp_path / "slice.csv"
    with open(source, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "label"])
        writer.writeheader()
        for r in {r["id"]: r for r in rows}.values():
            writer.writerow({"id": r["id"], "image": str(clothing_small / r["image"]), "label": r["label"]})
    home = tmp_path / "home"
    cat = Catalog.create("slice", home=home)
    cat.index(source)
    cat.index(source, "effnet-lite0:crop=fg")
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["label_free", "--catalog", "slice", "--home", str(home), "--out", str(out),
                                      "--cache", str(tmp_path / "cache"), "--weights", "0,0.1",
                                      "--expansions", "none;qe=2,dba=3;qe=2,window=3,colour=0.3", "--crop-expansions", "none",
                                      "--whole", "0.1|qe=2,dba=3"])
    label_free.main()
    found = json.loads(out.read_text())["rows"]
    names = [(r["encoder"], r["re-ranking"]) for r in found]
    default = cat.default_encoder  # the weights come from the catalog's default encoder (config.DEFAULT_ENCODER)
    assert default == "effnet-lite0-colour:0.1"
    assert ("effnet-lite0", "none") in names and (default, "qe=2,dba=3,alpha=3") in names
    assert ("effnet-lite0:crop=fg", "none") in names and ("effnet-lite0-colour:0.1,crop=fg", "none") in names
    assert (default, "qe=2,dba=3,alpha=3 (colour part re-ranked too)") in names
    # the colour window only on rows with a colour part
    assert (default, "qe=2,alpha=3,window=3,colour=0.3") in names
    assert not any("window" in r and e == "effnet-lite0" for e, r in names)
    for r in found:
        assert 0 <= r["joint P@1 (centre)"] <= r["P@1"] <= 1 and 0 <= r["mAP@10"] <= 1
    plain = next(r for r in found if (r["encoder"], r["re-ranking"]) == (default, "none"))
    assert plain["mAP@10"] == pytest.approx(cat.evaluate(ks=(1, 10), expansion="none").overall["mAP@10"], abs=1e-5)
    reranked = next(r for r in found if (r["encoder"], r["re-ranking"]) == (default, "qe=2,dba=3,alpha=3"))
    assert reranked["mAP@10"] == pytest.approx(
        cat.evaluate(ks=(1, 10), expansion="qe=2,dba=3").overall["mAP@10"], abs=1e-5)
    windowed = next(r for r in found if (r["encoder"], r["re-ranking"]) == (default, "qe=2,alpha=3,window=3,colour=0.3"))
    assert windowed["mAP@10"] == pytest.approx(
        cat.evaluate(ks=(1, 10), expansion="qe=2,window=3,colour=0.3").overall["mAP@10"], abs=1e-5)
