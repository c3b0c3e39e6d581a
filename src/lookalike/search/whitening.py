"""A catalog's own vector statistics, removed before ranking: mean-centring and PCA(-whitening).

ImageNet features of one catalog share a large common direction (every photo is "a product on a
background"), so raw cosines crowd together and that shared part says nothing about which items
are alike. Subtracting the catalog's mean vector and re-normalising (the centring step of
PCA-whitening, Jégou & Chum, "Negative evidence and co-occurrences in image retrieval", ECCV 2012)
spreads the cosines over what differs. It is fitted on the catalog's stored vectors without labels,
costs one pass over them, and is applied to the stored vectors and to every query at search time
(:class:`lookalike.search.expansion.ExpandedSearch`, the ``centre=1`` part of a re-ranking setting).

:class:`Whitening` is the general form: centre, optionally rotate onto the top ``dim`` principal
axes, divide axis *i* by ``(λ_i + shrink·mean λ)^power`` (``power`` 0.5 = full whitening, 0 = plain
PCA / centring only) and re-normalise. Measured on clothing-small (README "Quality without labels",
``python -m lookalike.bench.studies.label_free``): centring alone helps (+0.02 mAP@10 with αQE/DBA);
whitening (``power`` 0.25 / 0.5) flattens the dominant axes that carry the product type and costs
0.03-0.08, so the default :class:`WhiteningConfig` centres only.

A fused encoder's trailing colour part (``keep`` values, ``Encoder.unexpanded_dims``) is centred on
its own and keeps its length, so the fused cosine stays ``(1-w)·cos(CNN part) + w·cos(colour part)``
of the centred parts. The component follows the learned-component contract (``lookalike.train.base``:
config dataclass, ``fit -> self``, ``save(dir)``, ``Whitening.load(dir)``); a catalog keeps one per
encoder under ``<catalog>/artifacts/whitening/`` and refits it once the catalog has grown or shrunk
by :data:`REFIT_SHARE` since the fit.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lookalike.data.artifacts import save_npz, write_json
from lookalike.index.distances import l2_normalize

#: refit once the item count has changed by this share of the count the statistics were fitted on
REFIT_SHARE = 0.1
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class WhiteningConfig:
    """``dim``: principal axes kept (None: all, and with ``power`` 0 no rotation at all: centring
    only); ``power``: eigenvalue exponent (0 = no whitening, 0.5 = full); ``shrink``: added to every
    eigenvalue as a multiple of their mean (regularises small axes); ``keep``: trailing values (a
    colour part) centred separately and never projected; ``centre_kept``: centre that part too."""

    dim: int | None = None
    power: float = 0.0
    shrink: float = 0.0
    keep: int = 0
    centre_kept: bool = True

    def __post_init__(self):
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim must be a positive number of axes or None, not {self.dim!r}")
        if not (np.isfinite(self.power) and 0 <= self.power <= 1):
            raise ValueError(f"power must be in [0, 1], not {self.power!r}")
        if not (np.isfinite(self.shrink) and self.shrink >= 0):
            raise ValueError(f"shrink must be >= 0, not {self.shrink!r}")
        if self.keep < 0:
            raise ValueError(f"keep must be >= 0, not {self.keep!r}")

    @property
    def rotates(self) -> bool:
        return self.dim is not None or self.power > 0


class Whitening:
    """Fitted per catalog: ``fit((n, d) vectors) -> self``; ``transform((m, d)) -> (m, d')`` float32
    (``d' = dim + keep`` when ``dim`` is set, else ``d``), unit rows whose leading block and kept block
    keep the lengths they had in the input rows. Learned state: ``mean_`` (d - keep,), ``projection_``
    ((d - keep, dim') or None), ``kept_mean_`` (keep,) or None, ``n_fit_`` (items fitted on)."""

    kind = "whitening"
    version = 1

    def __init__(self, config: WhiteningConfig | None = None):
        self.config = config or WhiteningConfig()
        self.mean_: np.ndarray | None = None
        self.projection_: np.ndarray | None = None
        self.kept_mean_: np.ndarray | None = None
        self.n_fit_ = 0

    def _split(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Unit rows -> (leading block as unit rows, its length, kept block as unit rows, its length)."""
        x = l2_normalize(np.atleast_2d(np.asarray(vectors, np.float32)))
        keep = self.config.keep
        if keep <= 0:
            return x, np.ones(len(x), np.float32), None, None
        if keep >= x.shape[1]:
            raise ValueError(f"keep={keep} leaves nothing to centre in {x.shape[1]}-d vectors")
        head, tail = x[:, :-keep], x[:, -keep:]
        head_len, tail_len = np.linalg.norm(head, axis=1), np.linalg.norm(tail, axis=1)
        return l2_normalize(head), head_len.astype(np.float32), l2_normalize(tail), tail_len.astype(np.float32)

    def fit(self, vectors: np.ndarray) -> "Whitening":
        """Learn the statistics of ``vectors`` (n, d), n >= 2 (the catalog's stored vectors)."""
        head, _, tail, _ = self._split(vectors)
        if len(head) < 2:
            raise ValueError(f"whitening needs at least 2 vectors, got {len(head)}")
        self.mean_ = head.mean(axis=0).astype(np.float32)
        self.projection_ = None
        if self.config.rotates:
            centred = (head - self.mean_).astype(np.float64)
            values, axes = np.linalg.eigh(centred.T @ centred / len(centred))
            order = np.argsort(values)[::-1][: self.config.dim or len(values)]
            values, axes = np.maximum(values[order], 1e-12), axes[:, order]
            values = values + self.config.shrink * values.mean()
            self.projection_ = (axes / values ** self.config.power).astype(np.float32)
        self.kept_mean_ = tail.mean(axis=0).astype(np.float32) if tail is not None and self.config.centre_kept else None
        self.n_fit_ = int(len(head))
        return self

    @property
    def fitted(self) -> bool:
        return self.mean_ is not None

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(m, d) or (d,) vectors -> (m, d') float32 unit rows (see the class). RuntimeError before
        :meth:`fit`; ValueError when ``d`` is not the fitted width."""
        if not self.fitted:
            raise RuntimeError("Whitening.transform before fit")
        width = len(self.mean_) + self.config.keep
        if np.atleast_2d(vectors).shape[1] != width:
            raise ValueError(f"whitening fitted on {width}-d vectors, got {np.atleast_2d(vectors).shape[1]}-d")
        head, head_len, tail, tail_len = self._split(vectors)
        head = head - self.mean_
        if self.projection_ is not None:
            head = head @ self.projection_
        head = l2_normalize(head) * head_len[:, None]
        if tail is None:
            return head.astype(np.float32)
        if self.kept_mean_ is not None:
            tail = l2_normalize(tail - self.kept_mean_)
        return np.concatenate([head, tail * tail_len[:, None]], axis=1).astype(np.float32)

    def stale(self, count: int) -> bool:
        """Whether a catalog now holding ``count`` items should refit (changed by > :data:`REFIT_SHARE`)."""
        return not self.fitted or abs(count - self.n_fit_) > REFIT_SHARE * max(self.n_fit_, 1)

    def save(self, directory: Path) -> Path:
        """``directory/config.json`` (kind, version, config, n_fit) and ``state.npz``; returns the folder."""
        if not self.fitted:
            raise RuntimeError("Whitening.save before fit")
        directory = Path(directory)
        arrays = {"mean": self.mean_}
        if self.projection_ is not None:
            arrays["projection"] = self.projection_
        if self.kept_mean_ is not None:
            arrays["kept_mean"] = self.kept_mean_
        save_npz(directory / "state.npz", **arrays)
        # the contract's config.json (lookalike.train.base.save_config's format; train sits above search)
        write_json(directory / CONFIG_FILE, {"kind": self.kind, "version": self.version,
                                             "config": asdict(self.config), "n_fit": self.n_fit_}, indent=2)
        return directory

    @classmethod
    def load(cls, directory: Path) -> "Whitening":
        """A saved :class:`Whitening`. FileNotFoundError when none is there, ValueError for another
        kind or a newer format."""
        path = Path(directory) / CONFIG_FILE
        if not path.exists():
            raise FileNotFoundError(f"no saved whitening in {directory}")
        doc = json.loads(path.read_text())
        if doc.get("kind") != cls.kind:
            raise ValueError(f"{path} holds a {doc.get('kind')!r} model, not 'whitening'")
        if int(doc.get("version", 0)) > cls.version:
            raise ValueError(f"{path} was saved by a newer lookalike (format {doc['version']}); upgrade lookalike")
        out = cls(WhiteningConfig(**doc["config"]))
        with np.load(Path(directory) / "state.npz", allow_pickle=False) as state:
            out.mean_ = state["mean"]
            out.projection_ = state["projection"] if "projection" in state else None
            out.kept_mean_ = state["kept_mean"] if "kept_mean" in state else None
        out.n_fit_ = int(doc.get("n_fit", 0))
        return out
