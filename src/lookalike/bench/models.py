"""``lookalike bench models``: size, speed and retrieval quality of every backbone variant, one run.

The model is the default backbone (``effnet-lite0``) or the one of ``--encoder``: ``effnet-lite1``,
``effnet-lite2`` (any weights/pool options), or a bring-your-own ``onnx:/path/model.onnx`` (no torch
row: its reference is the file itself, onnxruntime fp32). Images are preprocessed by that encoder,
so calibration and quality use exactly what indexing feeds the model.

Variants: torch fp32 (eager), onnxruntime fp32, fp16 and static int8 (calibrated on catalog
images that are *not* in the evaluation subset). Speed is measured in interleaved rounds (each
round times every variant once) and the median is kept, so load from other processes hits all
variants alike; compare the ratios, not the absolute figures. Quality: leave-one-out P@1 and mAP@10
on a stratified labelled subset of ``n`` items, vectors L2-normalised like the ``effnet-lite0``
encoder.

The benchmark only measures and reports: every file it builds and its report (``report.json``,
``report.png``) go to ``<catalog>/artifacts/bench-models/``. It recommends a spec — the fastest
variant at batch 32 whose mAP@10 drop against torch fp32 is at most ``QUALITY_THRESHOLD``, e.g.
``effnet-lite0:runtime=onnx-int8`` — and changes nothing that indexing reads: ``runtime=auto`` is a
fixed rule (lookalike.encoders.runtime). One addition, so that the recommended spec works: when the
home has no int8 variant of the backbone yet (int8 needs calibration images, which only a catalog
gives), the one calibrated here is copied there; an existing one is never replaced, so vectors
indexed with ``runtime=onnx-int8`` stay valid.
"""
from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lookalike.data.artifacts import atomic_path, write_json
from lookalike.data.images import ImageError, open_image
from lookalike.encoders import get_encoder
from lookalike.encoders.runtime import OnnxModel, build_variant, variants_dir
from lookalike.encoders.spec import EncoderSpec
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.index.distances import l2_normalize
from lookalike.train.device import training_threads
from lookalike.viz.charts import speed_quality_png

# Largest mAP@10 drop (absolute, against torch fp32 on the same items) a variant may cost and still
# be recommended.
QUALITY_THRESHOLD = 0.005
BENCH_VARIANTS = ("torch", "onnx", "onnx-fp16", "onnx-int8")


@dataclass
class VariantResult:
    variant: str
    size_mb: float
    images_per_s_b1: float
    images_per_s_b32: float
    p_at_1: float
    map_at_10: float
    max_abs_diff: float  # largest |feature - torch feature| over the subset (after L2-normalising)


@dataclass
class ModelBench:
    catalog: str
    label: str
    n_items: int
    n_calibration: int
    rounds: int
    threshold: float
    chosen: str  # the recommended variant
    spec: str = ""  # the encoder spec that uses it, e.g. "effnet-lite0:runtime=onnx-int8"
    report: str = ""  # report.json under the catalog's artifacts
    installed_int8: str = ""  # the home's int8 variant, when this run created it (else "")
    results: list[VariantResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _stratified(values: list[str], n: int, rng) -> np.ndarray:
    """About ``n`` positions with every label in proportion (at least 2 per label, so every query
    has a relevant item; the total may therefore slightly exceed ``n``)."""
    values_arr = np.array(values, dtype=object)
    share = min(1.0, n / len(values))
    picked = []
    for value in sorted(set(values)):
        members = rng.permutation(np.flatnonzero(values_arr == value))
        picked.extend(members[: max(2, int(round(len(members) * share)))])
    return np.sort(np.array(picked, dtype=np.int64))


def _load_pixels(items, encoder) -> tuple[np.ndarray, list]:
    """The model input of each item's photo, as ``encoder`` (colour-blind) preprocesses it."""
    pixels, kept = [], []
    for item in items:
        try:
            pixels.append(encoder.preprocess(open_image(item.path, draft_size=encoder.image_size)))
            kept.append(item)
        except ImageError:
            continue
    return np.stack(pixels).astype(np.float32), kept


def _bench_encoder(spec: str, home=None):
    """The colour-blind encoder whose model is measured, run with torch where it has a torch module
    (``runtime`` dropped from the spec: every runtime is measured). ValueError for other kinds."""
    parsed = EncoderSpec.parse(spec)
    if not (parsed.kind.startswith("effnet-lite") or parsed.kind == "onnx"):
        raise ValueError(f"bench models measures effnet-lite0/1/2 backbones and onnx: models, not {parsed.kind!r}")
    options = {k: v for k, v in parsed.options.items() if k not in ("runtime", "colour", "color")}
    parsed = parsed.replace(options=options)
    if parsed.kind == "effnet-lite0-colour":  # the same backbone
        parsed = parsed.replace(kind="effnet-lite0")
    if parsed.kind != "onnx" and parsed.name is not None:
        try:  # a colour weight as the name (effnet-lite0-colour:0.3): not part of the backbone
            float(parsed.name)
            parsed = parsed.replace(name=None)
        except ValueError:
            pass
    runtime = "onnx" if parsed.kind == "onnx" else "torch"
    return parsed, get_encoder(parsed, home=home, runtime=runtime)


def _runners(encoder, folder: Path, calibration: np.ndarray) -> dict[str, tuple[Callable, Path]]:
    """Every variant built afresh in ``folder`` (the benchmark's own), with its runner; each maps a
    preprocessed batch to the encoder's unnormalised vectors (an ONNX model's output pooled)."""
    module = getattr(encoder, "backbone", None)  # effnet-lite: the torch module; onnx: none
    source = getattr(encoder, "path", None) if module is None else None
    output = getattr(encoder, "output", None)
    folder.mkdir(parents=True, exist_ok=True)
    runners = {}
    if module is not None:
        def run_torch(batch):
            with torch.inference_mode():
                return module(torch.from_numpy(batch)).numpy()

        weights = folder / "torch-fp32.pt"
        torch.save(module.state_dict(), weights)
        runners["torch"] = (run_torch, weights)
    for variant in BENCH_VARIANTS[1:]:
        path = build_variant(module, variant, folder / f"{variant}.onnx", encoder.image_size, calibration,
                             source=source)
        # same thread count as torch, so the comparison is like for like
        model = OnnxModel(path, threads=torch.get_num_threads(), output=output)
        # an onnx: encoder runs it as it runs its own file (fixed batch, pooling); a backbone as is
        run = (lambda batch, m=model: encoder.run_model(m, batch)) if module is None else model
        runners[variant] = (run, path)
    return runners


def _throughput(run: Callable, pixels: np.ndarray, batch: int, repeats: int) -> float:
    chunk = np.ascontiguousarray(pixels[:batch])
    started = time.perf_counter()
    for _ in range(repeats):
        run(chunk)
    return repeats * len(chunk) / (time.perf_counter() - started)


def choose_variant(results: list[VariantResult], threshold: float = QUALITY_THRESHOLD) -> str:
    """The fastest variant at batch 32 whose mAP@10 is at most ``threshold`` below torch fp32's
    (onnxruntime fp32's for a model given as an ONNX file)."""
    reference = next(r for r in results if r.variant in ("torch", "onnx")).map_at_10
    eligible = [r for r in results if reference - r.map_at_10 <= threshold + 1e-12]
    return max(eligible, key=lambda r: r.images_per_s_b32).variant


# $LOOKALIKE_THREADS torch threads, else 1 (onnxruntime gets the same count: like for like)
@training_threads(default=1)
def bench_models(cat, label: str = "label", n: int = 300, n_calibration: int = 64, rounds: int = 3,
                 home=None, seed: int = 0, progress: Callable[[str], None] | None = None,
                 encoder: str = "effnet-lite0") -> ModelBench:
    """Measure the variants of ``encoder``'s model (default the EfficientNet-Lite0 backbone) on
    catalog ``cat`` (a ``lookalike.Catalog``): see the module docstring. Writes ``report.json`` and
    ``report.png`` under ``cat.artifacts_dir / "bench-models"``; ``home`` (default the catalog's) is
    where a missing int8 variant is installed. ValueError when fewer than 10 items carry ``label``
    or ``encoder`` is not an effnet-lite/onnx spec."""
    say = progress or (lambda message: None)
    spec, model = _bench_encoder(encoder, home or cat.home)
    rng = np.random.default_rng(seed)
    items = [it for it in cat.items() if (it.label if label == "label" else it.metadata.get(label)) not in (None, "")]
    if len(items) < 10:
        raise ValueError(f"catalog {cat.name!r} has fewer than 10 items labelled {label!r}")
    values = [str(it.label if label == "label" else it.metadata.get(label)) for it in items]
    chosen_rows = _stratified(values, n, rng)
    rest = np.setdiff1d(np.arange(len(items)), chosen_rows)
    calib_rows = rng.permutation(rest)[:n_calibration] if len(rest) else rng.permutation(chosen_rows)[:n_calibration]
    say(f"loading {len(chosen_rows)} evaluation + {len(calib_rows)} calibration images")
    pixels, kept = _load_pixels([items[i] for i in chosen_rows], model)
    kept_ids = {it.id for it in kept}
    labels = [v for i, v in zip(chosen_rows, [values[i] for i in chosen_rows]) if items[i].id in kept_ids]
    calibration, _ = _load_pixels([items[i] for i in calib_rows], model)

    folder = cat.artifacts_dir / "bench-models"
    say("exporting ONNX variants (fp32, fp16, static int8)")
    runners = _runners(model, folder / "variants", calibration)
    reference = next(iter(runners))  # torch, or the ONNX file itself

    quality, features = {}, {}
    for variant, (run, _) in runners.items():
        say(f"embedding {len(pixels)} images with {variant}")
        features[variant] = l2_normalize(np.concatenate([run(pixels[i:i + 32]) for i in range(0, len(pixels), 32)]))
        overall = evaluate_vectors(features[variant], labels, (1, 10)).overall
        quality[variant] = (overall["P@1"], overall["mAP@10"])

    speed_b1 = {v: [] for v in runners}
    speed_b32 = {v: [] for v in runners}
    for r in range(rounds):
        say(f"timing round {r + 1}/{rounds}")
        for variant, (run, _) in runners.items():
            run(pixels[:1])  # warm-up (first-call allocations)
            speed_b1[variant].append(_throughput(run, pixels, 1, 8))
            speed_b32[variant].append(_throughput(run, pixels, 32, 1))

    results = [VariantResult(variant=v, size_mb=path.stat().st_size / 1e6,
                             images_per_s_b1=statistics.median(speed_b1[v]),
                             images_per_s_b32=statistics.median(speed_b32[v]),
                             p_at_1=quality[v][0], map_at_10=quality[v][1],
                             max_abs_diff=float(np.abs(features[v] - features[reference]).max()))
               for v, (_, path) in runners.items()]
    chosen = choose_variant(results)
    # The only file written outside the benchmark's folder: a first int8 variant, never a replacement.
    installed = variants_dir(model.runner.key, home or cat.home) / "onnx-int8.onnx"
    if not installed.exists():
        with atomic_path(installed) as tmp:
            shutil.copyfile(runners["onnx-int8"][1], tmp)
        say(f"installed the int8 variant calibrated here: {installed}")
    else:
        installed = None
    bench = ModelBench(catalog=cat.name, label=label, n_items=len(labels), n_calibration=len(calibration),
                       rounds=rounds, threshold=QUALITY_THRESHOLD, chosen=chosen,
                       spec=str(spec.with_options(runtime=chosen)),
                       report=str(folder / "report.json"), installed_int8=str(installed or ""), results=results)
    write_json(folder / "report.json", bench.to_dict(), indent=2)
    speed_quality_png([(r.variant, r.images_per_s_b32, r.map_at_10) for r in results], folder / "report.png",
                      title=f"{spec} variants on {cat.name} ({len(labels)} items)")
    return bench
