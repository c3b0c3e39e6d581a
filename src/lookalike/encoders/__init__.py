"""Encoders (inference only) and their registry: ``get_encoder("effnet-lite0")``, ``get_encoder("vae:shoes@z")``.

Interface: :class:`Encoder` (``preprocess`` + ``encode_batch`` -> (n, dim) float32, ``fingerprint``).
An encoder is named by one spec grammar, ``kind[:name][@mode][,key=value…]``, parsed only by
:class:`lookalike.encoders.spec.EncoderSpec` (docs/encoders.md)::

    effnet-lite0                              kind only (defaults)
    effnet-lite0:pool=gem,resize=pad          options (with no name/mode the first follows ':')
    effnet-lite0,runtime=onnx-int8            the same grammar, written ``effnet-lite0:runtime=onnx-int8``
    effnet-lite0:/path/to/weights.pth,flip=1  name = a weights file, then options
    effnet-lite0-colour:0.3                   name = the colour weight
    vae:shoes@loglik                          name = a trained model, mode = how it retrieves
    metric:clothing,runtime=torch             trained metric head, backbone run with torch
    onnx:/models/dinov2.onnx,pool=cls         your own ONNX image model (docs/byo-model.md)
    finetuned:clothing-label,runtime=onnx-int8  fine-tuned backbone + head (train finetune / adapt)

Modules register a factory per kind with :func:`register`; :func:`get_encoder` parses the spec and
calls ``factory(spec: EncoderSpec, home=..., catalog=..., **options)``, where ``options`` are the
caller's keyword options (they override the spec's ``options`` of the same key) and the factory
names its encoder ``str(spec)`` (the canonical spec, stored with the vectors).

Adding an encoder kind (say ``grey``) takes three edits; ``@register`` alone is not enough, because
encoder modules are imported only when a spec of theirs is asked for (keeps ``import lookalike`` light):

1. a module, e.g. ``lookalike/encoders/grey.py``, with an :class:`Encoder` subclass and
   ``@register("grey", "one-line description")`` on its factory ``def grey(spec, home=None, catalog=None, **options)``;
2. an entry ``"grey": "lookalike.encoders.grey"`` in ``_LAZY_MODULES`` below (without it
   ``get_encoder("grey")`` raises KeyError; tests/encoders/test_encoders.py checks that every
   registered kind is listed under the module that registers it);
3. a case ``"grey": "grey"`` (one per mode/option worth checking) in ``SPECS`` of
   tests/encoders/test_encoder_contract.py, which fails until every kind in ``_LAZY_MODULES`` has one.

Modules: ``base`` (the interface), ``spec`` (the grammar), ``classical`` and ``colour`` (no model),
``runtime`` (torch / ONNX fp32 / fp16 / int8 runner), ``pretrained`` (EfficientNet-Lite0/1/2),
``autoencoder``, ``hybrid``, ``metric``, ``finetuned`` (trained models, loaded from their folders), ``byo``
(``onnx:/path/model.onnx``: your own model exported to ONNX).
"""
from __future__ import annotations

import importlib
from typing import Callable

from lookalike.encoders.base import Encoder
from lookalike.encoders.spec import EncoderSpec

_FACTORIES: dict[str, Callable[..., Encoder]] = {}
_DESCRIPTIONS: dict[str, str] = {}
# kind -> the module that @register-s it, imported the first time a spec of that kind is asked for
# (keeps `import lookalike` light). The one list of kinds: a new kind goes here (see above).
_LAZY_MODULES = {
    "metric": "lookalike.encoders.metric",
    "finetuned": "lookalike.encoders.finetuned",
    "effnet-lite0": "lookalike.encoders.pretrained",
    "effnet-lite0-colour": "lookalike.encoders.pretrained",
    "effnet-lite1": "lookalike.encoders.pretrained",
    "effnet-lite2": "lookalike.encoders.pretrained",
    "colour-hist": "lookalike.encoders.classical",
    "tiny": "lookalike.encoders.classical",
    "ae": "lookalike.encoders.autoencoder",
    "vae": "lookalike.encoders.autoencoder",
    "hvae": "lookalike.encoders.hybrid",
    "onnx": "lookalike.encoders.byo",
}
_CACHE: dict[tuple, Encoder] = {}


def register(kind: str, description: str = ""):
    """Decorator on a kind's factory: ``@register("vae", "convolutional VAE trained on a catalog")``.
    The registering module must also be listed in ``_LAZY_MODULES`` (see the module docstring)."""

    def wrap(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _FACTORIES[kind] = factory
        _DESCRIPTIONS[kind] = description
        return factory

    return wrap


def get_encoder(spec: str | EncoderSpec, *, home=None, catalog: str | None = None, **options) -> Encoder:
    """Build (or reuse) the encoder named by ``spec`` (a string or :class:`EncoderSpec`).
    ``home``/``catalog`` let trained-model factories find their files; options are passed to the
    factory. Raises ValueError for a malformed spec or option, KeyError for an unknown kind."""
    parsed = EncoderSpec.parse(spec)
    kind = parsed.kind
    if kind not in _FACTORIES and kind in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[kind])
    if kind not in _FACTORIES:
        raise KeyError(f"unknown encoder {str(spec)!r}; available: {', '.join(available())}")
    key = (str(parsed), str(home), catalog, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = _FACTORIES[kind](parsed, home=home, catalog=catalog, **options)
    return _CACHE[key]


def clear_cache() -> None:
    """Forget the encoders :func:`get_encoder` built, so the next call reloads their models (e.g.
    after a model was trained again under the same name in this process)."""
    _CACHE.clear()


def available() -> list[str]:
    return sorted(set(_FACTORIES) | set(_LAZY_MODULES))


def describe() -> dict[str, str]:
    for module in set(_LAZY_MODULES.values()):
        try:
            importlib.import_module(module)
        except ImportError:  # optional extra not installed
            pass
    return {k: _DESCRIPTIONS.get(k, "") for k in available()}


__all__ = ["Encoder", "EncoderSpec", "get_encoder", "clear_cache", "register", "available", "describe"]
