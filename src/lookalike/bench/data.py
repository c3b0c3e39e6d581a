"""Benchmark vectors: a catalog's real embeddings, grown to a target size by the fitted generator.

Queries are real embeddings held out from both the index and the generator's fit, so recall is
measured on real queries against a realistic (real + generated) base. Grown sets are cached under
``<cache>/`` (1M x 1280 float32 is 5 GB: generating it takes minutes, loading it seconds).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lookalike.index.distances import l2_normalize
from lookalike.bench.vectors import EmbeddingGenerator, structure_report


@dataclass
class BenchVectors:
    base: np.ndarray          # (n, dim) float32, L2-normalised (cosine)
    queries: np.ndarray       # (q, dim) real held-out vectors
    real_count: int           # how many rows of base are real embeddings
    structure: dict | None = None   # real vs generated structure figures


def real_vectors(cat, encoder: str | None = None, minimum: int = 100) -> np.ndarray:
    """(n, dim) float32 copy of ``cat``'s vectors for ``encoder`` (default: the catalog's), the seed
    of the generator; ValueError when there are fewer than ``minimum``."""
    _, matrix = cat.vectors(encoder)
    if len(matrix) < minimum:
        raise ValueError(f"catalog {cat.name!r} has {len(matrix)} vectors; the generator needs at least "
                         f"{minimum} real ones")
    return np.asarray(matrix, np.float32)


def split_real(real: np.ndarray, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit/base part, held-out queries) of the real vectors, shuffled reproducibly."""
    order = np.random.default_rng(seed).permutation(len(real))
    queries = min(queries, len(real) // 5)
    return real[order[queries:]], real[order[:queries]]


def bench_vectors(real: np.ndarray, n: int, queries: int = 200, cache: Path | None = None,
                  seed: int = 0, with_structure: bool = False) -> BenchVectors:
    """``n`` base vectors (all real ones first, then generated) and real held-out queries."""
    fit, held_out = split_real(np.asarray(real, np.float32), queries, seed)
    key = hashlib.sha1(fit[:, :16].tobytes()).hexdigest()[:10]
    path = Path(cache) / f"base-{key}-{n}.npy" if cache else None
    if path is not None and path.exists():
        # memory-mapped, read-only: 1M x 1525 float32 is 6.1 GB, never copied into RAM
        base = np.load(path, mmap_mode="r")
    else:
        base = _grow_into(fit, n, path, seed)
    structure = None
    if with_structure and n > len(fit):
        generated = base[len(fit):len(fit) * 2]
        structure = {"real": structure_report(fit, sample=1000), "generated": structure_report(generated, sample=1000)}
    return BenchVectors(base, held_out, min(n, len(fit)), structure)


def _grow_into(fit: np.ndarray, n: int, path: Path | None, seed: int, chunk: int = 50_000) -> np.ndarray:
    """``fit`` then generated rows up to ``n``, L2-normalised, written chunk by chunk straight into
    an ``.npy`` memmap at ``path`` (renamed into place when complete): one copy, on disk, ever.
    Without ``path`` the rows are built in memory."""
    dim = fit.shape[1]
    if path is None:
        out = np.empty((max(n, 0), dim), np.float32)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(max(n, 0), dim))
    take = min(n, len(fit))
    out[:take] = fit[:take]
    if n > take:
        generator = EmbeddingGenerator(seed=seed).fit(fit)
        rng = np.random.default_rng(seed + 1)
        for start in tqdm(range(take, n, chunk), desc="generating vectors", unit="chunk", leave=False):
            stop = min(start + chunk, n)
            out[start:stop] = generator.sample(stop - start, seed=int(rng.integers(2**31)))
    l2_normalize(out, inplace=True)
    if path is None:
        return out
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")
