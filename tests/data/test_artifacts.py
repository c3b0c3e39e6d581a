"""data/artifacts: atomic writes leave the old file on failure; caches hit, miss and invalidate."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lookalike.data import artifacts
from lookalike.data.artifacts import (KeyedCache, atomic_file, atomic_path, digest, encoder_key, read_cache,
                                      save_image, save_npy, save_npz, write_cache, write_json, write_text)


def test_writers_round_trip_and_create_the_folder(tmp_path):
    write_text(tmp_path / "a" / "t.txt", "héllo\r\n")
    assert (tmp_path / "a" / "t.txt").read_bytes() == "héllo\r\n".encode()   # newlines as given
    write_json(tmp_path / "d.json", {"x": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "d.json").read_text()) == {"x": [1, 2]}
    save_npy(tmp_path / "m.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy", mmap_mode="r"), np.arange(6).reshape(2, 3))
    save_npz(tmp_path / "z.npz", a=np.ones(2), names=np.array(["x", "y"]))
    with np.load(tmp_path / "z.npz", allow_pickle=False) as z:
        assert z["names"].tolist() == ["x", "y"] and z["a"].sum() == 2
    save_image(tmp_path / "i.jpg", Image.new("RGB", (8, 4), (255, 0, 0)), quality=90)
    with Image.open(tmp_path / "i.jpg") as im:
        assert im.format == "JPEG" and im.size == (8, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d.json", "i.jpg", "m.npy", "z.npz"]   # no temporaries


@pytest.mark.parametrize("write", [lambda p: write_text(p, "new"), lambda p: save_npy(p, np.zeros(3)),
                                   lambda p: write_json(p, {"new": 1})])
def test_a_crash_before_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, write):
    target = tmp_path / "doc.txt"
    target.write_text("old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", crash)   # the new content is written and synced, then this
    with pytest.raises(OSError, match="disk full"):
        write(target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["doc.txt"]


def test_refused_content_leaves_the_old_file(tmp_path):
    target = tmp_path / "z.npz"
    save_npz(target, a=np.ones(2))
    with pytest.raises(TypeError, match="objects"):
        save_npz(target, a=np.ones(2), bad=np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="format"):
        save_image(tmp_path / "x.unknownext", Image.new("RGB", (2, 2)))
    with np.load(target) as z:
        assert z.files == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["z.npz"]


def test_an_exception_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as f:
            f.write("half a fi")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.csv"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_file(target, "a"):
            pass


def test_atomic_path_names_a_hidden_temporary_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "index.faiss") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".index.faiss.") and tmp.suffix == ".tmp"
        assert not list(tmp_path.glob("*.faiss"))   # globs for the real files never see it
        tmp.write_bytes(b"data")
    assert (tmp_path / "index.faiss").read_bytes() == b"data" and len(list(tmp_path.iterdir())) == 1


def test_digest_changes_with_any_part_and_the_order():
    base = digest(64, ["a\t1", "b\t2"])
    assert base == digest(64, iter(["a\t1", "b\t2"])) and len(base) == 16
    assert len({base, digest(32, ["a\t1", "b\t2"]), digest(64, ["b\t2", "a\t1"]), digest(64, ["a\t1"]),
                digest(64, ["a\t1", "b\t2"], b"x")}) == 5
    assert digest("ab", "c") != digest("a", "bc")


def test_stamped_cache_hits_misses_and_invalidates(tmp_path):
    path = tmp_path / "cache" / "pixels.npz"
    assert read_cache(path, "s1") is None                                # miss: nothing stored
    write_cache(path, "s1", {"pixels": np.full((2, 3), 7, np.uint8)}, {"ids": ["a", "b"], "labels": [None, "x"]})
    hit = read_cache(path, "s1")
    assert hit.meta == {"ids": ["a", "b"], "labels": [None, "x"]} and hit.arrays["pixels"].dtype == np.uint8
    assert set(hit.arrays) == {"pixels"}
    assert read_cache(path, "s2") is None                                # the inputs changed: a miss
    write_cache(path, "s2", {"pixels": np.zeros((1, 3), np.uint8)})
    assert read_cache(path, "s1") is None and read_cache(path, "s2").meta == {}
    path.write_bytes(b"truncated")                                       # unreadable: a miss, never an error
    assert read_cache(path, "s2") is None


def test_keyed_cache_computes_only_new_keys_and_drops_rows_of_another_stamp(tmp_path):
    path = tmp_path / "colour.npz"
    cache = KeyedCache(path, ("descriptor", "dominant"), stamp="v1")
    assert cache.missing(["h1", "h2", "h1"]) == ["h1", "h2"]
    cache["h1"] = (np.ones(4, np.float32), np.zeros(3, np.float32))
    cache["h2"] = (np.full(4, 2, np.float32), np.ones(3, np.float32))
    cache.save()
    again = KeyedCache(path, ("descriptor", "dominant"), stamp="v1")
    assert len(again) == 2 and again.missing(["h1", "h3"]) == ["h3"]
    descriptor, dominant = again["h2"]
    assert descriptor.tolist() == [2, 2, 2, 2] and dominant.dtype == np.float32
    before = path.stat().st_mtime_ns
    again.save()                                                         # nothing new: nothing written
    assert path.stat().st_mtime_ns == before
    assert len(KeyedCache(path, ("descriptor", "dominant"), stamp="v2")) == 0   # the method changed
    single = KeyedCache(None, ("codes",))
    single["k"] = np.arange(8, dtype=np.uint8)
    assert single["k"].tolist() == list(range(8)) and single.get("nope") is None
    with pytest.raises(ValueError, match="2 arrays"):
        cache["h3"] = (np.ones(4),)


def test_encoder_key_is_a_safe_file_name():
    assert encoder_key("vae:my/model") == "vae--my_model"
    assert encoder_key("metric:x@onnx-int8,runtime=onnx") == "metric--x_onnx-int8_runtime_onnx"
