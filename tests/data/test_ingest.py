"""The ingest pipeline on its own: any encoder with the IngestEncoder shape, any executor, same store writes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.data.ingest import Batch, ThreadExecutor, ingest, load_row
from lookalike.data.sources import read_source
from lookalike.data.store import Store


class MeanColour:
    """The smallest IngestEncoder: the mean RGB of an 8x8 thumbnail (no lookalike.encoders involved)."""
    name, dim, metric, image_size = "mean-colour", 3, "l2", 8

    def __init__(self, version: str = "v1"):
        self.version = version
        self.batches: list[int] = []

    def fingerprint(self) -> str:
        return self.version

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((8, 8)), np.float32) / 255

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        return batch.mean(axis=(1, 2))


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    for label, rgb in {"red": (250, 0, 0), "blue": (0, 0, 250)}.items():
        (root / label).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 20), rgb).save(root / label / f"{i}.png")
    (root / "red" / "broken.png").write_bytes(b"not a png")
    return root


def test_pipeline_embeds_skips_unchanged_and_reembeds_on_a_new_fingerprint(tmp_path, source):
    store = Store(tmp_path / "cat")
    rows = read_source(source).rows
    encoder = MeanColour()
    progress = []
    report = ingest(store, rows, encoder, batch_size=3, executor=ThreadExecutor(workers=2), on_progress=progress.append)
    assert (report.added, report.failed, [e.reason for e in report.errors]) == (10, 1, ["not_an_image"])
    assert sum(progress) == len(rows) == 11
    assert sorted(encoder.batches) == [1, 3, 3, 3]                   # batches of batch_size, then the rest
    rowids, matrix = store.matrix("mean-colour")
    labels = [store.get_by_rowids(rowids)[int(r)].label for r in rowids]
    np.testing.assert_allclose(matrix[labels.index("red")], [250 / 255, 0, 0], atol=1e-6)
    assert store.encoder_info("mean-colour")["metric"] == "l2"

    again = ingest(store, rows, MeanColour())
    assert (again.added, again.updated, again.unchanged) == (0, 0, 10)
    changed = ingest(store, rows, MeanColour("v2"))
    assert (changed.added, changed.updated, changed.unchanged) == (0, 10, 0)


def test_any_executor_drives_the_same_store_writes(tmp_path, source):
    """The executor only has to return an iterator over every row once, with the vectors of its "embed" rows."""
    rows = read_source(source).rows
    encoder = MeanColour()
    seen = []

    def one_at_a_time(rows, encoder, known, batch_size):
        batches = []
        for row in rows:
            loaded = load_row(row, encoder, known.get(row.id))
            seen.append(row.id)
            embed = [loaded.array] if loaded.status == "embed" else []
            batches.append(Batch([loaded], encoder.encode_batch(np.stack(embed)) if embed else np.zeros((0, 3))))
        return iter(batches)                                         # a plain iterator: nothing to close

    report = ingest(Store(tmp_path / "a"), rows, encoder, executor=one_at_a_time)
    threads = ingest(Store(tmp_path / "b"), rows, MeanColour(), executor=ThreadExecutor())
    assert seen == [r.id for r in rows]
    assert (report.added, report.failed) == (threads.added, threads.failed) == (10, 1)
    np.testing.assert_allclose(Store(tmp_path / "a").matrix("mean-colour")[1], Store(tmp_path / "b").matrix("mean-colour")[1])


def test_catalog_rejects_an_unknown_executor(home, source):
    from lookalike import Catalog

    with pytest.raises(ValueError, match="threads, ray"):
        Catalog.create("x", home=home).index(source, "colour-hist", executor="dask")
