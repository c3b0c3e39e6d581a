"""Where and how wide training runs: one device choice and one thread setting for every trainer
(autoencoders, metric heads), so ``--device`` and ``$LOOKALIKE_THREADS`` mean the same everywhere."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from lookalike.config import torch_threads

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when torch sees a GPU, else CPU; ``"cpu"`` / ``"cuda"`` as asked.
    ValueError for any other name, or for ``"cuda"`` without a CUDA device."""
    if device not in DEVICES:
        raise ValueError(f"--device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, not {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


@contextmanager
def training_threads(default: int | None = None):
    """Torch threads for the duration: $LOOKALIKE_THREADS, else ``default`` (None: leave torch's
    own), then back to what they were. Usable as a decorator too."""
    previous = torch.get_num_threads()
    threads = torch_threads() or default
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
