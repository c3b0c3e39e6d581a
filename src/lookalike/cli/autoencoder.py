"""Trainable encoders: `lookalike train autoencoder`, `lookalike generate`, `lookalike latent-stats`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, open_catalog, out, print_json, train_app
from lookalike.encoders.spec import EncoderSpec
from lookalike.viz.tiles import save_png


@train_app.command("autoencoder")
def train_autoencoder(
    catalog: str = CatalogOption,
    kind: str = typer.Option("vae", "--kind", help="dense | conv | vae | hybrid (VAE over --base vectors + image decoder)"),
    base: str = typer.Option("effnet-lite0", "--base", help="hybrid: the pretrained encoder whose vectors it compresses."),
    app_latent: int = typer.Option(0, "--app-latent", min=0, max=256, help="hybrid: extra appearance dimensions (from pixels) for the image decoder."),
    latent: int = typer.Option(16, "--latent", min=1, max=512, help="Latent (embedding) size."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input side in pixels (64, 96, 128...; default 64)."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="pad (whole photo) | foreground (product cropped onto white; the VAE default)."),
    perceptual: Optional[float] = typer.Option(None, "--perceptual", min=0.0, help="Weight of the EfficientNet-Lite0 perceptual loss (default 1 for a VAE, 0 otherwise)."),
    free_bits: Optional[float] = typer.Option(None, "--free-bits", min=0.0, help="VAE: nats per latent dimension the KL term does not charge (default 0.25)."),
    decoder: Optional[str] = typer.Option(None, "--decoder", help="transpose (stride-2 transposed convolutions) | upsample (nearest x2 + 3x3 conv, no checkerboard); default upsample for a VAE, transpose otherwise."),
    width: Optional[int] = typer.Option(None, "--width", min=4, max=256, help="Channels of the first conv stage, doubling per stage (default 16 for a VAE, 32 otherwise)."),
    feature_match: Optional[float] = typer.Option(None, "--feature-match", min=0.0, help="VAE: weight of the EfficientNet-Lite0 pooled-feature loss, 1 - cosine (default 1)."),
    encoder_input: Optional[str] = typer.Option(None, "--encoder-input", help="VAE: what the encoder reads: pixels (a conv encoder) | features (an MLP on the image's effnet-lite0 vector + an 8x8 colour thumbnail, so the sliders carry garment type and colour; the VAE default)."),
    latent_mmd: Optional[float] = typer.Option(None, "--latent-mmd", min=0.0, help="VAE: weight of the MMD between the codes and N(0, I), so N(0, I) points land where items are (default 1)."),
    adversarial: Optional[float] = typer.Option(None, "--adversarial", min=0.0, help="VAE: weight of the PatchGAN hinge term (x VQGAN's adaptive weight), on after the KL warm-up; sharper, coloured decodes (default 0.5; 0 = off)."),
    colour: Optional[float] = typer.Option(None, "--colour", min=0.0, help="VAE: weight of the 8x8 colour-thumbnail loss (default 0)."),
    input_dropout: Optional[float] = typer.Option(None, "--input-dropout", min=0.0, max=0.95, help="Feature-reading VAE: share of the encoder MLP's inputs dropped while training (default 0.2)."),
    ema: Optional[float] = typer.Option(None, "--ema", min=0.0, max=0.9999, help="Keep an exponential moving average of the weights with this decay instead of the last step's (0 = off)."),
    time_budget: Optional[float] = typer.Option(-1.0, "--time-budget", help="Stop training after about this many seconds (default: 140 for a VAE, none otherwise; 0 = no limit)."),
    epochs: int = typer.Option(30, "--epochs", min=1, max=10_000, help="Maximum epochs (early stopping may end sooner)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=2, max=4096, help="Images per step (default 16 for a VAE, 32 otherwise; small catalogs learn more from smaller batches)."),
    lr: Optional[float] = typer.Option(None, "--lr", min=1e-6, max=1.0, help="Adam learning rate (default 2e-3 for a VAE, 1e-3 otherwise)."),
    beta: float = typer.Option(1.0, "--beta", min=0.0, help="VAE: weight of the KL term."),
    warmup: Optional[int] = typer.Option(None, "--warmup", min=0, help="VAE: KL warm-up epochs (default: epochs/3, max 10)."),
    patience: int = typer.Option(5, "--patience", min=1, help="Stop after this many epochs without validation improvement."),
    split: Optional[str] = typer.Option(None, "--split", help="Train only on items whose 'split' column has this value."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default CATALOG-KIND)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, shuffling, flips and VAE noise."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the model's last checkpoint."),
    index: bool = typer.Option(False, "--index", help="Then embed the catalog with the new encoder (from its last source)."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Train a dense/conv autoencoder or a convolutional VAE on a catalog's images."""
    # torch loads in the commands that need it: ~8 s off `lookalike --help` (see cli/app.py)
    from lookalike.train.autoencoder import AutoencoderConfig

    if device not in ("auto", "cpu", "cuda"):
        fail("--device must be auto, cpu or cuda")
    cat = open_catalog(catalog, home)
    if len(cat) < 2:
        fail(f"catalog {catalog!r} has {len(cat)} items; index images into it first")
    try:
        cfg = AutoencoderConfig(arch=kind, latent=latent, image_size=image_size, epochs=epochs, batch_size=batch_size,
                                lr=lr, beta=beta, warmup=warmup, patience=patience, seed=seed, device=device,
                                base=base, app_latent=app_latent, preprocess=preprocess, perceptual=perceptual,
                                free_bits=free_bits, time_budget=None if time_budget == 0 else time_budget,
                                decoder=decoder, feature_match=feature_match, latent_mmd=latent_mmd,
                                width=width, encoder_input=encoder_input, adversarial=adversarial, colour=colour,
                                input_dropout=input_dropout, ema=ema)
        result = cat.train_autoencoder(cfg, name, split=split, resume=resume)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    spec = result.spec
    if index:
        if not cat.last_source:
            fail(f"catalog {catalog!r} has no recorded source; run `lookalike index SOURCE --catalog {catalog} --encoder {spec}`")
        console.print(f"embedding the catalog with {spec} ...")
        cat.reindex(spec)
    summary = result.report()
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"trained {spec}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    out.print(table)
    if not index:
        parsed = EncoderSpec.parse(spec)
        modes = ", ".join(str(parsed.replace(mode=mode)) for mode in ("z", "loglik", "sym"))
        out.print(f"use it: lookalike index SOURCE --catalog {catalog} --encoder {spec}"
                  + (f"  (retrieval modes: {modes})" if parsed.kind == "vae" else ""))


def _space(model: str, catalog: Optional[str], home):
    """LatentSpace of ``vae:NAME`` / ``hvae:NAME`` over ``catalog`` (default: the one it was trained on)."""
    # torch loads in the commands that need it: ~8 s off `lookalike --help` (see cli/app.py)
    from lookalike.explore.latent import LatentSpace, latent_model

    try:
        kind, name, recorded = latent_model(model, home)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    cat_name = catalog or recorded
    if not cat_name:
        fail("give --catalog: the model does not record which catalog it was trained on")
    cat = open_catalog(cat_name, home)
    try:
        return cat, LatentSpace.build(cat, name, kind=kind)
    except (LookupError, ValueError) as exc:
        fail(str(exc).strip('"'))


@app.command()
def generate(
    model: str = typer.Option(..., "--model", "-m", help="A trained VAE: vae:NAME or hvae:NAME."),
    latent: Optional[str] = typer.Option(None, "--latent", help="Decode this point: comma-separated values, one per dimension."),
    interpolate: Optional[str] = typer.Option(None, "--interpolate", help="ID1,ID2: decode the line between two items."),
    traverse: bool = typer.Option(False, "--traverse", help="Grid: each dimension swept over its observed range."),
    steps: int = typer.Option(9, "--steps", min=2, max=64, help="Images per interpolation / traversal row."),
    size: int = typer.Option(256, "--size", min=8, max=2048, help="--latent: output side in pixels."),
    nearest: int = typer.Option(0, "--nearest", min=0, max=100, help="--latent: also list the K nearest real items."),
    mode: str = typer.Option("mu", "--mode", help="--nearest: mu | z | loglik."),
    catalog: Optional[str] = typer.Option(None, "--catalog", "-c", help="Catalog (default: the one the model was trained on)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="PNG to write."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Decode a latent vector, interpolate between two items, or draw a latent traversal grid."""
    # torch loads in the commands that need it: ~8 s off `lookalike --help` (see cli/app.py)
    from lookalike.explore.latent import parse_vector

    if sum([latent is not None, interpolate is not None, traverse]) != 1:
        fail("give exactly one of --latent, --interpolate or --traverse")
    cat, space = _space(model, catalog, home)
    hits = []
    try:
        if latent is not None:
            image, hits = space.explore(parse_vector(latent), k=nearest, mode=mode, size=size)
            save_png(image, out_path)
        elif interpolate is not None:
            ids = [x.strip() for x in interpolate.split(",")]
            if len(ids) != 2:
                fail("--interpolate expects two item ids: ID1,ID2")
            space.interpolation_strip(ids[0], ids[1], out_path, steps)
        else:
            space.traversal_grid(out_path, steps)
    except KeyError as exc:
        fail(str(exc).strip('"') + f" in catalog {cat.name!r}")
    except ValueError as exc:
        fail(str(exc))
    if json_out:
        print_json({"out": str(out_path), "nearest": [h.to_dict(("rank", "id", "label", "score", "distance"), digits=None)
                                                      for h in hits[:nearest]]})
        return
    console.print(f"wrote {out_path}")
    if nearest:
        table = Table(title=f"nearest real items ({mode})")
        for column in ("rank", "id", "label", "score"):
            table.add_column(column)
        for h in hits[:nearest]:
            table.add_row(str(h.rank), h.id, h.label or "", f"{h.score:.4f}")
        out.print(table)


@app.command("latent-stats")
def latent_stats(
    model: str = typer.Option(..., "--model", "-m", help="A trained VAE: vae:NAME."),
    catalog: Optional[str] = typer.Option(None, "--catalog", "-c", help="Catalog (default: the one the model was trained on)."),
    item: Optional[str] = typer.Option(None, "--item", "-i", help="Show this item's µ, σ, ε and z instead."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Per-dimension statistics of a VAE's latent space over a catalog (or one item's position)."""
    cat, space = _space(model, catalog, home)
    if item is not None:
        try:
            data = space.item(item)
        except KeyError as exc:
            fail(str(exc).strip('"'))
        if json_out:
            print_json(data)
            return
        table = Table(title=f"{item} ({data['label']}) in {model}")
        for column in ("dim", "µ", "σ", "ε", "z"):
            table.add_column(column, justify="right")
        for j in range(space.dim):
            table.add_row(str(j), *(f"{data[k][j]:+.3f}" for k in ("mu", "sigma", "eps", "z")))
        out.print(table)
        return
    stats = space.stats()
    if json_out:
        print_json({"catalog": cat.name, "items": len(space.ids), "dims": stats})
        return
    table = Table(title=f"{model} over {cat.name} ({len(space.ids)} items)")
    for column in ("dim", "mean", "std", "min", "max"):
        table.add_column(column, justify="right")
    for s in stats:
        table.add_row(str(s["dim"]), *(f"{s[k]:+.3f}" for k in ("mean", "std", "min", "max")))
    out.print(table)
