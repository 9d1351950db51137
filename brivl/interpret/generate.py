"""Algorithm 2 — text-to-image: optimise a generator's latent grid so its image matches a text.

The image prior is a generator: anything with a latent shape, a seeded random initial
latent and a differentiable ``decode`` (the paper uses VQGAN and notes any generator can
replace it; :class:`brivl.interpret.vqgan.VQGenerator` is the one this pipeline trains). The
pre-quantisation latent is optimised with Adam under the same augmentations and regularisers
as Algorithm 1; with ``snap_to_codebook`` each step (and the result) goes through the
generator's ``quantize`` with a straight-through gradient. ``init="white"`` starts from the
generator's encoding of a white canvas, and ``latent_cells`` optimises a coarse offset grid
upsampled onto the latent, so the image changes in regions rather than code by code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from brivl.config_parse import bounded, config_from_dict
from brivl.interpret.common import (
    EmbeddingModel,
    TracedImage,
    ViewAugmentConfig,
    frozen,
    optimise_input,
    tensor_to_pil,
)


@runtime_checkable
class Generator(Protocol):
    """What Algorithm 2 needs of an image generator."""

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent, without the batch dimension (e.g. ``(D, h, w)``)."""
        ...

    def init_latent(self, seed: int) -> torch.Tensor:
        """A random starting latent ``[1, *latent_shape]``, the same for the same seed."""
        ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``[B, *latent_shape]`` -> images ``[B,3,H,W]`` in [0,1], differentiable."""
        ...


INITS = ("random", "white")


@dataclass
class TextToImageConfig:
    """Everything that decides a text-to-image result (same config and seed => same image)."""

    steps: int = bounded(200, min=0, max=1_000_000)  # Adam steps on the latent
    size: int | None = bounded(None, min=8, max=4096)  # output side; None: the generator's
    lr: float = bounded(0.05, gt=0, max=100)  # Adam learning rate on the latent
    seed: int = bounded(0, min=0)  # seeds the initial latent and every augmentation draw
    snap_to_codebook: bool = False  # quantise (straight-through) when the generator can
    latent_l2_weight: float = bounded(0.0, min=0)  # pull the latent towards its start
    tv_weight: float = bounded(0.0, min=0)  # total-variation weight on the decoded image
    l2_weight: float = bounded(0.0, min=0)  # L2 pull of the decoded image towards mid-grey
    # where the latent starts: "random" (the generator's init_latent(seed)) or "white" (the
    # generator's encoding of a white canvas, plus init_noise x its std of seeded noise)
    init: str = "random"
    init_noise: float = bounded(0.0, min=0)
    # optimise a coarse cells x cells offset, bilinearly upsampled onto the latent grid
    # (None: every latent cell is free); coarse offsets paint regions of one colour
    latent_cells: int | None = bounded(None, min=1, max=4096)
    augment: ViewAugmentConfig = field(default_factory=ViewAugmentConfig)

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 8:
            raise ValueError(f"size must be >= 8 pixels (or None), got {self.size}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; accepted: {', '.join(INITS)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TextToImageConfig:
        """From a plain (JSON) dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, data, "generate")


@dataclass
class GenerateResult(TracedImage):
    """The generated image, its latent and how the similarity to the text evolved."""

    latent: torch.Tensor  # the optimised latent [1, *latent_shape]
    text: str
    config: TextToImageConfig


def generate(
    model: EmbeddingModel,
    generator: Generator,
    text: str,
    config: TextToImageConfig | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> GenerateResult:
    """Optimise ``generator``'s latent so the frozen model embeds its image close to ``text``."""
    config = config or TextToImageConfig()
    quantize = getattr(generator, "quantize", None) if config.snap_to_codebook else None
    if config.snap_to_codebook and quantize is None:
        raise ValueError(
            f"snap_to_codebook=True but {type(generator).__name__} has no quantize(latent)"
        )
    rng = torch.Generator().manual_seed(config.seed)
    base, start = _start(generator, config)
    latent = start.clone().requires_grad_(True)

    def full_latent() -> torch.Tensor:
        if base is None:
            return latent
        return base + F.interpolate(latent, size=base.shape[-2:], mode="bilinear", align_corners=False)

    def render() -> torch.Tensor:
        code = quantize(full_latent()) if quantize is not None else full_latent()
        image = generator.decode(code)  # [1,3,H,W]
        if config.size and image.shape[-1] != config.size:
            image = F.interpolate(
                image, size=(config.size, config.size), mode="bicubic", align_corners=False
            ).clamp(0, 1)
        return image

    def latent_penalty() -> torch.Tensor:
        return config.latent_l2_weight * (latent - start).pow(2).mean()

    context = (
        frozen(generator) if isinstance(generator, torch.nn.Module) else contextlib.nullcontext()
    )
    with context:
        result = optimise_input(
            model,
            text,
            render,
            [latent],
            steps=config.steps,
            lr=config.lr,
            augment=config.augment,
            tv_weight=config.tv_weight,
            l2_weight=config.l2_weight,
            generator=rng,
            extra_loss=latent_penalty if config.latent_l2_weight else None,
            on_step=on_step,
        )
    return GenerateResult(tensor_to_pil(result.image), result.trace, full_latent().detach(), text,
                          config)


@torch.no_grad()
def _start(generator: Generator, config: TextToImageConfig) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(base latent or None, the optimised tensor's start). With ``latent_cells`` the
    optimised tensor is a coarse offset added (upsampled) to the base."""
    if config.init == "random":
        base = generator.init_latent(config.seed).detach()
    else:
        encode = getattr(generator, "encode", None)
        if encode is None:
            raise ValueError(f"init='white' needs a generator with encode(images); "
                             f"{type(generator).__name__} has none (accepted: init='random')")
        side = getattr(generator, "image_size", None) or 64
        base = encode(torch.ones(1, 3, side, side)).detach()  # [1,D,h,w]
    noise = torch.Generator().manual_seed(config.seed)
    shape = (base.shape[:2] + (config.latent_cells, config.latent_cells)
             if config.latent_cells else base.shape)
    jitter = config.init_noise * base.std() * torch.randn(shape, generator=noise)
    if config.latent_cells:
        return base, jitter
    return None, base + jitter
