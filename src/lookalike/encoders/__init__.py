"""Encoder registry: ``get_encoder("effnet-lite0")``, ``get_encoder("vae:mymodel")``.

A spec is ``KIND`` or ``KIND:ARG`` (ARG is a model name or a weights file). Modules register a
factory per KIND with :func:`register`; factories receive ``(arg, **options)``.
"""
from __future__ import annotations

import importlib
from typing import Callable

from lookalike.encoders.base import Encoder, l2_normalize

_FACTORIES: dict[str, Callable[..., Encoder]] = {}
_DESCRIPTIONS: dict[str, str] = {}
# Modules imported lazily the first time a spec of theirs is asked for (keeps `import lookalike` light).
_LAZY_MODULES = {
    "metric": "lookalike.encoders.metric",
    "effnet-lite0": "lookalike.encoders.pretrained",
    "effnet-lite0-colour": "lookalike.encoders.pretrained",
    "colour-hist": "lookalike.encoders.classical",
    "tiny": "lookalike.encoders.classical",
    "ae": "lookalike.encoders.autoencoder",
    "vae": "lookalike.encoders.autoencoder",
    "hvae": "lookalike.encoders.hybrid",
}
_CACHE: dict[tuple, Encoder] = {}


def register(kind: str, description: str = "", module: str | None = None):
    """Decorator: ``@register("vae", "convolutional VAE trained on a catalog")``."""

    def wrap(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _FACTORIES[kind] = factory
        _DESCRIPTIONS[kind] = description
        return factory

    return wrap


def register_lazy(kind: str, module: str) -> None:
    """Declare that ``module`` registers ``kind`` when imported."""
    _LAZY_MODULES.setdefault(kind, module)


def _split(spec: str) -> tuple[str, str | None]:
    kind, _, arg = spec.partition(":")
    return kind.strip(), (arg.strip() or None)


def get_encoder(spec: str, *, home=None, catalog: str | None = None, **options) -> Encoder:
    """Build (or reuse) the encoder named by ``spec``. ``home``/``catalog`` let trained-model
    factories find their files; options are passed to the factory."""
    kind, arg = _split(spec)
    if kind not in _FACTORIES and kind in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[kind])
    if kind not in _FACTORIES:
        raise KeyError(f"unknown encoder {spec!r}; available: {', '.join(available())}")
    key = (spec, str(home), catalog, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = _FACTORIES[kind](arg, home=home, catalog=catalog, **options)
    return _CACHE[key]


def available() -> list[str]:
    return sorted(set(_FACTORIES) | set(_LAZY_MODULES))


def describe() -> dict[str, str]:
    for module in set(_LAZY_MODULES.values()):
        try:
            importlib.import_module(module)
        except ImportError:  # optional extra not installed
            pass
    return {k: _DESCRIPTIONS.get(k, "") for k in available()}


__all__ = ["Encoder", "get_encoder", "register", "register_lazy", "available", "describe", "l2_normalize"]
