"""Explore a trained VAE's latent space: where every catalog item sits, what any point looks like.

    space = LatentSpace.build(cat, "shop-vae")       # µ, σ, z for every item (cached in the model dir)
    space.stats()                                    # per-dimension mean / std / min / max (the sliders)
    image, nearest = space.explore([0.1, -1.2, ...]) # slider values -> decoded image + real products
    space.sample(4, seed=0)                          # random products: points from the aggregate posterior
    space.interpolate("id-a", "id-b", steps=8)       # images along the line between two items
    space.traversal_grid("traversal.png")            # each dimension swept over its observed range

Every item keeps a fixed ε (derived from its pixels, see ``autoencoder.pixel_epsilon``), so its
sampled position z = µ + σ·ε is the same in every run and equals what ``vae:NAME@z`` stores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from lookalike.config import model_dir
from lookalike.data.artifacts import digest, read_cache, write_cache
from lookalike.data.pixel_cache import catalog_pixels
from lookalike.encoders.autoencoder import CONFIG_FILE, LoadedModel, pixel_epsilon, pixel_transform
from lookalike.encoders.hybrid import HybridModel
from lookalike.encoders.spec import EncoderSpec
from lookalike.index.distances import distance_to_score, exact_knn
from lookalike.search import SearchResult
from lookalike.viz.grids import array_grid

SEARCH_MODES = ("mu", "z", "loglik")
PRIORS = ("aggregate", "standard")  # what LatentSpace.sample draws from


def aggregate_posterior(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian fitted to the aggregate posterior q(z) = mean_i N(µ_i, diag σ_i²) of (n, d) posterior
    means ``mu`` and log-variances ``logvar``: (mean (d,), lower Cholesky factor L (d, d)) float64,
    with Cov = Cov(µ) + mean_i diag σ_i² (law of total covariance). ``mean + L @ s`` maps a point
    s ~ N(0, I) of this *whitened* space to where real items sit; the VAE's own prior N(0, I) does
    not (the items' µ spread and correlate unlike it, so its samples decode to average blobs).
    Ex-post density estimation as in Ghosh et al., "From variational to deterministic
    autoencoders", ICLR 2020 (who also fit a GMM; one full Gaussian keeps the map linear).
    ValueError with fewer than 2 items."""
    mu = np.asarray(mu, np.float64)
    if mu.ndim != 2 or len(mu) < 2:
        raise ValueError("need at least 2 items to fit the aggregate posterior")
    d = mu.shape[1]
    cov = np.cov(mu, rowvar=False).reshape(d, d) + np.diag(np.exp(np.asarray(logvar, np.float64)).mean(0))
    # a tiny ridge keeps the factorisation valid when items coincide in some direction
    return mu.mean(0), np.linalg.cholesky(cov + 1e-6 * np.eye(d))


class LatentSpace:
    """A trained VAE plus its catalog's items placed in the latent space."""

    def __init__(self, model: LoadedModel, ids: Sequence[str], labels: Sequence[str | None],
                 mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray):
        if not model.net.variational:
            raise ValueError("latent exploration needs a VAE (train one with --kind vae)")
        self.model = model
        self.ids, self.labels = list(ids), list(labels)
        self.mu, self.logvar, self.eps = mu.astype(np.float32), logvar.astype(np.float32), eps.astype(np.float32)
        self._pos = {item_id: i for i, item_id in enumerate(self.ids)}

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_pixels(cls, model: LoadedModel, ids, labels, pixels: np.ndarray, batch_size: int = 256) -> "LatentSpace":
        mus, logvars = [], []
        for s in range(0, len(pixels), batch_size):
            mu, logvar = model.posterior(pixels[s:s + batch_size])
            mus.append(mu)
            logvars.append(logvar)
        d = model.latent
        mu = np.concatenate(mus) if mus else np.zeros((0, d), np.float32)
        logvar = np.concatenate(logvars) if logvars else np.zeros((0, d), np.float32)
        return cls(model, ids, labels, mu, logvar, pixel_epsilon(pixels, d, int(model.config.get("seed", 0))))

    @classmethod
    def build(cls, cat, model_name: str, progress: bool = True, kind: str = "vae") -> "LatentSpace":
        """Place every item of catalog ``cat`` in the space of ``vae:NAME`` (from its pixels) or
        ``hvae:NAME`` (from its base-encoder vectors); cached in the model dir."""
        if kind == "hvae":
            model = HybridModel.open(model_name, home=cat.home)
        else:
            model = LoadedModel.open("vae", model_name, home=cat.home)
        transform, transform_key = pixel_transform(getattr(model, "preprocess", "pad"))  # hybrids: padded photos
        data = catalog_pixels(cat, model.image_size, progress=progress, transform=transform, transform_key=transform_key)
        key = model.weights_hash + (f"|{transform_key}" if transform_key else "")
        if kind == "hvae":  # the base vectors feed the posterior: re-indexing them invalidates the cache
            info = cat.encoder_info(model.base)
            key += f"|{info['version'] if info else None}"
        stamp = digest(key, data.ids)
        cache = model.dir / f"latents-{cat.name}.npz"
        cached = read_cache(cache, stamp)
        if cached is not None:
            z = cached.arrays
            return cls(model, cached.meta["ids"], cached.meta["labels"], z["mu"], z["logvar"], z["eps"])
        if kind == "hvae":
            space = cls._from_features(cat, model, data)
        else:
            space = cls.from_pixels(model, data.ids, data.labels, data.pixels)
        write_cache(cache, stamp, {"mu": space.mu, "logvar": space.logvar, "eps": space.eps},
                    {"ids": list(space.ids), "labels": list(space.labels)})
        return space

    @classmethod
    def _from_features(cls, cat, model, data) -> "LatentSpace":
        """Hybrid: semantic µ, log σ² from the catalog's stored base vectors (+ appearance dimensions
        from the pixels when the model has them); ε from each item's pixels."""
        vec_ids, matrix = cat.vectors(model.base)
        row = {item_id: i for i, item_id in enumerate(vec_ids)}
        keep = [i for i, item_id in enumerate(data.ids) if item_id in row]
        mu, logvar = model.posterior(matrix[[row[data.ids[i]] for i in keep]], data.pixels[keep])
        eps = pixel_epsilon(data.pixels[keep], model.latent, int(model.config.get("seed", 0)))
        return cls(model, [data.ids[i] for i in keep], [data.labels[i] for i in keep], mu, logvar, eps)

    # -- per-item values ----------------------------------------------------------------------
    @property
    def sigma(self) -> np.ndarray:
        return np.exp(0.5 * self.logvar)

    @property
    def z(self) -> np.ndarray:
        return self.mu + self.sigma * self.eps

    @property
    def dim(self) -> int:
        return self.model.latent

    def item(self, item_id: str) -> dict:
        """µ, σ, ε and z of one item (lists, JSON-ready)."""
        if item_id not in self._pos:
            raise KeyError(f"unknown item id {item_id!r}")
        i = self._pos[item_id]
        return {"id": item_id, "label": self.labels[i], "mu": self.mu[i].tolist(), "sigma": self.sigma[i].tolist(),
                "eps": self.eps[i].tolist(), "z": self.z[i].tolist()}

    def stats(self) -> list[dict]:
        """Per dimension over the catalog's µ: mean, std, min, max (slider ranges and defaults)."""
        if len(self.mu) == 0:
            raise ValueError("no items in the latent space")
        return [{"dim": j, "mean": float(self.mu[:, j].mean()), "std": float(self.mu[:, j].std()),
                 "min": float(self.mu[:, j].min()), "max": float(self.mu[:, j].max())} for j in range(self.dim)]

    def aggregate_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`aggregate_posterior` of the catalog's items: (mean, Cholesky factor L)."""
        return aggregate_posterior(self.mu, self.logvar)

    def sample(self, n: int = 1, seed: int | None = None, prior: str = "aggregate") -> np.ndarray:
        """(n, dim) float32 latent points: ``aggregate`` (default) draws from :meth:`aggregate_prior`,
        ``standard`` from the VAE's N(0, I). ValueError for another prior or n < 1."""
        if n < 1:
            raise ValueError("n must be >= 1")
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
        s = np.random.default_rng(seed).standard_normal((n, self.dim))
        if prior == "standard":
            return s.astype(np.float32)
        mean, chol = self.aggregate_prior()
        return (mean + s @ chol.T).astype(np.float32)

    # -- generation ---------------------------------------------------------------------------
    def check_vector(self, vector) -> np.ndarray:
        v = np.asarray(vector, np.float32).ravel()
        if v.shape[0] != self.dim:
            raise ValueError(f"a latent vector needs {self.dim} values, got {v.shape[0]}")
        if not np.isfinite(v).all():
            raise ValueError("latent values must be finite numbers")
        return v

    def decode(self, vector, size: int | None = None) -> Image.Image:
        """One latent vector -> one RGB image (optionally upscaled to ``size``)."""
        img = Image.fromarray(self.model.decode(self.check_vector(vector)[None])[0])
        return img.resize((size, size), Image.BICUBIC) if size and size != img.width else img

    def nearest(self, vector, k: int = 10, mode: str = "mu") -> list[SearchResult]:
        """Real items closest to a latent point: Euclidean to µ or z (metric ``l2``), or by
        log N(point | µ_i, σ_i²) (``loglik``); scores and distances from lookalike.index.distances.
        The space holds no image paths: ``path`` is None."""
        v = self.check_vector(vector)
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(SEARCH_MODES)}")
        if mode == "loglik":
            metric, gallery = "loglik", np.concatenate([self.mu, self.logvar], 1)
        else:
            metric, gallery = "l2", self.mu if mode == "mu" else self.z
        distances, rows = exact_knn(v[None], gallery, k, metric)
        scores = distance_to_score(distances[0], metric)
        return [SearchResult(rank=r + 1, id=self.ids[i], score=float(scores[r]), distance=float(distances[0, r]),
                             label=self.labels[i]) for r, i in enumerate(rows[0]) if i >= 0]

    def explore(self, values, k: int = 8, mode: str = "mu", size: int | None = None):
        """Slider values -> (decoded image, nearest real items)."""
        return self.decode(values, size), self.nearest(values, k, mode)

    def interpolation_path(self, id_a: str, id_b: str, steps: int = 8) -> np.ndarray:
        """(max(2, steps), dim) float32 points on the straight line from item a's µ to item b's µ,
        both ends included. KeyError for an unknown id."""
        a, b = (self.mu[self._index(i)] for i in (id_a, id_b))
        ts = np.linspace(0.0, 1.0, max(2, steps), dtype=np.float32)
        return (1 - ts)[:, None] * a + ts[:, None] * b

    def interpolate(self, id_a: str, id_b: str, steps: int = 8, size: int | None = None) -> list[Image.Image]:
        """Decoded images along ``interpolation_path`` (both ends included), each resized (bicubic)
        to ``size`` square when given."""
        frames = [Image.fromarray(f) for f in self.model.decode(self.interpolation_path(id_a, id_b, steps))]
        return [f.resize((size, size), Image.BICUBIC) for f in frames] if size else frames

    def traversal(self, steps: int = 9, dims: Sequence[int] | None = None, base=None) -> np.ndarray:
        """(len(dims), steps, S, S, 3): each dimension swept from its catalog min to max, the others
        held at ``base`` (default: the catalog mean)."""
        stats = self.stats()
        dims = list(range(self.dim)) if dims is None else list(dims)
        base = self.mu.mean(0) if base is None else self.check_vector(base)
        rows = []
        for j in dims:
            points = np.repeat(base[None], steps, 0)
            points[:, j] = np.linspace(stats[j]["min"], stats[j]["max"], steps)
            rows.append(self.model.decode(points))
        return np.stack(rows)

    def traversal_grid(self, path, steps: int = 9, dims: Sequence[int] | None = None, scale: int = 1) -> Path:
        """Write the traversal as a PNG: one row per dimension (labelled), min on the left."""
        dims = list(range(self.dim)) if dims is None else list(dims)
        cells = self.traversal(steps, dims)
        return array_grid(cells, path, [f"z{j}" for j in dims], scale)

    def interpolation_strip(self, id_a: str, id_b: str, path, steps: int = 8, scale: int = 2) -> Path:
        frames = np.stack([np.asarray(f) for f in self.interpolate(id_a, id_b, steps)])
        return array_grid(frames[None], path, [""], scale)

    def _index(self, item_id: str) -> int:
        if item_id not in self._pos:
            raise KeyError(f"unknown item id {item_id!r}")
        return self._pos[item_id]


def trained_on(kind: str, name: str, home=None) -> str | None:
    """The catalog the ``kind:name`` model (``vae``/``hvae``) was trained on, as recorded in its
    config.json (None when not recorded). FileNotFoundError naming the training command when there
    is no such model; ValueError for an unreadable config or unsafe name."""
    config = model_dir(kind, name, home) / CONFIG_FILE
    if not config.exists():
        raise FileNotFoundError(f"no trained model {kind}:{name} (train one with `lookalike train autoencoder`)")
    return json.loads(config.read_text()).get("catalog")


def latent_model(spec: str, home=None) -> tuple[str, str, str | None]:
    """A latent-explorer model spec ``vae:NAME`` / ``hvae:NAME`` -> (kind, name, the catalog it was
    trained on or None, see :func:`trained_on`). ValueError for a malformed spec or another kind
    ("--model expects vae:NAME or hvae:NAME"), FileNotFoundError when there is no such model."""
    parsed = EncoderSpec.parse(spec)
    if parsed.kind not in ("vae", "hvae") or not parsed.name:
        raise ValueError("--model expects vae:NAME or hvae:NAME")
    return parsed.kind, parsed.name, trained_on(parsed.kind, parsed.name, home)


def parse_vector(text: str) -> np.ndarray:
    """'0.1,-2,3e-1' -> float32 array; a clear error on anything else."""
    try:
        return np.array([float(x) for x in text.replace(" ", "").split(",") if x != ""], np.float32)
    except ValueError:
        raise ValueError(f"not a comma-separated list of numbers: {text!r}") from None
