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


def staleness(cat, ids, encoder: str | None, command: str) -> dict:
    """How far a stored explore result (its item ``ids``) is behind the catalog: ``added_since``
    (items with ``encoder`` vectors it does not show), ``removed_since`` (its items gone since) and a
    ``stale`` sentence naming the ``command`` that reruns it (None while it is current) — so the API
    and web panels say "12 items added since; rerun" instead of silently showing an old result."""
    have, _ = cat.vectors(encoder or cat.default_encoder)
    shown, present = set(ids), set(have)
    added, removed = len(present - shown), len(shown - present)
    parts = [f"{n} item{'s' if n != 1 else ''} {what} since" for n, what in ((added, "added"), (removed, "removed")) if n]
    stale = f"{' and '.join(parts)} this was computed: rerun `{command}`" if parts else None
    return {"added_since": added, "removed_since": removed, "stale": stale}


def stored(cat, encoder: str | None = None) -> dict[str, bool]:
    """Which stored explore results exist for ``cat`` and ``encoder`` (default: the catalog's):
    ``latent`` a VAE trained on the catalog (``Catalog.trained_model("vae")``), ``clusters`` and
    ``map`` the latest ``lookalike cluster`` / ``lookalike map`` run."""
    return {"latent": cat.trained_model("vae") is not None,
            "clusters": latest_file(cat, "clusters", encoder).exists(),
            "map": latest_file(cat, "map", encoder).exists()}
