"""Does the latent explorer's VAE generate recognisable products? The previous default recipe vs today's, side by side.

    python -m lookalike.bench.studies.latent_quality --home /tmp/home --catalog clothing --out /tmp/latent-quality
    python -m lookalike.bench.studies.latent_quality --data d.npz --only format5 --only after --budget 240 --samples 1000
    python -m lookalike.bench.studies.latent_quality --data d.npz --epochs 5 --variant nogan:adversarial=0 --variant w32:width=32

Recipes (``--only``, repeatable; default ``format5`` and ``after``): ``format1`` (64 px padded photo,
pixel loss), ``previous`` (the default of formats 2-3: 96 px foreground crop, perceptual loss,
transposed convolutions, 32 channels, batch 32), ``format4`` (64 px, pixel encoder), ``format5`` (alias
``semantic``: the feature-reading encoder, no adversarial term, no flips) and ``after`` (today's
defaults, :data:`lookalike.train.autoencoder.VAE_RECIPE`: format 6); ``--set KEY=VALUE`` changes a
field of ``after``, and each ``--variant NAME:KEY=VALUE,...`` adds ``after`` with those fields changed
under NAME (a screening run; with variants only they and the ``--only`` recipes run).
Every VAE (16 latent dimensions) is fitted on the catalog's ``train`` split only; the measures use the
held-out ``test`` split (items without a split column: a seeded 10 % of the catalog). Features are
EfficientNet-Lite0's pooled, L2-normalised 1280-d vectors (the ``effnet-lite0`` encoder; a catalog
indexed with ``effnet-lite0-colour`` gives them as the renormalised CNN part of its vectors):

* (a) **recognisability** — a logistic-regression probe (:class:`lookalike.train.probes.Probe`)
  trained on the REAL train images' features classifies the features of each held-out item's
  decoded reconstruction (decoded from µ); the share classified as the item's own label. The
  probe's accuracy on the real held-out photos is the ceiling.
* (b) **sample realism** — FID (Heusel et al., NeurIPS 2017: ‖µ₁−µ₂‖² + Tr(Σ₁+Σ₂−2(Σ₁Σ₂)^½))
  between the features of ``--samples`` images decoded from z ~ N(0, I) and those of every real
  photo of the catalog (lower = more realistic; FID on EfficientNet-Lite0 features, not Inception,
  so not comparable with published FIDs); and the same for s ~ N(0, I) in the whitened space of
  the aggregate posterior of the train items (:func:`lookalike.explore.latent.aggregate_posterior`:
  z = mean + L s, what ``LatentSpace.sample`` and the explorer's "random product" draw), and for
  draws from a 10-component Gaussian mixture fitted to the train items' µ (:func:`gmm_sample`).
* (c) **slider effect** — for each latent dimension j, from the µ of 48 held-out items, move z_j by
  ±2σ_j (σ_j: the spread of µ_j over the train items, what a slider spans) and report the mean
  absolute pixel change between the two decodes (0..255) and the share of the 8 nearest real items
  (by µ, as the web app's explorer) that differ; a slider whose pixel change is under 2 levels is
  *dead*.

Two context columns: the FID of the held-out reconstructions, and the FID of as many of the model's
own inputs (the crops it trains on, not decoded): what a perfect reconstruction of them would score.

Writes ``latent_quality.json``, ``latent_quality.png`` (rows: held-out photos as each model sees them,
their reconstructions, then samples from N(0, I) and from the aggregate posterior, per recipe) and
prints a markdown table.
``--budget S`` caps each model's training at S seconds (``--epochs`` the epochs; prefer epochs on a
shared machine, where a time budget buys a load-dependent amount of training); ``--train-limit N``
fits on a seeded N of the train items (a short comparative run); ``--data`` keeps the
gathered arrays (pixels, features, labels, splits) in an .npz so a second run (or another machine)
skips the catalog: ``--data X.npz`` without ``--home`` reads it back.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from lookalike.catalog import Catalog
from lookalike.data.pixel_cache import catalog_pixels
from lookalike.encoders import get_encoder
from lookalike.encoders.autoencoder import pixel_features, pixel_transform, to_tensor
from lookalike.evaluation.metrics import frechet_distance
from lookalike.explore.latent import aggregate_posterior
from lookalike.index.distances import exact_knn
from lookalike.train.autoencoder import CHECKPOINT_FILE, Autoencoder, AutoencoderConfig
from lookalike.train.probes import Probe, ProbeConfig
from lookalike.viz.grids import array_grid

# the format-1 recipe: the whole photo padded to 64 px, pixel loss only, 30 epochs, no budget
FORMAT1 = AutoencoderConfig(arch="vae", image_size=64, preprocess="pad", perceptual=0.0, free_bits=0.0,
                            time_budget=None, decoder="transpose", feature_match=0.0, latent_mmd=0.0, width=32,
                            batch_size=32, lr=1e-3)
# the previous default recipe (sessions 4-5, format 3): 96 px foreground crop, perceptual loss, transposed
# convolutions, no feature matching, no latent MMD, 150 s
PREVIOUS = AutoencoderConfig(arch="vae", image_size=96, preprocess="foreground", perceptual=1.0, free_bits=0.25,
                            time_budget=150.0, decoder="transpose", feature_match=0.0, latent_mmd=0.0,
                            width=32, batch_size=32, lr=1e-3)
AFTER = AutoencoderConfig(arch="vae")  # the recipe's defaults (train.autoencoder.VAE_RECIPE)
# format 5 (session 7's default): format 4 whose encoder reads the input image's effnet-lite0 vector
# (FeatureVAE), no flips, no adversarial or colour term, no input dropout
FORMAT5 = replace(AFTER, encoder_input="features", flip=False, adversarial=0.0, colour=0.0, input_dropout=0.0)
SEMANTIC = FORMAT5  # its name in session 7's tables
FORMAT4 = replace(FORMAT5, encoder_input="pixels", flip=True)
RECIPES = {"format1": FORMAT1, "previous": PREVIOUS, "format4": FORMAT4, "semantic": SEMANTIC, "format5": FORMAT5,
           "after": AFTER}
DEFAULT_RUN = ("format5", "after")  # what runs without --only: format 5 vs today's default (format 6)
FEATURE_DIM = 1280
DEAD_PIXEL_CHANGE = 2.0  # mean |Δ| in 0..255 levels under which a slider changes nothing visible


def pixel_key(cfg: AutoencoderConfig) -> str:
    """The gathered array a config trains on: ``pixels-<size>-<preprocess>`` (shared by configs that agree)."""
    return f"pixels-{cfg.image_size}-{cfg.preprocess}"


def input_features_key(cfg: AutoencoderConfig) -> str:
    """The gathered (n, 1280) effnet-lite0 vectors of the images ``pixel_key(cfg)`` holds."""
    return f"features-{pixel_key(cfg)}"


def flipped_features_key(cfg: AutoencoderConfig) -> str:
    """The same for the horizontally flipped images (a feature-reading VAE trained with flips)."""
    return f"features-flip-{pixel_key(cfg)}"


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,KEY=VALUE`` -> (NAME, overrides of ``after``), values typed like the field's
    default (``flip=0`` / ``flip=false`` for booleans). ValueError for an unknown field."""
    name, _, body = text.partition(":")
    fields_ = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if not hasattr(AFTER, key):
            raise ValueError(f"unknown config field {key!r} in variant {text!r}")
        fields_[key] = _typed(key, value)
    return name, fields_


def _typed(key: str, value: str):
    current = getattr(AFTER, key)
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes")
    return type(current)(value) if current is not None else float(value)


def gather(cat, configs: dict[str, AutoencoderConfig], progress: bool = True) -> dict[str, np.ndarray]:
    """Aligned arrays of the catalog's items that every config could load: ``pixels-<size>-<preprocess>``
    (n, S, S, 3) uint8 as each config trains on them (:func:`pixel_key`), ``features`` (n, 1280) float32
    of the real photos, ``labels``, ``splits`` (str arrays). LookupError when the catalog has no
    effnet-lite0 vectors."""
    loaded = {}
    for cfg in configs.values():
        if pixel_key(cfg) not in loaded:
            transform, key = pixel_transform(cfg.preprocess)
            loaded[pixel_key(cfg)] = catalog_pixels(cat, cfg.image_size, progress=progress, transform=transform,
                                                    transform_key=key)
    spec = next((e["name"] for e in cat.encoders() if e["name"].split(":")[0] in ("effnet-lite0", "effnet-lite0-colour")),
                None)
    if spec is None:
        raise LookupError(f"catalog {cat.name!r} has no effnet-lite0 vectors: index it with the default encoder first")
    _, vec_ids, matrix, _ = cat.vectors_with_metric(spec)
    cnn = matrix[:, :FEATURE_DIM].astype(np.float32)  # the colour-fused spec appends its colour part
    cnn /= np.maximum(np.linalg.norm(cnn, axis=1, keepdims=True), 1e-12)
    row = {i: r for r, i in enumerate(vec_ids)}
    common = [i for i in loaded[next(iter(loaded))].ids if i in row and all(i in set(d.ids) for d in loaded.values())]
    out = {"ids": np.array(common), "features": cnn[[row[i] for i in common]]}
    for name, data in loaded.items():
        pos = {i: p for p, i in enumerate(data.ids)}
        take = [pos[i] for i in common]
        out[name] = data.pixels[take]
        if "labels" not in out:
            out["labels"] = np.array([str(data.labels[p]) for p in take])
            splits = [data.splits[p] if data.splits else None for p in take]
            if not any(s == "test" for s in splits):  # no split column: a seeded 10 % is held out
                rng = np.random.default_rng(0)
                splits = np.where(rng.random(len(take)) < 0.1, "test", "train").tolist()
            out["splits"] = np.array([str(s) for s in splits])
    return out


class Features:
    """EfficientNet-Lite0 features of decoded images, as ``effnet-lite0`` embeds a photo."""

    def __init__(self, batch_size: int = 64):
        self.encoder = get_encoder("effnet-lite0")
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray, desc: str = "features") -> np.ndarray:
        out = []
        for s in tqdm(range(0, len(images), self.batch_size), desc=desc, leave=False):
            out.append(self.encoder.encode([Image.fromarray(im) for im in images[s:s + self.batch_size]]))
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


@torch.no_grad()
def decode(net, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(n, latent) -> (n, S, S, 3) uint8 through the decoder."""
    net.eval()
    out = [torch.sigmoid(net.decode_logits(torch.from_numpy(z[s:s + batch_size]).float()))
           for s in range(0, len(z), batch_size)]
    x = torch.cat(out)
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _inputs(net, pixels: np.ndarray, features: np.ndarray | None, s: int, e: int) -> dict:
    """The encoder's arguments for rows s:e (a FeatureVAE also gets the cached vectors)."""
    out = {"x": to_tensor(pixels[s:e])}
    if getattr(net, "feature_input", False) and features is not None:
        out["features"] = torch.from_numpy(features[s:e])
    return out


@torch.no_grad()
def posterior_means(net, pixels: np.ndarray, features: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
    return posteriors(net, pixels, features, batch_size)[0]


@torch.no_grad()
def posteriors(net, pixels: np.ndarray, features: np.ndarray | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(µ, log σ²), each (n, latent) float32 (``features``: the images' cached effnet-lite0 vectors,
    which a FeatureVAE reads instead of recomputing them)."""
    net.eval()
    parts = [net.posterior(**_inputs(net, pixels, features, s, s + batch_size)) for s in range(0, len(pixels), batch_size)]
    return (torch.cat([p[0] for p in parts]).numpy().astype(np.float32),
            torch.cat([p[1] for p in parts]).numpy().astype(np.float32))


def gmm_sample(mu: np.ndarray, n: int, seed: int, components: int = 10) -> np.ndarray:
    """(n, latent) float32 draws from a full-covariance Gaussian mixture fitted to (m, latent) µ
    (at most one component per 20 items)."""
    from sklearn.mixture import GaussianMixture  # scikit-learn: only this column needs it

    k = max(1, min(components, len(mu) // 20))
    gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(mu)
    return gmm.sample(n)[0].astype(np.float32)


def slider_effect(net, mu_all: np.ndarray, base: np.ndarray, spread: np.ndarray, k: int = 8) -> list[dict]:
    """Per latent dimension: mean |pixel change| (0..255) between base ± 2σ_j, and the share of the
    k nearest items by µ (Euclidean, over ``mu_all``) that change."""
    rows = []
    for j in range(base.shape[1]):
        lo, hi = base.copy(), base.copy()
        lo[:, j] -= 2 * spread[j]
        hi[:, j] += 2 * spread[j]
        change = np.abs(decode(net, hi).astype(np.float32) - decode(net, lo).astype(np.float32)).mean()
        _, n_lo = exact_knn(lo, mu_all, k, "l2")
        _, n_hi = exact_knn(hi, mu_all, k, "l2")
        overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(n_lo, n_hi)])
        rows.append({"dim": j, "pixel_change": float(change), "neighbours_changed": float(1 - overlap)})
    return rows


def blur_accuracy(pixels: np.ndarray, labels: np.ndarray, feats: Features, probes: dict, radius: float) -> dict:
    """Each probe's accuracy on the images blurred by a Gaussian of ``radius`` px (0: as they are)."""
    images = pixels if radius <= 0 else np.stack(
        [np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(radius))) for p in pixels])
    f = feats(images, f"blur {radius}")
    return {name: float(np.mean(p.model.predict(f) == labels)) for name, p in probes.items()}


def ceilings(data: dict, key: str, feats: Features, probes: dict, radii=(1.0, 2.0)) -> dict:
    """The protocol's ceilings for models trained on ``data[key]``: each probe's accuracy on the
    held-out items' own inputs (the crops as the VAE sees them, upsampled like a decode) and on
    blurred versions (a soft decode that got everything else right)."""
    test = data["splits"] == "test"
    labels = data["labels"][test]
    inputs = data[f"features-{key}"][test]
    out = {"inputs": {name: float(np.mean(p.model.predict(inputs) == labels)) for name, p in probes.items()}}
    for r in radii:
        out[f"blur {r:g} px"] = blur_accuracy(data[key][test], labels, feats, probes, r)
    return out


def evaluate(name: str, cfg: AutoencoderConfig, data: dict, feats: Features, probe, n_samples: int, seed: int,
             progress: bool = True, train_limit: int | None = None, input_probe=None) -> list[dict]:
    """Fit one VAE on the train split (a seeded ``train_limit`` of it when given) and measure (a), (b),
    (c); returns the row plus images for the PNG. ``input_probe``: a second probe for (a), trained on
    the real train images prepared as this model sees them (``recognisability_inputs_probe``). A
    model that keeps a moving average of its weights (``cfg.ema``) gives more rows from the same run,
    measured the same way: ``NAME last step`` (the weights of the last step) and, when the validation
    loss kept an earlier epoch, ``NAME last average`` (the average after the last epoch)."""
    pixels, splits, labels = data[pixel_key(cfg)], data["splits"], data["labels"]
    inputs_f = data.get(input_features_key(cfg))
    flipped_f = data.get(flipped_features_key(cfg))
    train, test = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")
    if train_limit and train_limit < len(train):
        train = np.sort(np.random.default_rng(seed).permutation(train)[:train_limit])
    started = time.perf_counter()
    reads = cfg.encoder_input == "features"
    with tempfile.TemporaryDirectory() as ckpt_dir:  # the checkpoint holds the last-step weights
        model = Autoencoder(cfg).fit(pixels[train], progress=progress, features=inputs_f[train] if reads else None,
                                     flipped_features=flipped_f[train] if reads and cfg.flip and flipped_f is not None
                                     else None, checkpoint_dir=ckpt_dir if cfg.ema else None)
        fit_seconds = time.perf_counter() - started
        others = {}
        if cfg.ema:
            saved = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
            if model.best_epoch != model.epochs_run:  # else the kept weights are the last average
                others[f"{name} last average"] = _with_weights(model.net, {
                    k.removeprefix("module."): v for k, v in saved["averaged"].items() if k.startswith("module.")})
            others[f"{name} last step"] = _with_weights(model.net, saved["model"])
    fit = {"config": asdict(cfg), "n_train": int(len(train)), "n_test": int(len(test)),
           "epochs_run": model.epochs_run, "best_epoch": model.best_epoch, "fit_seconds": round(fit_seconds, 1),
           "stopped_by_budget": bool(model.meta.get("time_budget_stop"))}
    rows = [measure(label, net, cfg, data, feats, probe, n_samples, seed, train, test, input_probe)
            for label, net in {name: model.net, **others}.items()]
    return [{**row, **fit} for row in rows]


def _with_weights(net, state: dict):
    out = copy.deepcopy(net)
    out.load_state_dict(state)
    return out


def measure(name: str, net, cfg: AutoencoderConfig, data: dict, feats: Features, probe, n_samples: int, seed: int,
            train: np.ndarray, test: np.ndarray, input_probe=None) -> dict:
    """(a), (b), (c) and the context columns for one trained network (rows ``train`` / ``test`` of ``data``)."""
    pixels, labels = data[pixel_key(cfg)], data["labels"]
    inputs_f = data.get(input_features_key(cfg))
    mu_all, logvar_all = posteriors(net, pixels, inputs_f)
    recon = decode(net, mu_all[test])
    recon_features = feats(recon, f"{name}: reconstructions")
    recognisable = float(np.mean(probe.model.predict(recon_features) == labels[test]))
    recognisable_inputs = (float(np.mean(input_probe.model.predict(recon_features) == labels[test]))
                           if input_probe is not None else float("nan"))
    fid_recon = frechet_distance(recon_features, data["features"])
    # the floor of (b): the model's own inputs (crops at its size), as many as the samples
    shown = np.random.default_rng(seed).permutation(len(pixels))[:n_samples]
    fid_inputs = frechet_distance(feats(pixels[shown], f"{name}: inputs"), data["features"])
    z = np.random.default_rng(seed).standard_normal((n_samples, cfg.latent)).astype(np.float32)
    samples = decode(net, z)
    fid = frechet_distance(feats(samples, f"{name}: samples"), data["features"])
    mean, chol = aggregate_posterior(mu_all[train], logvar_all[train])
    aggregate = decode(net, (mean + z.astype(np.float64) @ chol.T).astype(np.float32))
    fid_aggregate = frechet_distance(feats(aggregate, f"{name}: aggregate-prior samples"), data["features"])
    # the same from a 10-component GMM fitted to the train items' µ (ex-post density, Ghosh et al. 2020)
    mixture = decode(net, gmm_sample(mu_all[train], n_samples, seed))
    fid_gmm = frechet_distance(feats(mixture, f"{name}: GMM samples"), data["features"])
    spread = mu_all[train].std(0)
    base = mu_all[test[np.random.default_rng(seed).permutation(len(test))[:48]]]
    sliders = slider_effect(net, mu_all, base, spread)
    changes = np.array([s["pixel_change"] for s in sliders])
    return {"name": name, "recognisability": recognisable, "recognisability_inputs_probe": recognisable_inputs, "fid": float(fid), "fid_aggregate": float(fid_aggregate),
            "fid_gmm": float(fid_gmm),
            "fid_reconstructions": float(fid_recon), "fid_inputs": float(fid_inputs),
            "slider_pixel_change_mean": float(changes.mean()), "slider_pixel_change_min": float(changes.min()),
            "slider_neighbours_changed_mean": float(np.mean([s["neighbours_changed"] for s in sliders])),
            "dead_sliders": int((changes < DEAD_PIXEL_CHANGE).sum()), "sliders": sliders,
            "_images": {"inputs": pixels[test[:10]], "recon": recon[:10], "samples": samples[:10],
                        "aggregate": aggregate[:10]}}


def _resize(cells: np.ndarray, size: int) -> np.ndarray:
    if cells.shape[1] == size:
        return cells
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC)) for c in cells])


def comparison_png(rows: list[dict], path: Path) -> Path:
    """Rows: inputs, reconstructions and samples of each model, all at the largest model's size."""
    size = max(r["_images"]["inputs"].shape[1] for r in rows)
    cols = min(len(r["_images"][part]) for r in rows for part in ("inputs", "recon", "samples", "aggregate"))
    cells, labels = [], []
    for r in rows:
        for part in ("inputs", "recon", "samples", "aggregate"):
            cells.append(_resize(r["_images"][part][:cols], size))
            short = r["name"].replace(" last average", " avg").replace(" last step", " step")
            labels.append(f"{short[:10]} {part[:6]}")
    return array_grid(np.stack(cells), path, labels, scale=1)


def table(rows: list[dict], ceiling: float, limits: dict | None = None) -> str:
    lines = ["| recipe | px | input | encoder reads | decoder | width | feature match | latent MMD | adversarial | colour | "
             "flips | input dropout | epochs | fit s | recognisable (a) | "
             "recognisable, probe on inputs (a') | FID N(0, I) (b) | "
             "FID aggregate prior (b) | FID GMM (b) | FID reconstructions | FID inputs | slider Δpixel mean / min (c) | neighbours changed (c) | "
             "dead sliders |",
             "|" + "---|" * 24]
    for r in rows:
        c = r["config"]
        lines.append(f"| {r['name']} | {c['image_size']} | {c['preprocess']} | {c.get('encoder_input', 'pixels')} | "
                     f"{c['decoder']} | {c['width']} | "
                     f"{c['feature_match']} | {c['latent_mmd']} | {c.get('adversarial', 0.0)} | {c.get('colour', 0.0)} | "
                     f"{'yes' if c.get('flip') else 'no'} | {c.get('input_dropout', 0.0)} | "
                     f"{r['epochs_run']} | {r['fit_seconds']} | "
                     f"{r['recognisability']:.3f} | {r.get('recognisability_inputs_probe', float('nan')):.3f} | {r['fid']:.3f} | {r['fid_aggregate']:.3f} | {r['fid_gmm']:.3f} | "
                     f"{r.get('fid_reconstructions', float('nan')):.3f} | {r.get('fid_inputs', float('nan')):.3f} | "
                     f"{r['slider_pixel_change_mean']:.1f} / "
                     f"{r['slider_pixel_change_min']:.1f} | {r['slider_neighbours_changed_mean']:.2f} | {r['dead_sliders']} |")
    lines.append(f"\nprobe accuracy on the real held-out photos (ceiling of (a)): {ceiling:.3f}")
    for key, rows_ in (limits or {}).items():
        lines.append(f"\nceilings for models trained on {key} (accuracy on the held-out items; 'photos' = the probe "
                     f"trained on the real train photos (a), 'inputs' = the probe trained on the real train images "
                     f"prepared as the model sees them (a'))")
        lines.append("| held-out images | " + " | ".join(next(iter(rows_.values()))) + " |")
        lines.append("|---|" + "---|" * len(next(iter(rows_.values()))))
        for what, acc in rows_.items():
            lines.append(f"| {what} | " + " | ".join(f"{v:.3f}" for v in acc.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="LOOKALIKE_HOME holding the catalog")
    parser.add_argument("--catalog", default="clothing")
    parser.add_argument("--data", type=Path, help="an .npz of the gathered arrays: written after gathering, read without --home")
    parser.add_argument("--out", type=Path, default=Path("latent-quality"))
    parser.add_argument("--budget", type=float, help="seconds of training per model (default: each recipe's own)")
    parser.add_argument("--epochs", type=int, help="maximum epochs per model (default: each recipe's own)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--train-limit", type=int, help="fit on a seeded subset of this many train items (a short run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=tuple(RECIPES), action="append",
                        help=f"fit only this recipe (repeatable; default: {' and '.join(DEFAULT_RUN)})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the 'after' config (e.g. perceptual=2), repeatable")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="also fit 'after' with these fields changed, under NAME (repeatable; e.g. "
                             "nogan:adversarial=0)")
    args = parser.parse_args(argv)

    configs = dict(RECIPES)
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = _typed(key, value)
    configs["after"] = replace(AFTER, **overrides)
    variants = dict(parse_variant(v) for v in args.variant)
    configs = {name: cfg for name, cfg in configs.items() if name in (args.only or ([] if variants else DEFAULT_RUN))}
    configs.update({name: replace(AFTER, **fields_) for name, fields_ in variants.items()})
    for name, cfg in configs.items():
        configs[name] = replace(cfg, device=args.device, seed=variants.get(name, {}).get("seed", args.seed),
                                **({"time_budget": args.budget} if args.budget else {}),
                                **({"epochs": args.epochs} if args.epochs else {}))
    if args.home:
        data = gather(Catalog.open(args.catalog, home=args.home), configs)
        if args.data:
            np.savez_compressed(args.data, **data)
    elif args.data:
        with np.load(args.data) as f:
            data = {k: f[k] for k in f.files}
    else:
        parser.error("give --home (and --catalog) or --data")
    args.out.mkdir(parents=True, exist_ok=True)
    added = False
    for cfg in configs.values():  # the inputs' own effnet-lite0 vectors: probe (a') and FeatureVAE's encoder
        if input_features_key(cfg) not in data:
            data[input_features_key(cfg)] = pixel_features(data[pixel_key(cfg)], progress=True)
            added = True
        if cfg.encoder_input == "features" and cfg.flip and flipped_features_key(cfg) not in data:
            flipped = np.ascontiguousarray(data[pixel_key(cfg)][:, :, ::-1])
            data[flipped_features_key(cfg)] = pixel_features(flipped, progress=True)
            added = True
    if added and args.data:
        np.savez_compressed(args.data, **data)
    feats = Features()
    roles = [s if s in ("train", "test") else "other" for s in data["splits"]]
    probe = Probe(ProbeConfig(label="label", encoder="effnet-lite0", refit=False))
    probe.fit(data["features"], list(data["labels"]), roles)
    input_probes, limits = {}, {}
    for cfg in configs.values():
        key = pixel_key(cfg)
        if key not in input_probes:
            input_probes[key] = Probe(ProbeConfig(label="label", encoder="effnet-lite0", refit=False))
            input_probes[key].fit(data[input_features_key(cfg)], list(data["labels"]), roles)
            limits[key] = ceilings(data, key, feats, {"photos": probe, "inputs": input_probes[key]})
    rows = []
    for name, cfg in configs.items():
        measured = evaluate(name, cfg, data, feats, probe, args.samples, args.seed, train_limit=args.train_limit,
                            input_probe=input_probes[pixel_key(cfg)])
        rows.extend(measured)
        # written after every recipe, so a run cut short keeps what it measured
        print(table(measured, probe.report.accuracy), flush=True)
        report = {"catalog": args.catalog, "probe_real_accuracy": probe.report.accuracy, "ceilings": limits,
                  "train_limit": args.train_limit, "samples": args.samples,
                  "rows": [{k: v for k, v in r.items() if k != "_images"} for r in rows]}
        (args.out / "latent_quality.json").write_text(json.dumps(report, indent=1, default=str))
        comparison_png(rows, args.out / "latent_quality.png")
    print(table(rows, probe.report.accuracy, limits))
    print(f"wrote {args.out / 'latent_quality.png'} and {args.out / 'latent_quality.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
