"""409 answers for the optional panels (explore, latent, shop the look).

A feature that cannot answer yet (a model not trained, clusters or a map not computed, the pose
model's package not installed) becomes a 409 ``feature_unavailable`` whose message says what enables
it, so the web app can show it as an empty state. Which features can answer right now is a library
question: ``Catalog.features()``.

The route modules import their library modules with plain import statements (checked by
tests/test_architecture.py); only ``lookalike.explore.latent`` loads lazily, as it pulls in torch.
"""
from __future__ import annotations

from lookalike.api.errors import FeatureUnavailable


def unavailable(feature: str, reason: str) -> FeatureUnavailable:
    return FeatureUnavailable(f"feature not available ({feature}): {reason}")


def missing_package(feature: str, exc: ImportError) -> FeatureUnavailable:
    """The 409 for a feature whose lazy import failed: names the package that is missing (``exc.name``)
    and how to install it."""
    package = (exc.name or str(exc)).split(".")[0]
    return unavailable(feature, f"{package} is not installed ({exc}): reinstall with `pip install lookalike`, "
                                "which depends on it")
