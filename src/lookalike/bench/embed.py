"""Indexing throughput: the ingest pipeline against a naive one-image-at-a-time loop, same images.

The naive loop is what a first script does: open each file fully (no JPEG draft), preprocess, run
the model on a batch of one, in one thread. The pipeline is ``Catalog.index`` as users run it
(hashing, parallel decode with JPEG draft, batched inference overlapping decode, SQLite commits),
into a throw-away catalog. CPU use is process CPU time / wall time (2.0 = both cores busy).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lookalike.catalog import Catalog
from lookalike.data.images import open_image
from lookalike.data.sources import read_source
from lookalike.encoders import get_encoder
from lookalike.encoders.spec import EncoderSpec


@dataclass
class EmbedRow:
    method: str
    images: int
    seconds: float
    images_per_s: float
    cpu_cores: float          # average cores busy
    speedup: float = 1.0      # images/s relative to the naive loop

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _measure(method: str, images: int, run) -> EmbedRow:
    wall, cpu = time.perf_counter(), _cpu()
    run()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return EmbedRow(method, images, wall, images / wall if wall > 0 else 0.0, cpu / wall if wall > 0 else 0.0)


def naive_loop(paths: list[Path], encoder) -> np.ndarray:
    """One image at a time: full decode, preprocess, a batch of one through the model."""
    out = []
    for path in paths:
        image = open_image(path)
        out.append(encoder.encode_batch(encoder.preprocess(image)[None])[0])
    return np.stack(out)


def subset_csv(source: str | Path, limit: int, directory: Path) -> tuple[Path, list[Path]]:
    """The first ``limit`` readable rows of ``source`` as a CSV (so both sides embed the same images)."""
    rows = read_source(source).rows
    rows = [r for r in rows if r.path.exists()][:limit]
    csv_path = directory / "subset.csv"
    lines = ["id,image,label"] + [f"{r.id},{r.path},{r.label or ''}" for r in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path, [r.path for r in rows]


def torch_spec(encoder: str) -> str:
    """The same encoder forced onto eager torch (effnet-lite0 otherwise picks onnxruntime)."""
    spec = EncoderSpec.parse(encoder)
    if spec.kind in ("effnet-lite0", "effnet-lite0-colour") and "runtime" not in spec.options:
        return str(spec.with_options(runtime="torch"))
    return encoder


def run_embed_bench(source: str | Path, encoder: str = "effnet-lite0", limit: int = 300, batch_size: int = 32,
                    workers: int | None = None, on_row=None) -> list[EmbedRow]:
    """On the same ``limit`` images of ``source``: the naive torch loop, then the pipeline on torch,
    then the pipeline with the encoder's default runtime (onnxruntime for effnet-lite0 when installed)."""
    rows: list[EmbedRow] = []
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        csv_path, paths = subset_csv(source, limit, Path(tmp))
        if not paths:
            raise ValueError(f"no readable images in {source}")
        for path in paths:             # same page cache for both sides: read every file once first
            path.read_bytes()
        naive = get_encoder(torch_spec(encoder))
        naive.encode_batch(naive.preprocess(open_image(paths[0]))[None])    # model loaded and warm
        rows.append(_measure("naive loop: torch, 1 image at a time", len(paths), lambda: naive_loop(paths, naive)))
        on_row and on_row(rows[-1])
        specs = [(torch_spec(encoder), "torch")] + ([(encoder, "default runtime")] if torch_spec(encoder) != encoder else [])
        for number, (spec, what) in enumerate(specs):
            cat = Catalog.create(f"bench{number}", home=Path(tmp) / "home")
            enc = cat.encoder(spec)
            enc.encode_batch(enc.preprocess(open_image(paths[0]))[None])    # exported / loaded and warm
            reports = []
            rows.append(_measure(f"lookalike index: {what} ({_runtime(enc)}), batch {batch_size}", len(paths),
                                 lambda: reports.append(cat.index(csv_path, spec, batch_size=batch_size,
                                                                  workers=workers))))
            if reports and reports[0].failed:
                raise RuntimeError(f"{reports[0].failed} images failed in the pipeline run")
            on_row and on_row(rows[-1])
    for row in rows:
        row.speedup = row.images_per_s / rows[0].images_per_s if rows[0].images_per_s else float("nan")
    return rows


def _runtime(encoder) -> str:
    runner = getattr(encoder, "runner", None)
    return str(getattr(runner, "runtime", None) or getattr(runner, "variant", None) or "torch")
