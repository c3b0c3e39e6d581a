"""train.device: the one device choice and thread setting every trainer uses."""
import pytest
import torch

from lookalike.train.device import resolve_device, training_threads


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_training_threads_sets_then_restores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("LOOKALIKE_THREADS", raising=False)
    with training_threads(default=1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with training_threads():  # no env, no default: torch's own count
        assert torch.get_num_threads() == before
    monkeypatch.setenv("LOOKALIKE_THREADS", "2")

    @training_threads(default=1)
    def inside():
        return torch.get_num_threads()

    assert inside() == 2 and torch.get_num_threads() == before
