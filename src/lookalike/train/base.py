"""The contract every learned component follows, and where its files live.

A learned component (autoencoder, hybrid VAE, metric heads, probe, clusters, goes-with map, 2-D map)
is built from a config dataclass, learns with ``fit(...) -> self``, writes itself with
``save(directory) -> directory`` and comes back with ``Component.load(directory)``, giving the same
outputs as before it was saved (``tests/train/test_contract.py`` checks this in a fresh process).
``save`` writes ``config.json`` atomically: ``{"kind", "version", "config": asdict(config), ...}``
(older models without a version read as version 0); ``load`` refuses a newer version than it knows.

Where the folder is:

* models you name and reuse across catalogs: ``model_dir(kind, name, home)`` =
  ``<home>/models/<kind>/<name>/`` (``ae``, ``vae``, ``hvae``, ``metric``, ``probe``, ``onnx``),
  defined in :mod:`lookalike.config` (so the inference encoders can find models) and re-exported here;
* artifacts derived from one catalog's vectors (clusters, the 2-D map, the goes-with map), which are
  only meaningful next to that catalog's items: ``artifact_dir(catalog_dir, kind)`` =
  ``<catalog>/artifacts/<kind>/`` (deleting a catalog deletes them).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from lookalike.config import check_name, model_dir
from lookalike.data.artifacts import write_json

__all__ = ["CONFIG_FILE", "Learned", "artifact_dir", "model_dir", "read_config", "save_config"]

CONFIG_FILE = "config.json"

T = TypeVar("T", bound="Learned")


@runtime_checkable
class Learned(Protocol):
    """What every learned component provides (structural: no base class needed)."""

    kind: ClassVar[str]       # models/<kind>/ or artifacts/<kind>/, and config.json's "kind"
    version: ClassVar[int]    # bumped when the saved format changes
    config: Any               # a dataclass of the hyper-parameters

    def fit(self, *data, **options) -> "Learned": ...

    def save(self, directory: Path) -> Path: ...

    @classmethod
    def load(cls: type[T], directory: Path) -> T: ...


def artifact_dir(catalog_dir: str | os.PathLike, kind: str) -> Path:
    """``<catalog_dir>/artifacts/<kind>/`` (not created): catalog-derived learned artifacts."""
    return Path(catalog_dir) / "artifacts" / check_name(kind, "artifact kind")


def save_config(directory: Path, kind: str, version: int, config: Any = None, **extra: Any) -> Path:
    """Write ``directory/config.json`` atomically: ``{"kind", "version", "config": config, **extra}``.
    ``config`` is a dataclass (stored as its dict) or a dict; ``extra`` keys sit at the top level."""
    body = asdict(config) if is_dataclass(config) else dict(config or {})
    return write_json(Path(directory) / CONFIG_FILE, {**extra, "kind": kind, "version": version, "config": body},
                      indent=2, default=str)


def read_config(directory: Path, kind: str | tuple[str, ...], version: int, hint: str = "") -> dict:
    """The parsed ``config.json`` of a saved component. FileNotFoundError when there is none (with
    ``hint`` on how to make one), ValueError when it is of another kind or a newer version."""
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"no saved model in {directory}" + (f" ({hint})" if hint else ""))
    doc = json.loads(path.read_text())
    kinds = (kind,) if isinstance(kind, str) else kind
    if doc.get("kind", kinds[0]) not in kinds:
        raise ValueError(f"{path} holds a {doc['kind']!r} model, not {' or '.join(map(repr, kinds))}")
    if int(doc.get("version", 0)) > version:
        raise ValueError(f"{path} was saved by a newer lookalike (format {doc['version']}, this one reads "
                         f"up to {version}); upgrade lookalike")
    return doc


# A learned encoder may record the search-time re-ranking measured best on its validation items
# (``lookalike train finetune`` does): ``<model folder>/expansion.json``, ``{"expansion": "qe=2,dba=3", ...}``.
# Kept out of config.json, which names the model's identity: a re-ranking changes no vector.
EXPANSION_FILE = "expansion.json"


def recorded_expansion(kind: str, name: str, home=None) -> str | None:
    """The re-ranking (``"qe=2,dba=3"``, ``"none"``; :mod:`lookalike.search.expansion`) model ``name``
    of ``kind`` recorded in :data:`EXPANSION_FILE`; None when it recorded none, the name is not a
    valid model name or there is no such model. Reads one small file (no model loaded)."""
    try:
        return str(json.loads((model_dir(kind, name, home) / EXPANSION_FILE).read_text())["expansion"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

