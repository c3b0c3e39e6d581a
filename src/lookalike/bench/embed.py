"""Indexing throughput (``lookalike bench embed``): the default encoder against its colour-blind
sibling, fp32 and int8, and optionally the same rows measured with another checkout of lookalike
(the code before a change) and a naive one-image-at-a-time loop — all on the same images, one run.

Every pipeline row is ``Catalog.index`` as users run it (hashing, threaded decode with JPEG draft,
preprocessing, batched inference in its own thread, SQLite commits) into a throw-away catalog.
**cores busy** is process CPU time / wall time / CPU count (1.0 = every core busy the whole run);
**CPU ms per image** is process CPU time / images, the figure other processes on a shared box
distort least (with every core busy, images/s ≈ 1000 × CPU count / CPU ms per image).
The int8 rows use a model calibrated on the first 100 of the images by ``index --int8 check`` in a
side catalog (untimed), so they measure the runtime a large catalog gets when int8 is chosen.
``baseline_src`` (a ``src`` folder of another checkout, e.g. ``git worktree add /tmp/base main~5``)
runs the colour-blind and default fp32 rows with that code in a subprocess, between ours.

**Single-image query encode** (``query_images`` > 0): what an upload search pays to embed its photo,
on one thread (``$LOOKALIKE_THREADS=1``: one onnxruntime / torch / BLAS thread, as each worker of a
server that runs one request per core): the JPEG bytes in memory -> ``open_image`` (draft size) ->
``preprocess`` -> ``encode_batch`` of one, per image, in a fresh subprocess. Every encoder (colour-blind
and default, fp32 and int8) embeds each image in turn, so a load spike of the shared box hits them
alike; p50 / p90 of the total and the p50 of each stage are reported (:class:`QueryRow`).
``baseline_src`` adds the fp32 pair run the same way by the other checkout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lookalike.catalog import Catalog
from lookalike.config import DEFAULT_ENCODER
from lookalike.data.images import open_image
from lookalike.data.sources import read_source
from lookalike.encoders import get_encoder
from lookalike.encoders.spec import EncoderSpec

CALIBRATION_IMAGES = 100   # the side catalog whose `index --int8 check` calibrates the int8 rows' model


@dataclass
class EmbedRow:
    method: str
    images: int
    seconds: float
    images_per_s: float
    cores_busy: float            # process CPU seconds / wall seconds / CPU count
    vs_colour_blind: float = 1.0  # images/s relative to the colour-blind row of the same runtime and code
    speedup: float = 1.0         # images/s relative to the first row
    cpu_ms_per_image: float = 0.0  # process CPU per image: what a busy shared box distorts least

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class QueryRow:
    """Single-image encode latency of one encoder on one thread, in milliseconds per image."""
    method: str
    images: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    decode_ms: float      # p50 of open_image (bytes -> RGB, JPEG draft)
    preprocess_ms: float  # p50 of encoder.preprocess (resize, normalise; the colour descriptor)
    model_ms: float       # p50 of encoder.encode_batch of one image (the network; colour fusion)
    cpu_ms: float = 0.0   # p50 CPU time of the thread per image: what a busy shared box distorts least
    vs_colour_blind: float = 1.0   # p50 relative to the colour-blind row of the same runtime and code

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class EmbedBench:
    """What :func:`run_embed_bench` measured: pipeline throughput ``rows`` and single-image ``query`` rows."""
    rows: list[EmbedRow]
    query: list[QueryRow]

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows], "query": [r.to_dict() for r in self.query]}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _row(method: str, images: int, wall: float, cpu: float) -> EmbedRow:
    cores = os.cpu_count() or 1
    return EmbedRow(method, images, wall, images / wall if wall > 0 else 0.0, cpu / wall / cores if wall > 0 else 0.0,
                    cpu_ms_per_image=1000 * cpu / images if images else 0.0)


def _measure(method: str, images: int, run) -> EmbedRow:
    wall, cpu = time.perf_counter(), _cpu()
    run()
    return _row(method, images, time.perf_counter() - wall, _cpu() - cpu)


def naive_loop(paths: list[Path], encoder) -> np.ndarray:
    """One image at a time: full decode, preprocess, a batch of one through the model."""
    out = []
    for path in paths:
        image = open_image(path)
        out.append(encoder.encode_batch(encoder.preprocess(image)[None])[0])
    return np.stack(out)


def subset_csv(source: str | Path, limit: int, directory: Path, name: str = "subset.csv") -> tuple[Path, list[Path]]:
    """The first ``limit`` readable rows of ``source`` as a CSV (so every row embeds the same images)."""
    rows = read_source(source).rows
    rows = [r for r in rows if r.path.exists()][:limit]
    csv_path = directory / name
    lines = ["id,image,label"] + [f"{r.id},{r.path},{r.label or ''}" for r in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path, [r.path for r in rows]


def torch_spec(encoder: str) -> str:
    """The same encoder forced onto eager torch (effnet-lite0 otherwise picks onnxruntime)."""
    spec = EncoderSpec.parse(encoder)
    if spec.kind in ("effnet-lite0", "effnet-lite0-colour") and "runtime" not in spec.options:
        return str(spec.with_options(runtime="torch"))
    return encoder


def colour_blind(encoder: str) -> str | None:
    """The colour-blind sibling of a colour-fused EfficientNet-Lite spec (``effnet-lite0-colour:W`` ->
    ``effnet-lite0``, ``effnet-lite2,colour=W`` -> ``effnet-lite2``), else None."""
    spec = EncoderSpec.parse(encoder)
    if spec.kind == "effnet-lite0-colour":
        return "effnet-lite0"
    if spec.kind in ("effnet-lite0", "effnet-lite1", "effnet-lite2") and ("colour" in spec.options or "color" in spec.options):
        options = {k: v for k, v in spec.options.items() if k not in ("colour", "color")}
        return str(EncoderSpec(spec.kind, spec.name, spec.mode, options))
    return None


_BASELINE = """
import json, os, sys, time
from lookalike.catalog import Catalog
from lookalike.data.images import open_image
home, csv, first, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
out = []
for number, spec in enumerate(specs):
    cat = Catalog.create(f"baseline{number}", home=home)
    enc = cat.encoder(spec)
    enc.encode_batch(enc.preprocess(open_image(first, draft_size=enc.image_size))[None])
    t, c = time.perf_counter(), sum(os.times()[:2])
    report = cat.index(csv, spec)
    out.append({"spec": spec, "wall": time.perf_counter() - t, "cpu": sum(os.times()[:2]) - c,
                "images": report.added + report.updated})
print(json.dumps(out))
"""


_QUERY = """
import json, os, sys, time
os.environ["LOOKALIKE_THREADS"] = "1"          # onnxruntime sessions read it when they are built
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from lookalike.data.images import open_image
from lookalike.encoders import get_encoder
torch.set_num_threads(1)
threadpool_limits(1)
config = json.loads(open(sys.argv[1]).read())
encoders = [get_encoder(spec, home=config["home"]) for spec in config["specs"]]
data = [open(path, "rb").read() for path in config["paths"]]
for enc in encoders:                            # loaded and warm
    for _ in range(3):
        enc.encode_batch(enc.preprocess(open_image(data[0], draft_size=enc.image_size))[None])
times = [[] for _ in encoders]
for blob in data:
    for enc, out in zip(encoders, times):       # interleaved: a load spike hits every encoder alike
        c0, t0 = time.thread_time(), time.perf_counter()
        image = open_image(blob, draft_size=enc.image_size)
        t1 = time.perf_counter()
        array = enc.preprocess(image)
        t2 = time.perf_counter()
        enc.encode_batch(array[None])
        out.append((t1 - t0, t2 - t1, time.perf_counter() - t2, time.thread_time() - c0))
print(json.dumps(times))
"""


def _query_rows(src: Path | None, labels: list[str], specs: list[str], paths: list[Path], home: Path,
                directory: Path) -> list[QueryRow]:
    """Single-image encode latency of ``specs`` (see the module docstring), run by the lookalike under
    ``src`` (None: this one) in a subprocess on one thread; one :class:`QueryRow` per spec."""
    config = directory / "query.json"
    config.write_text(json.dumps({"home": str(home), "specs": specs, "paths": [str(p) for p in paths]}))
    package_src = Path(__file__).resolve().parents[2] if src is None else src
    env = {**os.environ, "PYTHONPATH": str(package_src), "LOOKALIKE_THREADS": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _QUERY, str(config)], env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the single-image run failed: {done.stderr.strip().splitlines()[-1:]}")
    rows = []
    for label, times in zip(labels, json.loads(done.stdout.strip().splitlines()[-1])):
        t = 1000 * np.asarray(times)             # (images, 4) ms: decode, preprocess, model; CPU of all three
        total = t[:, :3].sum(axis=1)
        rows.append(QueryRow(label, len(t), float(np.percentile(total, 50)), float(np.percentile(total, 90)),
                             float(total.mean()), *(float(v) for v in np.median(t, axis=0))))
    return rows


def _baseline_rows(src: Path, specs: list[str], csv_path: Path, first: Path, home: Path) -> list[EmbedRow]:
    """The pipeline rows for ``specs`` run by the lookalike under ``src`` (a subprocess)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", _BASELINE, str(home), str(csv_path), str(first), *specs],
                          env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the baseline checkout failed: {done.stderr.strip().splitlines()[-1:]}")
    return [_row(f"before ({src}): {r['spec']}, fp32", r["images"], r["wall"], r["cpu"])
            for r in json.loads(done.stdout.strip().splitlines()[-1])]


def run_embed_bench(source: str | Path, encoder: str = DEFAULT_ENCODER, limit: int = 300, batch_size: int = 32,
                    workers: int | None = None, on_row=None, int8: bool = True, naive: bool = False,
                    baseline_src: str | Path | None = None, query_images: int = 200,
                    ingest: bool = True) -> EmbedBench:
    """On the same ``limit`` images of ``source``: the colour-blind sibling of ``encoder`` (when it is a
    colour-fused EfficientNet-Lite0) and ``encoder`` itself through the pipeline, fp32, then with
    ``int8`` the same two with a catalog-calibrated int8 model; ``baseline_src`` adds the fp32 pair
    run by another checkout; ``naive`` adds the one-image torch loop; ``ingest`` False skips the
    pipeline rows. ``query_images`` > 0: the single-image encode latency of the same encoders on the
    first that many images (:class:`QueryRow`). ``on_row`` is called with each row as it is measured.
    See the module docstring."""
    rows: list[EmbedRow] = []
    query: list[QueryRow] = []
    say = on_row or (lambda row: None)
    specs = [s for s in (colour_blind(encoder), encoder) if s]
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        home = Path(tmp) / "home"
        csv_path, paths = subset_csv(source, limit, Path(tmp))
        if not paths:
            raise ValueError(f"no readable images in {source}")
        for path in paths:             # same page cache for every row: read every file once first
            path.read_bytes()
        if naive:
            model = get_encoder(torch_spec(encoder))
            model.encode_batch(model.preprocess(open_image(paths[0]))[None])    # model loaded and warm
            rows.append(_measure("naive loop: torch, 1 image at a time", len(paths), lambda: naive_loop(paths, model)))
            say(rows[-1])

        def pipeline(label: str, spec: str, number: int) -> EmbedRow:
            cat = Catalog.create(f"bench{number}", home=home)
            enc = cat.encoder(spec)
            enc.encode_batch(enc.preprocess(open_image(paths[0], draft_size=enc.image_size))[None])  # loaded, warm
            reports = []
            row = _measure(label, len(paths), lambda: reports.append(
                cat.index(csv_path, spec, batch_size=batch_size, workers=workers, int8="off")))
            if reports[0].failed:
                raise RuntimeError(f"{reports[0].failed} images failed in the pipeline run")
            say(row)
            return row

        fp32 = [pipeline(f"now: {spec}, fp32", spec, n) for n, spec in enumerate(specs)] if ingest else []
        if baseline_src is not None and ingest:
            rows += _baseline_rows(Path(baseline_src), specs, csv_path, paths[0], Path(tmp) / "baseline-home")
            for row in rows[-len(specs):]:
                say(row)
        rows += fp32
        labels, query_specs = [f"now: {spec}, fp32" for spec in specs], list(specs)
        if int8 and all(getattr(get_encoder(s, home=home), "int8_candidate", False) for s in specs):
            calibration_csv, _ = subset_csv(source, min(CALIBRATION_IMAGES, len(paths)), Path(tmp), "calibration.csv")
            for n, spec in enumerate(specs):
                side = Catalog.create(f"calibration{n}", home=home)
                side.index(calibration_csv, spec, batch_size=batch_size, int8="check")
                choice = side.runtime_choice(spec)
                quantised = str(EncoderSpec.parse(spec).with_options(runtime="onnx-int8",
                                                                     int8_model=str(side.dir / choice["int8_model"])))
                verdict = "chosen" if choice["runtime"] == "onnx-int8" else "refused"
                label = f"now: {spec}, int8 (check: {verdict}, loss {choice['check']['loss']:+.4f})"
                labels.append(label)
                query_specs.append(quantised)
                if ingest:
                    rows.append(pipeline(label, quantised, len(specs) + n))
        if query_images > 0:
            sample = paths[:query_images]
            if baseline_src is not None:
                query += _query_rows(Path(baseline_src), [f"before ({baseline_src}): {s}, fp32" for s in specs],
                                     specs, sample, Path(tmp) / "baseline-home", Path(tmp))
            query += _query_rows(None, labels, query_specs, sample, home, Path(tmp))
            for row in query:
                say(row)
    # ratios: each colour-fused row against the colour-blind row just before it (same code, same runtime)
    for i, row in enumerate(rows):
        row.speedup = row.images_per_s / rows[0].images_per_s if rows[0].images_per_s else float("nan")
        if _pair(rows, i, specs):
            row.vs_colour_blind = row.images_per_s / rows[i - 1].images_per_s if rows[i - 1].images_per_s else float("nan")
    for i, row in enumerate(query):   # latency: the colour-blind row's p50 over this one's (> 1 = faster)
        if _pair(query, i, specs):
            row.vs_colour_blind = query[i - 1].p50_ms / row.p50_ms if row.p50_ms else float("nan")
    return EmbedBench(rows, query)


def _pair(rows: list, i: int, specs: list[str]) -> bool:
    """Row ``i`` is the colour-fused spec and row ``i - 1`` its colour-blind sibling (same code, runtime)."""
    return len(specs) == 2 and i > 0 and specs[1] in rows[i].method and specs[0] + "," in rows[i - 1].method
