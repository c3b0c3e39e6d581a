"""Where catalogs live and the limits every entry point shares."""
from __future__ import annotations

import os
import re
from pathlib import Path

# Colour-aware by default: shoppers mean "same kind and same colour" by "like this". The default
# decision (README "Quality without labels", `python -m lookalike.bench.studies.label_free`): on
# clothing-small (3,781 photos, leave-one-out) colour weight 0.1 in the stored vectors, searched with
# the catalog's mean removed from both parts (centre=1, lookalike.search.whitening), αQE (15) + DBA (20)
# at α = 2 on the CNN part, and the colour part re-ordering the CNN part's first 10 hits at weight 0.2
# (window=10,colour=0.2: lookalike.search.expansion.ColourWindow); see the README for the measured rows
# against the former defaults and the colour-blind "effnet-lite0".
# A catalog keeps the encoder it was first indexed with; `lookalike tune` records its own choice.
DEFAULT_ENCODER = "effnet-lite0-colour:0.1"
# Search-time re-ranking when a catalog records none (lookalike.search.expansion: centring, αQE / DBA,
# the colour window; "none" = plain nearest neighbours). Centred cosines are smaller than raw ones,
# hence α = 2 (not 3): at α = 3 the neighbours' weights all but vanish. The CNN part alone picks αQE's
# neighbours and the order past the window (the colour part cannot pull in another kind of product);
# scores are 0.8·cos_cnn + 0.2·cos_colour of the centred, expanded vectors inside the window.
DEFAULT_EXPANSION = "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.2"
# The encoder kinds DEFAULT_EXPANSION was measured on (lite2: README "Quality without labels");
# others search plainly unless told (--rerank, tune).
DEFAULT_EXPANSION_KINDS = ("effnet-lite0", "effnet-lite0-colour", "effnet-lite2")
# int8 chosen automatically at first index (lookalike.catalog.Catalog.index, lookalike.evaluation.int8):
# only for sources of at least INT8_MIN_ROWS rows (below that calibrating costs more time than int8
# saves), calibrated on INT8_CALIBRATION of the catalog's images, checked on INT8_CHECK_ITEMS others.
INT8_MIN_ROWS = int(os.environ.get("LOOKALIKE_INT8_MIN_ROWS", 1000))
INT8_CALIBRATION = 64
INT8_CHECK_ITEMS = 300
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
