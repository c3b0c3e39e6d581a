"""Optional features live in their own library modules; the API imports them on first use.

A missing module (or a model that has not been trained yet) becomes a 501 whose message tells the
user the command that enables the feature, so the web app can show it as an empty state.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from lookalike.api.errors import FeatureUnavailable
from lookalike.data.artifacts import encoder_key
from lookalike.train.base import artifact_dir

# feature -> (library module, how to enable it)
FEATURES: dict[str, tuple[str, str]] = {
    "latent": ("lookalike.explore.latent",
               "train a VAE with `lookalike train autoencoder --kind vae --catalog NAME`"),
    "clusters": ("lookalike.explore.clusters", "the clustering module is not installed in this build"),
    "map": ("lookalike.explore.projection", "the map module is not installed in this build"),
    "duplicates": ("lookalike.explore.duplicates", "the duplicates module is not installed in this build"),
    "goes_with": ("lookalike.explore.goes_with", "the goes-with module is not installed in this build"),
    "shop": ("lookalike.shop.pipeline", "the shop-the-look module is not installed in this build"),
    "pose": ("lookalike.shop.pose", "the pose detector module is not installed in this build"),
}


def module(feature: str) -> ModuleType:
    """The feature's module, or FeatureUnavailable with a hint."""
    name, hint = FEATURES[feature]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise FeatureUnavailable(f"feature not available ({feature}): {hint} [{exc}]") from None


def unavailable(feature: str, reason: str) -> FeatureUnavailable:
    return FeatureUnavailable(f"feature not available ({feature}): {reason}")


def installed() -> dict[str, bool]:
    out = {}
    for feature, (name, _) in FEATURES.items():
        try:
            out[feature] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            out[feature] = False
    return out


def status(catalog) -> dict[str, bool]:
    """Which panels can answer for ``catalog`` right now: module installed and, where the feature
    reads stored results, those results present. Cheap (file checks only): /api/health uses it."""
    have = installed()
    out = {"goes_with": have["goes_with"] and have["clusters"], "duplicates": have["duplicates"] and have["clusters"]}
    out["latent"] = have["latent"] and catalog.trained_model("vae") is not None
    key = encoder_key(catalog.default_encoder)
    # the files `lookalike cluster` / `lookalike map` write for the catalog's encoder (latest run)
    out["clusters"] = have["clusters"] and (artifact_dir(catalog.dir, "clusters") / f"{key}.json").exists()
    out["map"] = have["map"] and have["clusters"] and (artifact_dir(catalog.dir, "map") / f"{key}.json").exists()
    out["shop"] = have["shop"] and have["pose"] and importlib.util.find_spec("mediapipe") is not None
    return out
