"""Centring / PCA-whitening fitted on a catalog's vectors (lookalike.search.whitening): shapes, the
formulas against numpy, decorrelation, a fused vector's kept block, save -> load, refit rule."""
import subprocess
import sys

import numpy as np
import pytest

from lookalike.search.whitening import REFIT_SHARE, Whitening, WhiteningConfig


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def data(n=200, d=12, seed=0):
    rng = np.random.default_rng(seed)
    # correlated, non-negative features with a large shared component (like pooled ReLU activations)
    mix = rng.normal(size=(d, d))
    return (np.abs(rng.normal(size=(n, d)) @ mix) + 3.0).astype(np.float32)


def test_centring_is_mean_removal_on_unit_rows():
    x = data()
    w = Whitening().fit(x)
    expected = unit(unit(x) - unit(x).mean(axis=0))
    np.testing.assert_allclose(w.transform(x), expected, atol=1e-5)
    assert w.transform(x).dtype == np.float32 and w.transform(x).shape == x.shape
    assert w.transform(x[0]).shape == (1, x.shape[1])   # one vector
    # raw cosines crowd near 1 (the shared component); centred ones spread around 0
    raw = unit(x) @ unit(x).T
    centred = w.transform(x) @ w.transform(x).T
    off = ~np.eye(len(x), dtype=bool)
    assert raw[off].mean() > 0.9 and abs(centred[off].mean()) < 0.05


def test_whitening_decorrelates_and_reduces():
    x = data(n=500)
    w = Whitening(WhiteningConfig(dim=5, power=0.5)).fit(x)
    out = w.transform(x)
    assert out.shape == (500, 5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # before the final row normalisation the projected data has identity covariance
    z = (unit(x) - w.mean_) @ w.projection_
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(5), atol=1e-3)
    # power 0 (PCA only): uncorrelated axes with decreasing variances, not unit ones
    p = Whitening(WhiteningConfig(dim=5, power=0.0)).fit(x)
    cov = np.cov(((unit(x) - p.mean_) @ p.projection_).T, bias=True)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-6)
    assert np.all(np.diff(np.diag(cov)) <= 1e-9)
    # shrinkage pulls whitening towards PCA: the smallest axis is amplified less
    s = Whitening(WhiteningConfig(dim=5, power=0.5, shrink=1.0)).fit(x)
    assert np.linalg.norm(s.projection_[:, -1]) < np.linalg.norm(w.projection_[:, -1])


def test_kept_block_centred_on_its_own_with_its_length():
    rng = np.random.default_rng(3)
    cnn, colour = data(100, 8), rng.random((100, 4)).astype(np.float32) + 0.5
    weight = 0.2
    fused = np.concatenate([np.sqrt(1 - weight) * unit(cnn), np.sqrt(weight) * unit(colour)], axis=1)
    out = Whitening(WhiteningConfig(keep=4)).fit(fused).transform(fused)
    np.testing.assert_allclose(np.linalg.norm(out[:, 8:], axis=1), np.sqrt(weight), atol=1e-5)
    np.testing.assert_allclose(out[:, :8], np.sqrt(1 - weight) * Whitening().fit(cnn).transform(cnn), atol=1e-5)
    np.testing.assert_allclose(out[:, 8:], np.sqrt(weight) * unit(unit(colour) - unit(colour).mean(0)), atol=1e-5)
    # centre_kept=False leaves the colour part as it was
    plain = Whitening(WhiteningConfig(keep=4, centre_kept=False)).fit(fused).transform(fused)
    np.testing.assert_allclose(plain[:, 8:], fused[:, 8:], atol=1e-6)


@pytest.mark.parametrize("config", [WhiteningConfig(), WhiteningConfig(dim=6, power=0.25, shrink=0.1, keep=2)])
def test_save_load_gives_identical_vectors_in_a_fresh_process(tmp_path, config):
    x = data()
    fitted = Whitening(config).fit(x)
    fitted.save(tmp_path / "w")
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, sys; from lookalike.search.whitening import Whitening; "
            f"w = Whitening.load({str(tmp_path / 'w')!r}); "
            f"np.save({str(tmp_path / 'y.npy')!r}, w.transform(np.load({str(tmp_path / 'x.npy')!r}))); "
            "print(w.n_fit_, w.config)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), fitted.transform(x))
    assert out.startswith("200 ") and repr(config) in out


def test_refit_rule_and_errors(tmp_path):
    x = data(n=100)
    w = Whitening().fit(x)
    assert not w.stale(100) and not w.stale(int(100 * (1 + REFIT_SHARE))) and w.stale(111) and w.stale(89)
    assert Whitening().stale(5)
    with pytest.raises(RuntimeError):
        Whitening().transform(x)
    with pytest.raises(ValueError, match="12-d"):
        w.transform(x[:, :5])
    with pytest.raises(ValueError):
        Whitening().fit(x[:1])
    for bad in (dict(dim=0), dict(power=2.0), dict(shrink=-1.0), dict(keep=-1)):
        with pytest.raises(ValueError):
            WhiteningConfig(**bad)
    with pytest.raises(FileNotFoundError):
        Whitening.load(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"kind": "ae", "version": 1, "config": {}}')
    with pytest.raises(ValueError, match="ae"):
        Whitening.load(tmp_path / "other")
