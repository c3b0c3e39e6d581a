"""Where catalogs live and the limits every entry point shares."""
from __future__ import annotations

import os
import re
from pathlib import Path

# Colour-aware by default: shoppers mean "same kind and same colour" by "like this". On clothing-small
# fusing a colour histogram (weight 0.2) raised same-label-and-same-colour P@1 from 0.316 to 0.443
# for a 0.016 drop in same-label P@1 (docs/encoders.md). "effnet-lite0" is the colour-blind variant.
DEFAULT_ENCODER = "effnet-lite0-colour"
# Search-time re-ranking when a catalog records none (lookalike.search.expansion: αQE / DBA;
# "none" = plain nearest neighbours). `lookalike tune` records a per-catalog choice.
DEFAULT_EXPANSION = "none"
# Decompression-bomb guard: refuse images above this many pixels (about 8k x 8k).
MAX_IMAGE_PIXELS = int(os.environ.get("LOOKALIKE_MAX_PIXELS", 64_000_000))
# Upload cap for the HTTP API (bytes).
MAX_UPLOAD_BYTES = int(os.environ.get("LOOKALIKE_MAX_UPLOAD_BYTES", 10 * 1024 * 1024))

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """Resolve the lookalike home: explicit argument, then $LOOKALIKE_HOME, then ~/.lookalike."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("LOOKALIKE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".lookalike"


def model_dir(kind: str, name: str, home: str | os.PathLike | None = None) -> Path:
    """The folder of a named learned model: ``<home>/models/<kind>/<name>/`` (not created).

    The one model-folder helper (``ae``, ``vae``, ``hvae``, ``metric``, ``probe``, ``onnx``...), defined
    here, the lowest layer, so inference encoders can find what ``lookalike.train`` saved; the contract
    it belongs to is described in :mod:`lookalike.train.base`. ValueError for an unsafe kind or name."""
    return home_dir(home) / "models" / check_name(kind, "model kind") / check_name(name, "model")


def check_name(name: str, what: str = "catalog") -> str:
    """Names become directory names: keep them to a safe alphabet."""
    if not _NAME_RE.match(name or ""):
        raise ValueError(
            f"invalid {what} name {name!r}: use letters, digits, '_', '-', '.' (max 64, no leading dot)"
        )
    return name


def torch_threads() -> int | None:
    """Threads for torch/onnxruntime, from $LOOKALIKE_THREADS (None = library default)."""
    value = os.environ.get("LOOKALIKE_THREADS")
    return int(value) if value else None
