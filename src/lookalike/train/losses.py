"""Metric-learning losses on a batch of L2-normalised embeddings, and the triplet mining they use.

* ``triplet`` — FaceNet's triplet loss, ``max(0, d(a,p) - d(a,n) + margin)`` on squared-free
  euclidean distances of unit vectors, with **semi-hard** (the closest negative that is still
  farther than the positive; the farthest negative when none is) or **hard** (batch-hard: the
  farthest positive and the closest negative per anchor) mining.
* ``multi-similarity`` — Wang et al., CVPR 2019: pair mining by relative similarity, then a
  soft weighting of every kept positive and negative pair.
* ``proxy-anchor`` — Kim et al., CVPR 2020: one learnable proxy per class; every sample is pulled to
  its class proxy and pushed from the others, so each batch sees the whole class structure.

All losses take ``(embeddings (n, d) unit-norm, labels (n,) int64)`` and return a scalar tensor.

Fine-tuning the backbone (:mod:`lookalike.train.finetune`) takes its losses, miners and the
self-supervised NT-Xent from ``pytorch-metric-learning`` (Musgrave et al., 2020) instead:
:func:`make_pml_loss` builds ``proxy-anchor``, ``normalized-softmax`` (Zhai & Wu, BMVC 2019),
``arcface`` (Deng et al., CVPR 2019), ``triplet`` (margin 0.1, semi-hard triplets from
``TripletMarginMiner``), ``multi-similarity`` (with its miner) and ``ntxent`` (SimCLR, Chen et al.
2020), and sums of them written ``a+b`` (a metric loss plus a classification loss). The hand-written
losses above stay what ``train metric`` measured its defaults with (docs/metric-learning.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lookalike.encoders.pretrained import IMAGENET_MEAN, IMAGENET_STD, load_backbone, pool_features

LOSSES = ("triplet-semihard", "triplet-hard", "multi-similarity", "proxy-anchor")
PML_LOSSES = ("proxy-anchor", "normalized-softmax", "arcface", "triplet", "multi-similarity", "ntxent")


def pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between unit vectors, from their cosine similarity (stable, no sqrt(0))."""
    sim = emb @ emb.T
    return torch.sqrt(torch.clamp(2.0 - 2.0 * sim, min=1e-12))


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same  # positives (not self), negatives


def mine_triplets(emb: torch.Tensor, labels: torch.Tensor, strategy: str = "semihard", margin: float = 0.2):
    """Indices ``(anchor, positive, negative)`` of the triplets the loss uses.

    ``semihard``: every (anchor, positive) pair with the closest negative farther than the positive
    (``d(a,p) < d(a,n)``); when no negative is, the farthest negative (FaceNet / tf-addons rule).
    ``hard``: per anchor, its farthest positive and closest negative.
    Anchors with no positive or no negative in the batch are skipped.
    """
    dist = pairwise_distances(emb.detach())
    pos, neg = _masks(labels)
    inf = torch.tensor(float("inf"), device=emb.device)
    if strategy == "hard":
        has = pos.any(1) & neg.any(1)
        anchors = torch.nonzero(has).flatten()
        positives = torch.where(pos, dist, -inf).argmax(1)[anchors]
        negatives = torch.where(neg, dist, inf).argmin(1)[anchors]
        return anchors, positives, negatives
    if strategy != "semihard":
        raise ValueError(f"unknown mining strategy {strategy!r}: use semihard or hard")
    a, p = torch.nonzero(pos, as_tuple=True)
    keep = neg[a].any(1)
    a, p = a[keep], p[keep]
    d_ap = dist[a, p][:, None]
    d_an = dist[a]  # (pairs, n)
    outside = neg[a] & (d_an > d_ap)
    closest_outside = torch.where(outside, d_an, inf).argmin(1)
    farthest_inside = torch.where(neg[a], d_an, -inf).argmax(1)
    n = torch.where(outside.any(1), closest_outside, farthest_inside)
    return a, p, n


def triplet_loss(emb, labels, margin: float = 0.2, strategy: str = "semihard") -> torch.Tensor:
    a, p, n = mine_triplets(emb, labels, strategy, margin)
    if len(a) == 0:
        return emb.sum() * 0.0
    d_ap = (emb[a] - emb[p]).norm(dim=1)
    d_an = (emb[a] - emb[n]).norm(dim=1)
    return F.relu(d_ap - d_an + margin).mean()


def multi_similarity_loss(emb, labels, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                          epsilon: float = 0.1) -> torch.Tensor:
    sim = emb @ emb.T
    pos, neg = _masks(labels)
    # Pair mining: keep positives less similar than the hardest negative (+eps) and negatives more
    # similar than the hardest positive (-eps) — the informative pairs only.
    hardest_neg = torch.where(neg, sim, torch.full_like(sim, -2.0)).max(1, keepdim=True).values
    hardest_pos = torch.where(pos, sim, torch.full_like(sim, 2.0)).min(1, keepdim=True).values
    pos_kept = pos & (sim - epsilon < hardest_neg)
    neg_kept = neg & (sim + epsilon > hardest_pos)
    pos_term = torch.log1p((torch.exp(-alpha * (sim - base)) * pos_kept).sum(1)) / alpha
    neg_term = torch.log1p((torch.exp(beta * (sim - base)) * neg_kept).sum(1)) / beta
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return emb.sum() * 0.0
    return (pos_term + neg_term)[valid].mean()


class ProxyAnchorLoss(nn.Module):
    """Proxy-anchor loss with one learnable proxy per class (train proxies with a larger lr)."""

    def __init__(self, n_classes: int, dim: int, alpha: float = 32.0, delta: float = 0.1):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")
        self.alpha, self.delta = alpha, delta

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sim = emb @ F.normalize(self.proxies, dim=1).T  # (n, classes)
        onehot = F.one_hot(labels, self.proxies.shape[0]).bool()
        pos_exp = torch.where(onehot, torch.exp(-self.alpha * (sim - self.delta)), torch.zeros_like(sim))
        neg_exp = torch.where(~onehot, torch.exp(self.alpha * (sim + self.delta)), torch.zeros_like(sim))
        with_pos = onehot.any(0)  # proxies that have samples in this batch
        pos_term = torch.log1p(pos_exp.sum(0))[with_pos].sum() / with_pos.sum().clamp(min=1)
        neg_term = torch.log1p(neg_exp.sum(0)).sum() / self.proxies.shape[0]
        return pos_term + neg_term


def make_loss(name: str, n_classes: int, dim: int, margin: float = 0.2):
    """A callable ``loss(emb, labels)`` and its own parameters (proxies) to optimise."""
    if name == "triplet-semihard":
        return (lambda e, y: triplet_loss(e, y, margin, "semihard")), []
    if name == "triplet-hard":
        return (lambda e, y: triplet_loss(e, y, margin, "hard")), []
    if name == "multi-similarity":
        return multi_similarity_loss, []
    if name == "proxy-anchor":
        loss = ProxyAnchorLoss(n_classes, dim)
        return loss, list(loss.parameters())
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


class FrozenBackbone(nn.Module):
    """The base of the backbone-feature losses: the pretrained EfficientNet-Lite0 that ``effnet-lite0``
    ships (``backbone``: a :func:`lookalike.encoders.pretrained.load_backbone` result to share one
    copy between losses), frozen (no gradients to its weights) and kept in eval mode (its BatchNorm
    statistics stay the pretrained ones, whatever ``train()`` says), with the ImageNet normalisation
    of (n, 3, S, S) float images in [0, 1]. Gradients flow to the images only."""

    def __init__(self, backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else load_backbone()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        return super().train(False)  # BatchNorm statistics stay the pretrained ones

    def activations(self, x: torch.Tensor, blocks: tuple[int, ...],
                    pooled: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(the activations after each block in ``blocks``, (n, 1280) pooled features L2-normalised —
        the encoder's vector — or None): without ``pooled`` only the stem and the blocks up to
        ``max(blocks)`` run."""
        net = self.backbone.net
        h = net._swish(net._bn0(net._conv_stem((x - self.mean) / self.std)))
        out = []
        for i, block in enumerate(net._blocks if pooled else net._blocks[: max(blocks) + 1]):
            h = block(h)
            if i in blocks:
                out.append(h)
        if not pooled:
            return out, None
        maps = net._swish(net._bn1(net._conv_head(h)))
        return out, F.normalize(pool_features(maps, self.backbone.pooling, self.backbone.gem_p), dim=1)


def _block_errors(pred: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    # each block's error relative to its activations' energy, so the blocks weigh alike
    return torch.stack([(p - t).pow(2).mean(dim=(1, 2, 3)) / t.pow(2).mean().clamp(min=1e-6)
                        for p, t in zip(pred, target)]).mean(0)


class PerceptualLoss(FrozenBackbone):
    """Feature-space reconstruction loss on the early blocks of the frozen EfficientNet-Lite0
    (:class:`FrozenBackbone`; Johnson et al., "Perceptual losses for real-time style transfer and
    super-resolution", ECCV 2016; as used for VAEs by Hou et al., "Deep feature consistent VAE", 2017).

    ``loss(x_hat, x)`` takes two (n, 3, S, S) float tensors in [0, 1] (any S >= 16: the model's own
    resolution, no upsampling, which keeps it cheap) and returns (n,) per-image losses: the mean
    squared difference of the activations (of the ImageNet-normalised images) after each block in
    ``blocks`` (0 = 16 channels at S/2, 2 = 24 at S/4, 4 = 40 at S/8), each divided by the target
    batch's mean squared activation (about 1 for unrelated images), averaged over blocks. Only the
    blocks up to the last one in ``blocks`` run.
    """

    def __init__(self, blocks: tuple[int, ...] = (0, 2, 4), backbone: nn.Module | None = None):
        super().__init__(backbone)
        self.blocks = tuple(sorted(blocks))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.activations(x, self.blocks)[0]

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(x)
        return _block_errors(self.features(x_hat), target)


class FeatureMatchLoss(FrozenBackbone):
    """Feature matching on the frozen EfficientNet-Lite0's pooled 1280-d feature (the vector the
    ``effnet-lite0`` encoder and the label probes read): ``loss(x_hat, x)`` takes two (n, 3, S, S)
    float tensors in [0, 1] and returns (n,) per-image losses ``1 - cos(f(x_hat), f(x))``. The deep,
    pooled feature says *what* the product is (garment type, overall shape), which the early blocks
    of :class:`PerceptualLoss` and the pixel loss barely constrain (Hou et al., "Deep feature
    consistent VAE", WACV 2017, match deeper VGG layers for the same reason; Larsen et al. 2016
    learn the feature space instead). Images are resized (bilinear) to ``size`` first when given, and
    always to at least ``MIN_SIDE`` px (the backbone's last stages need a few pixels to convolve).
    """

    MIN_SIDE = 64

    def __init__(self, size: int | None = None, backbone: nn.Module | None = None):
        super().__init__(backbone)
        self.size = size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) in [0, 1] -> (n, 1280) pooled features, L2-normalised."""
        side = self.size or max(x.shape[-1], self.MIN_SIDE)
        if x.shape[-1] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        return F.normalize(self.backbone((x - self.mean) / self.std), dim=1)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(x)
        return 1.0 - (self.features(x_hat) * target).sum(dim=1)


class PerceptualFeatureLoss(FrozenBackbone):
    """:class:`PerceptualLoss` and :class:`FeatureMatchLoss` from ONE pass of the frozen backbone:
    the early blocks' activations and the pooled feature come out of the same forward (and backward)
    pass, about a third cheaper than the two modules apart. ``loss(x_hat, x)`` takes two
    (n, 3, S, S) float tensors in [0, 1] with S >= ``FeatureMatchLoss.MIN_SIDE`` (smaller images
    would need the pooled feature upsampled but not the early blocks: use the two modules) and
    returns ((n,) perceptual, (n,) feature-matching) losses, each equal to its module's."""

    def __init__(self, blocks: tuple[int, ...] = (0, 2, 4), backbone: nn.Module | None = None):
        super().__init__(backbone)
        self.blocks = tuple(sorted(blocks))

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the early blocks' activations, (n, 1280) pooled features, L2-normalised)."""
        if x.shape[-1] < FeatureMatchLoss.MIN_SIDE:
            raise ValueError(f"images must be at least {FeatureMatchLoss.MIN_SIDE} px, got {x.shape[-1]}")
        return self.activations(x, self.blocks, pooled=True)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            target_early, target = self.features(x)
        early, pooled = self.features(x_hat)
        return _block_errors(early, target_early), 1.0 - (pooled * target).sum(dim=1)


def latent_mmd(z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Maximum mean discrepancy between a batch of latent codes ``z`` (n, d) and as many draws
    ``prior`` (n, d) from the prior N(0, I), with the inverse multiquadratic kernel
    k(a, b) = Σ_s C_s / (C_s + ‖a − b‖²), C_s = 2·d·s for s in 0.1 … 10 (Tolstikhin et al.,
    "Wasserstein auto-encoders", ICLR 2018; the unbiased estimator, so 0 in expectation when the codes
    follow the prior). As a VAE loss term it makes the *aggregate* posterior — where all the items
    lie together — fill N(0, I) (InfoVAE, Zhao, Song & Ermon, AAAI 2019), which the per-item KL term
    does not: a point drawn from N(0, I) then decodes to a product rather than to a gap between them.
    Returns a scalar tensor (may be slightly negative); ValueError with fewer than two codes."""
    n, d = z.shape
    if n < 2 or prior.shape != z.shape:
        raise ValueError("latent_mmd needs two (n >= 2, d) batches of the same shape")
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(c / (c + d2) for c in (2.0 * d * s for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)))

    within = (kernel(z, z)[off].mean() + kernel(prior, prior)[off].mean())
    return within - 2.0 * kernel(z, prior).mean()


class PatchDiscriminator(nn.Module):
    """A small PatchGAN discriminator (Isola et al., "Image-to-image translation with conditional
    adversarial networks", CVPR 2017; the VAE-GAN's critic of Larsen et al., ICML 2016, made
    patch-wise as in VQGAN, Esser et al., CVPR 2021): (n, 3, S, S) float images in [0, 1] -> (n, 1,
    S/4 - 2, S/4 - 2) logits, one per overlapping patch of about 34 px (real > 0 > generated).
    Two stride-2 4x4 convolutions (``width``, 2 x ``width`` channels), one stride-1 (4 x ``width``)
    and a 4x4 output convolution; LeakyReLU 0.2, BatchNorm after the inner ones (pix2pix's layout,
    one layer shallower for 64 px inputs). It judges texture and edges, not the whole image: what
    the pixel and feature losses leave soft."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, stride=1, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 1, 4, stride=1, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2.0 * x - 1.0)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss, mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))) (Lim & Ye,
    "Geometric GAN", 2017; as in VQGAN's ``hinge_d_loss``): a scalar, 0 once every patch is
    classified with margin 1, 2 for a discriminator that outputs 0."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: -mean(D(G(z))) (a scalar)."""
    return -fake_logits.mean()


def adaptive_weight(reconstruction_grad: torch.Tensor, adversarial_grad: torch.Tensor,
                    limit: float = 1e4) -> float:
    """VQGAN's adaptive weight of the adversarial term (Esser et al. 2021, eq. 7):
    ‖∇_L L_rec‖ / (‖∇_L L_GAN‖ + 1e-4), the two gradients taken at the decoder's last layer L, clipped
    to [0, ``limit``]: the adversarial gradient is scaled to the reconstruction's own size, whatever
    the losses' units, so one weight works for any image size or loss mix."""
    return float((reconstruction_grad.norm() / (adversarial_grad.norm() + 1e-4)).clamp(0.0, limit))


def colour_loss(x_hat: torch.Tensor, x: torch.Tensor, size: int = 8) -> torch.Tensor:
    """(n,) per-image mean squared difference of the two images' ``size`` x ``size`` area-averaged
    colours ((n, 3, S, S) floats in [0, 1]): the layout of colour, which a Bernoulli pixel loss
    averages towards grey when the decoder is unsure of the shape, and which the backbone
    features barely hold (the encoder reads the same thumbnail, see
    :class:`lookalike.encoders.autoencoder.FeatureVAE`)."""
    return (F.adaptive_avg_pool2d(x_hat, size) - F.adaptive_avg_pool2d(x, size)).pow(2).mean(dim=(1, 2, 3))


class _PmlLoss(nn.Module):
    """One pytorch-metric-learning loss (and its miner), ``loss(emb, labels)``."""

    def __init__(self, loss: nn.Module, miner=None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.miner is None:
            return self.loss(emb, labels)
        return self.loss(emb, labels, self.miner(emb, labels))


class SumLoss(nn.Module):
    """The sum of several losses on the same batch (``proxy-anchor+normalized-softmax``)."""

    def __init__(self, parts: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict({k.replace("-", "_"): v for k, v in parts.items()})

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sum(part(emb, labels) for part in self.parts.values())


def parse_pml_loss(name: str) -> list[str]:
    """``"proxy-anchor+normalized-softmax"`` -> its parts; ValueError for an unknown part."""
    parts = [p.strip() for p in str(name).split("+") if p.strip()]
    unknown = [p for p in parts if p not in PML_LOSSES]
    if not parts or unknown:
        raise ValueError(f"unknown loss {name!r}; combine {', '.join(PML_LOSSES)} with '+'")
    return parts


def make_pml_loss(name: str, n_classes: int, dim: int) -> SumLoss:
    """The loss module for ``name`` (see :func:`parse_pml_loss`); its parameters (proxies, class
    weights) are trained with the network. ``n_classes`` counts the labels (0 for ``ntxent``)."""
    from pytorch_metric_learning import distances, losses, miners  # ~1 s; only training needs it

    built = {}
    for part in parse_pml_loss(name):
        if part != "ntxent" and n_classes < 2:
            raise ValueError(f"loss {part!r} needs labels of at least two classes")
        if part == "proxy-anchor":
            built[part] = _PmlLoss(losses.ProxyAnchorLoss(n_classes, dim, margin=0.1, alpha=32))
        elif part == "normalized-softmax":
            built[part] = _PmlLoss(losses.NormalizedSoftmaxLoss(n_classes, dim, temperature=0.05))
        elif part == "arcface":
            built[part] = _PmlLoss(losses.ArcFaceLoss(n_classes, dim, margin=28.6, scale=64))
        elif part == "triplet":
            built[part] = _PmlLoss(losses.TripletMarginLoss(margin=0.1),
                                   miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard"))
        elif part == "multi-similarity":
            built[part] = _PmlLoss(losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5),
                                   miners.MultiSimilarityMiner(epsilon=0.1))
        else:  # ntxent: labels say which rows are two views of one image
            built[part] = _PmlLoss(losses.NTXentLoss(temperature=0.1, distance=distances.CosineSimilarity()))
    return SumLoss(built)
