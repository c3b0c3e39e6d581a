"""Realistic synthetic embeddings for scale benchmarks: a generator fitted to real vectors.

Uniform random vectors are a worst case for approximate search (no clusters, full intrinsic
dimension) and say nothing about real recall. ``EmbeddingGenerator`` instead fits the real
embeddings of a catalog and samples new ones with the same structure:

* the mean and a PCA basis of ``n_components`` directions (where nearly all variance lives),
* a Gaussian mixture (``n_clusters`` components, diagonal covariances) in that PCA space, so the
  cluster structure (product types, colours) is kept,
* isotropic noise in the remaining directions with the real residual variance, so the full
  dimension and the norm distribution match.

``structure_report`` measures what matters for search on both sets: the TwoNN intrinsic dimension
(Facco et al. 2017), the PCA dimension holding 90 % of the variance, and the relative contrast
(mean distance / nearest-neighbour distance).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from lookalike.index.distances import exact_knn, l2_normalize


@dataclass
class EmbeddingGenerator:
    n_components: int = 192       # PCA directions modelled by the mixture
    n_clusters: int = 192         # at most n/20 (each cluster needs points for its covariance)
    covariance: str = "full"      # within-cluster correlations keep the local dimension low
    max_rank: int = 512           # further PCA directions sampled independently
    reg: float = 0.05             # covariance regularisation, relative to the last modelled variance
    seed: int = 0

    def fit(self, vectors: np.ndarray) -> "EmbeddingGenerator":
        # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        x = np.asarray(vectors, np.float32)
        n, dim = x.shape
        self.pca_ = PCA(n_components=min(n - 1, dim, self.max_rank), random_state=self.seed).fit(x)
        z = self.pca_.transform(x)
        k = min(self.n_components, z.shape[1])
        clusters = max(1, min(self.n_clusters, n // 20))
        # Regularise relative to the data's scale (normalised embeddings have tiny per-dim variance;
        # an absolute reg_covar would blur every cluster into all k dimensions).
        reg = self.reg * float(self.pca_.explained_variance_[k - 1])
        self.gmm_ = GaussianMixture(clusters, covariance_type=self.covariance, reg_covar=reg,
                                    random_state=self.seed).fit(z[:, :k])
        self.k_ = k
        # Directions after the first k: independent, each with its own (real) variance.
        self.tail_std_ = np.sqrt(self.pca_.explained_variance_[k:]).astype(np.float32)
        residual = x - self.pca_.inverse_transform(z)
        # Whatever the PCA rank could not hold: spread evenly over the remaining directions.
        self.residual_std_ = float(np.sqrt((residual ** 2).sum(1).mean() / max(dim - z.shape[1], 1)))
        self.dim_ = dim
        return self

    def sample(self, n: int, seed: int | None = None, chunk: int = 50_000) -> np.ndarray:
        """(n, dim) float32 vectors with the fitted structure; generated in chunks (1M x 1280 = 5 GB)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        out = np.empty((n, self.dim_), np.float32)
        basis = self.pca_.components_.astype(np.float32)            # (rank, dim), orthonormal rows
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            # GaussianMixture.sample draws from its own random_state: reseed it per chunk.
            self.gmm_.random_state = np.random.RandomState(int(rng.integers(2**31)))
            with warnings.catch_warnings():  # near-singular cluster covariances are expected
                warnings.simplefilter("ignore", RuntimeWarning)
                head, _ = self.gmm_.sample(m)
            head = head[rng.permutation(m)]                          # gmm.sample groups by component
            tail = rng.standard_normal((m, len(self.tail_std_)), dtype=np.float32) * self.tail_std_
            z = np.concatenate([head.astype(np.float32), tail], axis=1)
            noise = rng.standard_normal((m, self.dim_), dtype=np.float32) * self.residual_std_
            noise -= (noise @ basis.T) @ basis                       # keep the noise off the PCA span
            out[start:start + m] = self.pca_.mean_ + z @ basis + noise
        return out


def grow(real: np.ndarray, n: int, seed: int = 0, **params) -> np.ndarray:
    """``real`` followed by ``n - len(real)`` generated vectors fitted on it (all float32)."""
    real = np.asarray(real, np.float32)
    if n <= len(real):
        return real[:n].copy()
    extra = EmbeddingGenerator(seed=seed, **params).fit(real).sample(n - len(real), seed=seed + 1)
    return np.concatenate([real, extra])


def twonn_dimension(vectors: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """TwoNN intrinsic dimension: d = N / sum(log(r2 / r1)) over points' two nearest neighbours."""
    x = l2_normalize(vectors)
    rng = np.random.default_rng(seed)
    queries = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)]
    dist, _ = exact_knn(queries, x, 3, "l2")           # self, first and second neighbour
    r1, r2 = dist[:, 1], dist[:, 2]
    keep = r1 > 1e-6                                    # exact duplicates carry no information
    mu = r2[keep] / r1[keep]
    return float(keep.sum() / np.log(mu).sum())


def structure_report(vectors: np.ndarray, sample: int = 2000, seed: int = 0) -> dict:
    """Figures to compare a generated set with the real one it was fitted on."""
    x = l2_normalize(vectors)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    centred = x[idx] - x[idx].mean(0)
    eig = np.linalg.svd(centred, compute_uv=False) ** 2
    pca90 = int(np.searchsorted(np.cumsum(eig) / eig.sum(), 0.9) + 1)
    dist, _ = exact_knn(x[idx], x, 11, "cosine")       # self, then 10 neighbours
    nn_dist = dist[:, 1]
    mean_dist = float(1 - (x[idx] @ x[idx].T).mean())
    return {"n": len(x), "twonn_dim": round(twonn_dimension(vectors, sample, seed), 1), "pca_dim_90": pca90,
            "mean_cos_dist": round(mean_dist, 3), "nn1_cos_dist": round(float(np.median(nn_dist)), 3),
            "nn10_cos_dist": round(float(np.median(dist[:, 10])), 3),
            "relative_contrast": round(mean_dist / max(float(np.median(nn_dist)), 1e-9), 2)}
