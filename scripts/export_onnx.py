#!/usr/bin/env python3
"""Export an image model's vision tower to one ONNX file that lookalike reads as ``--encoder onnx:FILE``.

Run it where the weights are (it needs torch, plus the library that holds the model); lookalike
itself is not needed. It prints the ``--encoder`` spec to use (size, normalisation, pooling).

    # Hugging Face transformers (pip install transformers):
    python export_onnx.py hf openai/clip-vit-base-patch32 clip-b32.onnx       # CLIP image embeds (512-d)
    python export_onnx.py hf google/siglip-base-patch16-224 siglip-b16.onnx   # SigLIP image embeds
    python export_onnx.py hf facebook/dinov2-small dinov2-s.onnx              # DINOv2 CLS token (384-d)
    # timm (pip install timm), pooled features of any timm backbone:
    python export_onnx.py timm convnext_tiny.fb_in22k convnext-t.onnx
    # your own network: a Python function returning an nn.Module (on PYTHONPATH), input (n, 3, s, s):
    python export_onnx.py torch mypackage.models:build_model mine.onnx --size 256 --mean imagenet

The file takes (n, 3, s, s) float32 pixels, normalised with the printed mean/std, and returns one
(n, d) embedding (the vision tower's output the library documents as the image embedding). See
docs/byo-model.md for what lookalike does with it.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

import torch
from torch import nn

CLIP = "0.48145466:0.4578275:0.40821073", "0.26862954:0.26130258:0.27577711"
IMAGENET = "imagenet", "imagenet"
HALF = "half", "half"


class _Call(nn.Module):
    """Wraps a callable (pixels -> embedding) as a module for the exporter."""

    def __init__(self, module: nn.Module, fn):
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, pixels):
        return self.fn(self.module, pixels)


def from_hf(name: str):
    """CLIP / SigLIP: the projected image embedding; DINOv2 and other ViTs: the CLS token."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(name)
    kind = config.model_type
    processor = transformers.AutoImageProcessor.from_pretrained(name)
    size = processor.crop_size if getattr(processor, "crop_size", None) else processor.size
    side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else int(size)
    mean = ":".join(f"{v:g}" for v in processor.image_mean)
    std = ":".join(f"{v:g}" for v in processor.image_std)
    if kind == "clip":
        model = transformers.CLIPModel.from_pretrained(name).eval()
        fn = lambda m, x: m.get_image_features(pixel_values=x)  # noqa: E731
    elif kind == "siglip":
        model = transformers.SiglipModel.from_pretrained(name).eval()
        fn = lambda m, x: m.get_image_features(pixel_values=x)  # noqa: E731
    else:  # dinov2, vit, ...: the first token of the last hidden state
        model = transformers.AutoModel.from_pretrained(name).eval()
        fn = lambda m, x: m(pixel_values=x).last_hidden_state[:, 0]  # noqa: E731
    return _Call(model, fn), side, mean, std


def from_timm(name: str):
    import timm

    model = timm.create_model(name, pretrained=True, num_classes=0).eval()  # num_classes=0: pooled features
    cfg = model.pretrained_cfg
    mean = ":".join(f"{v:g}" for v in cfg["mean"])
    std = ":".join(f"{v:g}" for v in cfg["std"])
    return model, cfg["input_size"][-1], mean, std


def from_torch(target: str):
    module_name, _, attr = target.partition(":")
    if not attr:
        sys.exit("torch mode needs module:function, e.g. mypackage.models:build_model")
    return getattr(importlib.import_module(module_name), attr)().eval(), None, None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=("hf", "timm", "torch"))
    parser.add_argument("model", help="hub name (hf, timm) or module:function (torch)")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--size", type=int, help="input side in pixels (default: the model's)")
    parser.add_argument("--mean", help="imagenet | clip | half | none | a:b:c (torch mode default: imagenet)")
    parser.add_argument("--std", help="same choices as --mean")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()

    module, side, mean, std = {"hf": from_hf, "timm": from_timm, "torch": from_torch}[args.source](args.model)
    side = args.size or side or 224
    mean, std = args.mean or mean or "imagenet", args.std or std or "imagenet"
    dummy = torch.zeros(2, 3, side, side)
    with torch.inference_mode():
        out = module(dummy)
    if out.ndim != 2:
        print(f"note: the output has shape {tuple(out.shape)}; add pool=avg (or max/gem/cls) to the spec")
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        # Batch dynamic, size fixed: lookalike reads the size from the file.
        torch.onnx.export(module, (dummy,), args.out, input_names=["pixels"], output_names=["embedding"],
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=args.opset, do_constant_folding=True, dynamo=False)
    # ',' '@' '=' delimit a spec: percent-encoded in the path (as lookalike.encoders.byo.encode_path)
    path = args.out.replace("%", "%25").replace(",", "%2C").replace("@", "%40").replace("=", "%3D")
    spec = f"onnx:{path}"
    if mean != "imagenet":
        spec += f",mean={mean}"
    if std != "imagenet":
        spec += f",std={std}"
    print(f"wrote {args.out}: input (n, 3, {side}, {side}), output {tuple(out.shape[1:])}")
    print(f"use it with: --encoder '{spec}'  (an absolute path keeps the catalog usable from any folder)")


if __name__ == "__main__":
    main()
