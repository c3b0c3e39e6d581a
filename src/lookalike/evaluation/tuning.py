"""Pick a catalog's encoder options by leave-one-out on labelled items (``lookalike tune``).

Candidates are (encoder spec, re-ranking) pairs whose vectors are already known: the colour-fused
encoders' parts are separable (:func:`lookalike.encoders.colour.split_fused`), so every colour
weight — and, when the catalog holds the other crop's vectors, both crops — is evaluated from
stored vectors, with every αQE/DBA setting of the grid (:mod:`lookalike.search.expansion`).
Each candidate is scored by :func:`~lookalike.evaluation.retrieval.evaluate_vectors` on the
chosen items (e.g. the validation split: queries and gallery both within it); the best mAP@10
wins, and on a tie the simpler candidate (listed first: lower colour weight, no crop, no
re-ranking) is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np

from lookalike.encoders.colour import fuse_parts, fused_weight
from lookalike.encoders.spec import EncoderSpec
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.search.expansion import Expansion

COLOUR_WEIGHTS = (0.0, 0.1, 0.2, 0.3)
EXPANSIONS = ("none", "qe=2", "qe=2,dba=3", "qe=5,dba=10", "qe=10,dba=20", "centre=1,qe=15,dba=30,alpha=2",
              "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.2",
              "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.3")
#: the kinds whose vectors are ``cnn ⊕ colour`` and take ``colour=`` / ``crop=`` options
FUSED_KINDS = ("effnet-lite0", "effnet-lite0-colour")
#: colour weight of ``effnet-lite0-colour`` without a name (lookalike.encoders.pretrained.DEFAULT_COLOUR_WEIGHT)
COLOUR_KIND_WEIGHT = 0.2


def variant_spec(base: str | EncoderSpec, weight: float, crop: str) -> str:
    """The canonical spec of ``base`` (an ``effnet-lite0`` family spec) with colour ``weight`` and
    ``crop`` (``none`` | ``fg``): ``effnet-lite0`` for weight 0, ``effnet-lite0-colour`` at the
    default weight, ``effnet-lite0-colour:W`` otherwise; the base's other options are kept."""
    spec = EncoderSpec.parse(base)
    if spec.kind not in FUSED_KINDS:
        raise ValueError(f"{spec.kind} has no colour/crop options (only {', '.join(FUSED_KINDS)})")
    options = {k: v for k, v in spec.options.items() if k not in ("colour", "color", "crop")}
    name = spec.name if spec.name and not _is_number(spec.name) else None  # a weights file stays
    if crop != "none":
        options["crop"] = crop
    if weight <= 0:
        return str(EncoderSpec("effnet-lite0", name, None, options))
    if name is None and abs(weight - COLOUR_KIND_WEIGHT) < 1e-9:
        return str(EncoderSpec("effnet-lite0-colour", None, None, options))
    if name is None:
        return str(EncoderSpec("effnet-lite0-colour", f"{weight:g}", None, options))
    return str(EncoderSpec("effnet-lite0-colour", name, None, {**options, "colour": f"{weight:g}"}))


def colour_weight(spec: str | EncoderSpec) -> float | None:
    """The colour weight a fused-family spec names (``effnet-lite0-colour`` 0.2, ``…:0.3`` 0.3,
    ``effnet-lite0`` 0 unless ``colour=W``), read from the spec alone
    (:func:`lookalike.encoders.colour.fused_weight`); None for another kind."""
    spec = EncoderSpec.parse(spec)
    return fused_weight(spec) if spec.kind in FUSED_KINDS else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class TuneRow:
    encoder: str
    expansion: str
    colour: float | None
    crop: str | None
    metrics: dict[str, float]

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "expansion": self.expansion, "colour": self.colour, "crop": self.crop,
                **{k: round(v, 4) for k, v in self.metrics.items()}}


@dataclass
class TuneReport:
    """Every candidate's leave-one-out scores (``rows``, in candidate order) and the winner."""

    rows: list[TuneRow]
    best: TuneRow
    queries: int
    label: str = "label"
    split: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"label": self.label, "split": self.split, "queries": self.queries, "best": self.best.to_dict(),
                "rows": [r.to_dict() for r in self.rows], **self.extra}


def tune_options(parts: dict[str, tuple[np.ndarray, np.ndarray | None]] | None, labels: Sequence[Hashable],
                 subset: np.ndarray | None = None, *, base: str, base_vectors: np.ndarray | None = None,
                 weights: Iterable[float] = COLOUR_WEIGHTS, expansions: Iterable[str] = EXPANSIONS,
                 metric: str = "cosine", keep: int = 0, on_step: Callable[[], None] | None = None) -> TuneReport:
    """Score every candidate and return a :class:`TuneReport`.

    ``parts`` maps a crop (``"none"`` / ``"fg"``) to the (n, ·) CNN part and colour part (None
    when unknown) of ``base``'s family, aligned with ``labels``; None when ``base`` is not a fused
    encoder: then only the re-rankings of ``base_vectors`` are candidates (``keep``: its
    ``Encoder.unexpanded_dims``). Re-ranking leaves a fused candidate's colour part alone, as search does. Colour weights above 0
    need a colour part. ``subset``: the positions evaluated (queries and gallery); None = all.
    ValueError when no candidate can be evaluated (e.g. no label shared by two items)."""
    candidates: list[tuple[str, float | None, str | None, Callable[[], np.ndarray], int]] = []
    if parts:
        for crop in sorted(parts, key=lambda c: c != "none"):
            cnn, colour = parts[crop]
            for w in weights:
                if w > 0 and colour is None:
                    continue
                candidates.append((variant_spec(base, w, crop), float(w), crop,
                                   lambda cnn=cnn, colour=colour, w=w: fuse_parts(cnn, colour, w),
                                   colour.shape[1] if w > 0 else 0))
    else:
        if base_vectors is None:
            raise ValueError("give the parts of a fused encoder or the base encoder's vectors")
        candidates.append((str(base), None, None, lambda: base_vectors, keep))
    settings = [Expansion.parse(e) for e in expansions] if metric == "cosine" else [Expansion()]
    rows: list[TuneRow] = []
    queries = 0
    for spec, w, crop, make, unexpanded in candidates:
        vectors = make()
        for setting in settings:
            report = evaluate_vectors(vectors, labels, ks=(1, 5, 10), metric=metric, subset=subset,
                                      expansion=setting, keep=unexpanded)
            queries = report.n_queries
            rows.append(TuneRow(spec, str(setting), w, crop,
                                {m: report.overall[m] for m in ("P@1", "P@5", "mAP@10", "NDCG@10")}))
            if on_step:
                on_step()
    if not rows or queries == 0:
        raise ValueError("nothing to tune on: no labelled item has another item with the same label")
    best = max(rows, key=lambda r: r.metrics["mAP@10"] - 1e-9 * rows.index(r))  # ties: the earlier, simpler one
    return TuneReport(rows=rows, best=best, queries=queries)


def candidate_count(n_crops: int, has_colour: bool, weights: Sequence[float] = COLOUR_WEIGHTS,
                    expansions: Sequence[str] = EXPANSIONS) -> int:
    """How many evaluations :func:`tune_options` runs (for a progress bar)."""
    per_crop = sum(1 for w in weights if w <= 0 or has_colour)
    return max(1, n_crops * per_crop) * len(expansions)
