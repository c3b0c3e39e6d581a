"""The learned-component contract (lookalike.train.base), checked on every learned component:
fit on tiny generated data -> save(dir) -> load(dir) in a FRESH PROCESS gives the same outputs.

One subprocess loads every saved component (imports cost seconds), so a component that only works
because something stayed in memory (a cached array, a module-level registry, an unsaved attribute)
fails here.
"""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fakes import shape_images

SIZE = 16

# name -> (module, class, extra load() arguments, output expression over the component `m` and input `x`)
CASES = {
    "autoencoder-dense": ("lookalike.train.autoencoder", "Autoencoder", [], "m.encode(x)"),
    "autoencoder-conv": ("lookalike.train.autoencoder", "Autoencoder", [], "m.encode(x)"),
    "vae": ("lookalike.train.autoencoder", "Autoencoder", [], "m.encode(x)"),
    "hybrid": ("lookalike.train.autoencoder", "HybridAutoencoder", [], "m.encode(x)"),
    "metric-heads": ("lookalike.train.metric", "MetricHeads", [], "m.embed(x)"),
    "probe": ("lookalike.train.probes", "Probe", [], "m.predict(x)[1]"),
    "finetuned": ("lookalike.train.finetune", "Finetuned", [], "m.embed(x)"),
    "clusters": ("lookalike.explore.clusters", "Clusters", ["enc:tiny"],
                 "np.concatenate([m.predict(x), m.assignments])"),
    "goes-with-map": ("lookalike.explore.goes_with", "LearnedMap", [], "m.map(m.project(x))"),
    "projection": ("lookalike.explore.projection", "Projection", ["enc:tiny", "pca"], "m.coords"),
    "whitening": ("lookalike.search.whitening", "Whitening", [], "m.transform(x)"),
}


def _learned_classes() -> set[tuple[str, str]]:
    """(module, class) of every class in lookalike.train, lookalike.explore and lookalike.search (the
    catalog's fitted centring / whitening) that implements lookalike.train.base.Learned
    (structurally: ``kind``, ``version``, ``fit``, ``save``, ``load``)."""
    import lookalike.explore
    import lookalike.search
    import lookalike.train

    found = set()
    for package in (lookalike.train, lookalike.explore, lookalike.search):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for cls in vars(module).values():
                if (not inspect.isclass(cls) or cls.__module__ != module.__name__
                        or getattr(cls, "_is_protocol", False)):  # the Learned protocol itself
                    continue
                if (all(callable(getattr(cls, method, None)) for method in ("fit", "save", "load"))
                        and hasattr(cls, "kind") and hasattr(cls, "version")):
                    found.add((cls.__module__, cls.__qualname__))
    return found


def test_every_learned_component_has_a_case():
    """A new learned component must get a CASES entry (and a _fit branch), or it is not checked."""
    covered = {(module, cls) for module, cls, _, _ in CASES.values()}
    assert _learned_classes() == covered


LOADER = """
import json, sys, importlib
import numpy as np
for name, case in json.loads(sys.argv[1]).items():
    cls = getattr(importlib.import_module(case["module"]), case["cls"])
    m = cls.load(case["dir"], *case["args"])
    x = np.load(case["inputs"])
    np.save(case["out"], np.asarray(eval(case["expr"])))
"""


def _pixels() -> np.ndarray:
    from lookalike.encoders.autoencoder import to_pixels

    images, _ = shape_images(per_class=2, size=48)
    return np.stack([to_pixels(im, SIZE) for im in images])


def _blobs(n_per: int = 20, k: int = 3, dim: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(np.float32), labels


def _fit(name: str, folder: Path):
    """Fit component ``name`` on tiny data, save it into ``folder``; return (component, query input)."""
    from lookalike.explore.clusters import ClusterConfig, Clusters, prepare
    from lookalike.explore.goes_with import LearnedMap
    from lookalike.explore.projection import Projection, ProjectionConfig
    from lookalike.train.autoencoder import Autoencoder, AutoencoderConfig, HybridAutoencoder
    from lookalike.train.metric import MetricHeadConfig, MetricHeads
    from lookalike.train.probes import Probe, ProbeConfig

    vectors, labels = _blobs()
    if name in ("autoencoder-dense", "autoencoder-conv", "vae"):
        pixels = _pixels()
        arch = {"autoencoder-dense": "dense", "autoencoder-conv": "conv", "vae": "vae"}[name]
        config = AutoencoderConfig(arch=arch, latent=4, image_size=SIZE, epochs=2, batch_size=6, device="cpu")
        model = Autoencoder(config).fit(pixels, progress=False)
        return model, model.save(folder), pixels[:7]
    if name == "hybrid":
        pixels = _pixels()
        features = np.random.default_rng(1).normal(size=(len(pixels), 12)).astype(np.float32)
        config = AutoencoderConfig(arch="hybrid", latent=3, image_size=SIZE, epochs=2, batch_size=6, device="cpu",
                                   base="colour-hist")
        model = HybridAutoencoder(config).fit(features, pixels, progress=False)
        return model, model.save(folder), features[:7]
    if name == "metric-heads":
        views = np.stack([vectors, vectors + 0.1], axis=1)
        groups = ["a" if i % 2 else "b" for i in range(len(labels))]
        config = MetricHeadConfig(dim=4, epochs=3, classes_per_batch=3, per_class=4, dropout=0.0)
        model = MetricHeads(config).fit(views, [str(v) for v in labels], groups)
        return model, model.save(folder), vectors[:9]
    if name == "finetuned":
        from lookalike.train.finetune import FinetuneConfig, Finetuned

        # activations entering the last block (192 channels, 4x4), two views; pixels for embed
        rng = np.random.default_rng(0)
        views = rng.normal(size=(len(labels), 2, 192, 4, 4)).astype(np.float16)
        config = FinetuneConfig(blocks=1, dim=8, epochs=2, classes_per_batch=3, per_class=4, dropout=0.0)
        model = Finetuned(config).fit(views, [str(v) for v in labels])
        return model, model.save(folder), rng.normal(size=(3, 3, 64, 64)).astype(np.float32)
    if name == "probe":
        model = Probe(ProbeConfig(label="blob", encoder="enc:tiny"), name="p").fit(vectors, [str(v) for v in labels])
        return model, model.save(folder), vectors[::5]
    if name == "clusters":
        ids = [f"i{i}" for i in range(len(vectors))]
        model = Clusters(config=ClusterConfig(k="auto", k_range=(2, 5))).fit(ids, vectors, "cosine", "enc:tiny")
        model.save(folder)
        return model, folder, vectors
    if name == "goes-with-map":
        prepared = prepare(vectors, "cosine")
        model = LearnedMap().fit(prepared, [(i, i + 20) for i in range(20)])
        return model, model.save(folder), prepared
    if name == "projection":
        ids = [f"i{i}" for i in range(len(vectors))]
        model = Projection(ProjectionConfig(method="pca")).fit(ids, vectors, "cosine", "enc:tiny")
        model.save(folder)
        return model, folder, vectors
    if name == "whitening":
        from lookalike.search.whitening import Whitening, WhiteningConfig

        model = Whitening(WhiteningConfig(dim=6, power=0.5, shrink=0.1, keep=4)).fit(np.abs(vectors))
        return model, model.save(folder), np.abs(vectors[::3])
    raise KeyError(name)


@pytest.fixture(scope="module")
def fitted_and_reloaded(tmp_path_factory):
    """Every component fitted and saved here; reloaded and run by one fresh interpreter."""
    root = tmp_path_factory.mktemp("contract")
    fitted, jobs = {}, {}
    for name, (module, cls, args, expr) in CASES.items():
        model, folder, x = _fit(name, root / name)
        np.save(root / f"{name}-in.npy", x)
        fitted[name] = (model, folder, np.asarray(eval(expr, {"np": np, "m": model, "x": x})))
        jobs[name] = {"module": module, "cls": cls, "args": args, "expr": expr, "dir": str(folder),
                      "inputs": str(root / f"{name}-in.npy"), "out": str(root / f"{name}-out.npy")}
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(jobs)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: (*fitted[name], np.load(jobs[name]["out"])) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_load_in_a_fresh_process_gives_the_same_outputs(fitted_and_reloaded, name):
    _, _, before, after = fitted_and_reloaded[name]
    assert before.shape == after.shape and before.size > 0
    if np.issubdtype(before.dtype, np.integer):
        assert np.array_equal(before, after)
    else:
        np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_every_component_has_the_contract(fitted_and_reloaded, name):
    from lookalike.train.base import Learned

    model, folder, _, _ = fitted_and_reloaded[name]
    assert isinstance(model, Learned), name
    assert isinstance(model.kind, str) and isinstance(model.version, int) and model.version >= 1
    from dataclasses import is_dataclass

    assert is_dataclass(model.config) and not isinstance(model.config, type)
    saved = sorted(Path(folder).glob("*.json"))
    assert saved, f"{name} saved no JSON in {folder}"
    doc = json.loads(saved[0].read_text())
    assert doc["kind"] == model.kind and doc["version"] == model.version and "config" in doc


def test_a_newer_format_is_refused(tmp_path):
    from lookalike.train.base import read_config, save_config

    save_config(tmp_path, "probe", 99, {"C": 1.0})
    with pytest.raises(ValueError, match="newer lookalike"):
        read_config(tmp_path, "probe", 1)
    with pytest.raises(ValueError, match="not 'metric'"):
        read_config(tmp_path, "metric", 99)
    with pytest.raises(FileNotFoundError, match="lookalike train probe"):
        read_config(tmp_path / "none", "probe", 1, "train one with `lookalike train probe`")


def test_model_dir_is_the_one_folder_helper(tmp_path):
    from lookalike.config import model_dir
    from lookalike.train.base import artifact_dir

    assert model_dir("vae", "shop", tmp_path) == tmp_path / "models" / "vae" / "shop"
    assert artifact_dir(tmp_path / "cat", "clusters") == tmp_path / "cat" / "artifacts" / "clusters"
    with pytest.raises(ValueError, match="invalid model name"):
        model_dir("vae", "../escape", tmp_path)
