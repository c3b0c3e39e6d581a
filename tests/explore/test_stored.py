"""explore.stored / Catalog.features: what a catalog can show, from file checks only."""
from lookalike.catalog import Catalog
from lookalike.explore.stored import latest_file, stored


def test_stored_results_appear_when_their_files_do(tmp_path):
    cat = Catalog.create("shop", home=tmp_path)
    assert stored(cat) == {"latent": False, "clusters": False, "map": False}
    features = cat.features()
    assert list(features) == ["goes_with", "duplicates", "latent", "clusters", "map", "shop"]
    assert features["goes_with"] and features["duplicates"] and not features["clusters"] and not features["map"]

    path = latest_file(cat, "clusters")
    assert path.parent == cat.dir / "artifacts" / "clusters"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    assert stored(cat) == {"latent": False, "clusters": True, "map": False}
    assert cat.features()["clusters"] and not cat.features()["map"]
    # another encoder's stored clusters are not this one's
    assert stored(cat, encoder="colour")["clusters"] is False
