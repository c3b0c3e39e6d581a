"""Catalog snapshots: export -> import round trip, and every way a snapshot is refused without
touching the home (corrupt, truncated, newer format, other encoder, existing catalog, unsafe members)."""
from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lookalike.catalog import Catalog, import_catalog, list_catalogs
from lookalike.data.snapshot import (CatalogExists, IncompatibleSnapshot, SnapshotError, read_manifest,
                                     verify_snapshot)

from fakes import indexed_catalog


@pytest.fixture
def snapshot(shapes_catalog, tmp_path) -> Path:
    shapes_catalog.search(item="circle-red/circle-red-0", k=3)   # builds and saves the index
    return shapes_catalog.export(tmp_path / "shapes.tar").path


def _home_entries(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def _rewrite(src: Path, dst: Path, *, manifest=None, member=None, extra=()) -> Path:
    """Copy snapshot ``src`` to ``dst`` changing its manifest (``manifest(doc) -> doc``), one member's
    bytes (``member(name, data) -> data``) and appending ``extra`` (TarInfo, bytes) members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin:
            data = tin.extractfile(info).read() if info.isfile() else None
            if info.name == "manifest.json" and manifest:
                data = json.dumps(manifest(json.loads(data))).encode()
            elif member and data is not None:
                data = member(info.name, data)
            if data is not None:
                info.size = len(data)
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
        for info, data in extra:
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def test_round_trip_with_images_moves_paths_and_keeps_results(shapes_catalog, snapshot, tmp_path):
    manifest = read_manifest(snapshot)
    assert manifest["format_version"] == 1 and manifest["items"] == len(shapes_catalog) == 54
    assert manifest["encoders"][0]["name"] == "colour-hist" and manifest["encoders"][0]["fingerprint"]
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert any(name.startswith("catalog/index/") for name in manifest["files"])

    other = tmp_path / "other-home"
    info = import_catalog(snapshot, other)
    copy = Catalog.open("shapes", home=other)
    assert info.dir == copy.dir and len(copy) == 54
    for item in copy.items():
        assert Path(item.path).is_file() and Path(item.path).parent == copy.dir / "images"
    ids, matrix = shapes_catalog.vectors()
    ids2, matrix2 = copy.vectors()
    assert ids == ids2 and np.array_equal(np.asarray(matrix), np.asarray(matrix2))
    query = "circle-red/circle-red-0"
    assert [h.id for h in copy.search(item=query, k=5)] == [h.id for h in shapes_catalog.search(item=query, k=5)]
    report = copy.check()
    assert report.ok, report.to_dict()
    assert report.index_folders == 1 and not any(p.code == "stale-index" for p in report.problems)  # served without a rebuild
    assert copy.thumbnail(query, 32).is_file()
    assert not list((other / "catalogs").glob(".*"))   # no staging left behind


def test_no_images_keeps_paths(shapes_catalog, tmp_path):
    snap = shapes_catalog.export(tmp_path / "shapes.tgz", images=False).path
    assert not any(name.startswith("images/") for name in read_manifest(snap)["files"])
    import_catalog(snap, tmp_path / "h2", name="copy")
    copy = Catalog.open("copy", home=tmp_path / "h2")
    assert {i.path for i in copy.items()} == {i.path for i in shapes_catalog.items()}


def test_existing_catalog_needs_force(shapes_catalog, snapshot, home):
    before = _home_entries(home)
    with pytest.raises(CatalogExists, match="--force"):
        import_catalog(snapshot, home)
    assert _home_entries(home) == before
    shapes_catalog.remove(["circle-red/circle-red-0"])
    import_catalog(snapshot, home, force=True)
    assert len(Catalog.open("shapes", home=home)) == 54
    assert list_catalogs(home) == ["shapes"]


def test_corrupt_member_is_refused_before_writing(snapshot, tmp_path):
    def flip(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name.startswith("images/") else data

    bad = _rewrite(snapshot, tmp_path / "bad.tar", member=flip)
    target = tmp_path / "target"
    with pytest.raises(SnapshotError, match="corrupt.*checksum"):
        import_catalog(bad, target)
    assert not target.exists()


def test_truncated_snapshot_is_refused(snapshot, tmp_path):
    data = snapshot.read_bytes()
    for cut in (len(data) // 2, 700):
        short = tmp_path / f"short-{cut}.tar"
        short.write_bytes(data[:cut])
        with pytest.raises(SnapshotError, match="truncated|damaged|not a readable"):
            import_catalog(short, tmp_path / "target")
        assert not (tmp_path / "target" / "catalogs" / "shapes").exists()
    # cut exactly after a whole member: every file present is intact, but some are missing
    with tarfile.open(snapshot) as tin, tarfile.open(tmp_path / "head.tar", "w") as tout:
        for position, info in enumerate(tin):
            if position > 3:
                break
            tout.addfile(info, tin.extractfile(info))
    with pytest.raises(SnapshotError, match="truncated"):
        verify_snapshot(tmp_path / "head.tar")


def test_newer_format_and_other_encoder_are_incompatible(snapshot, tmp_path):
    newer = _rewrite(snapshot, tmp_path / "newer.tar", manifest=lambda m: {**m, "format_version": 99})
    with pytest.raises(IncompatibleSnapshot, match="upgrade lookalike"):
        import_catalog(newer, tmp_path / "h")

    def other_weights(m):
        return {**m, "encoders": [{**e, "fingerprint": "colour-hist/v0 other"} for e in m["encoders"]]}

    other = _rewrite(snapshot, tmp_path / "other.tar", manifest=other_weights)
    with pytest.raises(IncompatibleSnapshot, match="fingerprint"):
        import_catalog(other, tmp_path / "h")
    unknown = _rewrite(snapshot, tmp_path / "unknown.tar",
                       manifest=lambda m: {**m, "encoders": [{**m["encoders"][0], "name": "no-such-kind"}]})
    with pytest.raises(IncompatibleSnapshot, match="cannot be loaded here"):
        import_catalog(unknown, tmp_path / "h")
    assert not (tmp_path / "h" / "catalogs" / "shapes").exists()
    assert not list((tmp_path / "h" / "catalogs").glob(".*"))
    import_catalog(other, tmp_path / "h", check_encoders=False)   # the user's call
    with pytest.raises(SnapshotError, match="not a lookalike snapshot"):
        import_catalog(_rewrite(snapshot, tmp_path / "x.tar", manifest=lambda m: {**m, "format": "zip"}), tmp_path / "h")


@pytest.mark.parametrize("attack", ["traversal", "absolute", "symlink", "unlisted", "device"])
def test_unsafe_members_never_leave_the_target(snapshot, tmp_path, attack):
    payload = b"owned"
    name = {"traversal": "catalog/../../evil.txt", "absolute": "/tmp/evil.txt", "symlink": "catalog/link",
            "unlisted": "catalog/extra.txt", "device": "catalog/dev"}[attack]
    info = tarfile.TarInfo(name)
    data = payload
    if attack == "symlink":
        info.type, info.linkname, data = tarfile.SYMTYPE, "/etc/passwd", None
    elif attack == "device":
        info.type, data = tarfile.CHRTYPE, None
        info.devmajor, info.devminor = 1, 3
    else:
        info.size = len(payload)
    listed = {"size": len(payload), "sha256": __import__("hashlib").sha256(payload).hexdigest()}
    manifest = None if attack == "unlisted" else (lambda m: {**m, "files": {**m["files"], name: listed}})
    bad = _rewrite(snapshot, tmp_path / "bad.tar", manifest=manifest, extra=[(info, data)])
    target = tmp_path / "deep" / "home"
    with pytest.raises(SnapshotError):
        import_catalog(bad, target)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not (target / "catalogs" / "shapes").exists()


def test_models_trained_on_the_catalog_travel(shapes_catalog, tmp_path, home):
    model = home / "models" / "vae" / "shapes-vae"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"kind": "vae", "catalog": "shapes"}))
    (model / "weights.pt").write_bytes(b"\0" * 100)
    unrelated = home / "models" / "vae" / "other"
    unrelated.mkdir()
    (unrelated / "config.json").write_text(json.dumps({"catalog": "other"}))
    assert set(shapes_catalog.snapshot_models()) == {"vae/shapes-vae"}
    snap = shapes_catalog.export(tmp_path / "s.tar").path
    other = tmp_path / "h2"
    info = import_catalog(snap, other)
    assert info.models == ["vae/shapes-vae"]
    assert (other / "models" / "vae" / "shapes-vae" / "weights.pt").read_bytes() == b"\0" * 100
    assert not (other / "models" / "vae" / "other").exists()
    # a model of the same name with other weights is kept unless --force
    (other / "models" / "vae" / "shapes-vae" / "weights.pt").write_bytes(b"x")
    with pytest.raises(CatalogExists, match="model vae/shapes-vae"):
        import_catalog(snap, other, name="again")
    import_catalog(snap, other, name="again", force=True)
    assert (other / "models" / "vae" / "shapes-vae" / "weights.pt").read_bytes() == b"\0" * 100


def test_export_while_writing_is_consistent(home, shapes_folder, tmp_path):
    cat = indexed_catalog(home, shapes_folder)
    db = sqlite3.connect(cat.dir / "catalog.sqlite")   # another writer holding a read transaction open
    db.execute("BEGIN")
    db.execute("SELECT COUNT(*) FROM items").fetchone()
    snap = cat.export(tmp_path / "s.tar").path
    db.rollback()
    db.close()
    assert verify_snapshot(snap)["items"] == 54


def test_copy_to_is_consistent_and_serves_without_rebuild(shapes_catalog, tmp_path):
    shapes_catalog.search(item="circle-red/circle-red-0", k=3)
    shapes_catalog.remove(["circle-red/circle-red-1"])   # sits in the write-ahead log until a checkpoint
    copy = shapes_catalog.copy_to(tmp_path / "scratch")
    assert len(copy) == 53 and copy.get("circle-red/circle-red-2").path == shapes_catalog.get("circle-red/circle-red-2").path
    assert [h.id for h in copy.search(item="circle-red/circle-red-0", k=5)] == \
        [h.id for h in shapes_catalog.search(item="circle-red/circle-red-0", k=5)]
    assert copy.check().ok
    with pytest.raises(FileExistsError):
        shapes_catalog.copy_to(tmp_path / "scratch")


def test_item_removed_between_matrix_and_items_is_dropped(shapes_catalog, monkeypatch):
    """A write between reading the vector matrix and its items (the soak found it: upload search
    answered 404 "935" while the API deleted items) drops that row instead of raising KeyError."""
    from lookalike.data.store import Store

    real = Store.matrix
    victim = "circle-red/circle-red-1"

    def matrix_then_delete(self, encoder):
        out = real(self, encoder)
        db = sqlite3.connect(shapes_catalog.dir / "catalog.sqlite")
        with db:
            db.execute("DELETE FROM items WHERE id = ?", (victim,))
        db.close()
        return out

    monkeypatch.setattr(Store, "matrix", matrix_then_delete)
    ids, matrix = shapes_catalog.vectors()
    assert victim not in ids and len(ids) == len(matrix) == 53
    assert shapes_catalog.match_threshold(refresh=True) is not None
