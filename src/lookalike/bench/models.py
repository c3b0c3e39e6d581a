"""``lookalike bench models``: size, speed and retrieval quality of every backbone variant, one run.

Variants: torch fp32 (eager), onnxruntime fp32, fp16 and static int8 (calibrated on catalog
images that are *not* in the evaluation subset). Speed is measured in interleaved rounds (each
round times every variant once) and the median is kept, so load from other processes hits all
variants alike; compare the ratios, not the absolute figures. Quality: leave-one-out P@1 and mAP@10
on a stratified labelled subset of ``n`` items, vectors L2-normalised like the ``effnet-lite0``
encoder. The fastest variant (batch 32) whose mAP@10 drop against torch fp32 is at most
``QUALITY_THRESHOLD`` is recorded as the choice ``runtime=auto`` uses from then on.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lookalike.encoders.runtime import QUALITY_THRESHOLD, variants_dir, write_choice
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.index.distances import l2_normalize

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
    chosen: str
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


def _load_pixels(items, resize: str = "stretch") -> tuple[np.ndarray, list]:
    from lookalike.encoders.pretrained import IMAGE_SIZE, preprocess_image
    from lookalike.data.images import ImageError, open_image

    pixels, kept = [], []
    for item in items:
        try:
            pixels.append(preprocess_image(open_image(item.path, draft_size=IMAGE_SIZE), IMAGE_SIZE, resize))
            kept.append(item)
        except ImageError:
            continue
    return np.stack(pixels).astype(np.float32), kept


def _runners(backbone, folder: Path, calibration: np.ndarray) -> dict[str, tuple[Callable, Path]]:
    import torch

    from lookalike.encoders.pretrained import IMAGE_SIZE
    from lookalike.encoders.onnx_runtime import OnnxModel, build_variant

    def run_torch(batch):
        with torch.inference_mode():
            return backbone(torch.from_numpy(batch)).numpy()

    weights = folder / "torch-fp32.pt"
    if not weights.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(backbone.state_dict(), weights)
    runners = {"torch": (run_torch, weights)}
    for variant in BENCH_VARIANTS[1:]:
        path = folder / f"{variant}.onnx"
        if variant == "onnx-int8" or not path.exists():  # int8 is re-calibrated on this catalog
            build_variant(backbone, variant, path, IMAGE_SIZE, calibration)
        # same thread count as torch, so the comparison is like for like
        runners[variant] = (OnnxModel(path, threads=torch.get_num_threads()), path)
    return runners


def _throughput(run: Callable, pixels: np.ndarray, batch: int, repeats: int) -> float:
    chunk = np.ascontiguousarray(pixels[:batch])
    started = time.perf_counter()
    for _ in range(repeats):
        run(chunk)
    return repeats * len(chunk) / (time.perf_counter() - started)


def choose_variant(results: list[VariantResult], threshold: float = QUALITY_THRESHOLD) -> str:
    """The fastest variant at batch 32 whose mAP@10 is at most ``threshold`` below torch fp32's."""
    reference = next(r for r in results if r.variant == "torch").map_at_10
    eligible = [r for r in results if reference - r.map_at_10 <= threshold + 1e-12]
    return max(eligible, key=lambda r: r.images_per_s_b32).variant


def bench_models(cat, label: str = "label", n: int = 300, n_calibration: int = 64, rounds: int = 3,
                 home=None, seed: int = 0, progress: Callable[[str], None] | None = None) -> ModelBench:
    from lookalike.encoders.pretrained import load_backbone

    say = progress or (lambda message: None)
    rng = np.random.default_rng(seed)
    items = [it for it in cat.items() if (it.label if label == "label" else it.metadata.get(label)) not in (None, "")]
    if len(items) < 10:
        raise ValueError(f"catalog {cat.name!r} has fewer than 10 items labelled {label!r}")
    values = [str(it.label if label == "label" else it.metadata.get(label)) for it in items]
    chosen_rows = _stratified(values, n, rng)
    rest = np.setdiff1d(np.arange(len(items)), chosen_rows)
    calib_rows = rng.permutation(rest)[:n_calibration] if len(rest) else rng.permutation(chosen_rows)[:n_calibration]
    say(f"loading {len(chosen_rows)} evaluation + {len(calib_rows)} calibration images")
    pixels, kept = _load_pixels([items[i] for i in chosen_rows])
    kept_ids = {it.id for it in kept}
    labels = [v for i, v in zip(chosen_rows, [values[i] for i in chosen_rows]) if items[i].id in kept_ids]
    calibration, _ = _load_pixels([items[i] for i in calib_rows])

    backbone = load_backbone()
    folder = variants_dir(None, "avg", home or cat.home)
    say("exporting ONNX variants (fp32, fp16, static int8)")
    runners = _runners(backbone, folder, calibration)

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
                             max_abs_diff=float(np.abs(features[v] - features["torch"]).max()))
               for v, (_, path) in runners.items()]
    chosen = choose_variant(results)
    write_choice(folder, chosen, {"threshold_map10_drop": QUALITY_THRESHOLD, "catalog": cat.name,
                                  "n_items": len(labels), "results": [asdict(r) for r in results]})
    return ModelBench(catalog=cat.name, label=label, n_items=len(labels), n_calibration=len(calibration),
                      rounds=rounds, threshold=QUALITY_THRESHOLD, chosen=chosen, results=results)
