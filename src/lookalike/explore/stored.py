"""What the explore commands have stored for a catalog, answered from file checks alone (no vectors
read, no torch imported), so ``Catalog.features`` and ``/api/health`` can ask on every call.

    stored(cat)  # {"latent": True, "clusters": False, "map": False}
"""
from __future__ import annotations

from pathlib import Path

from lookalike.data.artifacts import encoder_key
from lookalike.train.base import artifact_dir


def latest_file(cat, kind: str, encoder: str | None = None) -> Path:
    """The file the latest ``lookalike cluster`` (``kind="clusters"``) or ``lookalike map``
    (``kind="map"``) run wrote for ``encoder`` (default: the catalog's): ``<catalog>/artifacts/<kind>/<enc>.json``."""
    return artifact_dir(cat.dir, kind) / f"{encoder_key(encoder or cat.default_encoder)}.json"


def stored(cat, encoder: str | None = None) -> dict[str, bool]:
    """Which stored explore results exist for ``cat`` and ``encoder`` (default: the catalog's):
    ``latent`` a VAE trained on the catalog (``Catalog.trained_model("vae")``), ``clusters`` and
    ``map`` the latest ``lookalike cluster`` / ``lookalike map`` run."""
    return {"latent": cat.trained_model("vae") is not None,
            "clusters": latest_file(cat, "clusters", encoder).exists(),
            "map": latest_file(cat, "map", encoder).exists()}
