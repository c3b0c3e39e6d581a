"""The explore and shop routes import their library modules on first use, not when the app starts:
some pull in torch or MediaPipe (seconds), and a server that only searches never needs them.

A missing module (or a model that has not been trained yet) becomes a 501 whose message tells the
user the command that enables the feature, so the web app can show it as an empty state. Which
features can answer right now is a library question: ``Catalog.features()``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from lookalike.api.errors import FeatureUnavailable

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
