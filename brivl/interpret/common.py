"""What both interpretation algorithms share: the frozen model, augmentations, the loop.

Both algorithms keep the image–text model frozen and optimise an *input*: Algorithm 1 an
image parameterisation, Algorithm 2 a generator's latent grid. Each step renders the image,
takes ``n_views`` randomly jittered / scaled / rotated views of it (``affine_grid`` +
``grid_sample``, so the views are differentiable and need no torchvision), embeds them and
the un-augmented image in one batch, and takes an Adam step on
``-mean(cos(view, text)) + tv_weight * TV(image) + l2_weight * mean((image - 0.5)^2)``.
The similarity trace records the *un-augmented* image's similarity before every step, and
finally that of the image exactly as it is returned (rounded to 8-bit).

Every random draw comes from one ``torch.Generator`` seeded by the config, never from the
global RNG, so the same seed gives the same image, bit for bit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from brivl.config_parse import bounded
from brivl.model.precision import autocast


@runtime_checkable
class EmbeddingModel(Protocol):
    """The part of :class:`brivl.model.BriVL` that interpretation needs."""

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]: ...

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [0,1] -> ``[B,D]``, L2-normalised, differentiable."""
        ...

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> ``[B,D]``, L2-normalised."""
        ...


def model_image_size(model: Any) -> int:
    """The square input side the model's image tower expects (``model.config.image_size``)."""
    size = getattr(getattr(model, "config", None), "image_size", None)
    if size is None:
        raise TypeError(
            f"{type(model).__name__} has no config.image_size; interpretation needs a BriVL "
            "model (brivl.model.create_model / load_checkpoint)"
        )
    return int(size)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and no parameter gradients for the duration; the model is restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@torch.no_grad()
def embed_texts(model: EmbeddingModel, texts: Sequence[str]) -> torch.Tensor:
    """``[len(texts), D]`` L2-normalised text embeddings."""
    if isinstance(texts, str):
        raise TypeError("embed_texts takes a list of strings, got one string")
    tokens = model.tokenize(list(texts))
    with frozen(model):  # type: ignore[arg-type]
        return model.encode_text(tokens["input_ids"], tokens["attention_mask"])


def to_model_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[B,3,h,w]`` images to the model's square input (antialiased, differentiable)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> ``[3,H,W]`` float in [0,1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255.0)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """``[3,H,W]`` or ``[1,3,H,W]`` in [0,1] -> 8-bit RGB PIL image (rounded, clamped)."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy(), mode="RGB")


def quantize_8bit(image: torch.Tensor) -> torch.Tensor:
    """The image as it will be saved: rounded to 8 bits, back in [0,1]."""
    return image.detach().clamp(0, 1).mul(255).round().div(255)


@torch.no_grad()
def image_text_similarity(
    model: EmbeddingModel,
    images: torch.Tensor | Image.Image | Sequence[Image.Image],
    texts: Sequence[str],
) -> torch.Tensor:
    """Cosine similarities ``[n_images, n_texts]`` of (un-augmented) images to texts."""
    if isinstance(images, Image.Image):
        images = [images]
    if not isinstance(images, torch.Tensor):
        images = torch.stack([pil_to_tensor(im) for im in images])
    size = model_image_size(model)
    with frozen(model):  # type: ignore[arg-type]
        image_emb = model.encode_image(to_model_input(images.float(), size))
    return image_emb @ embed_texts(model, texts).T


@dataclass
class ViewAugmentConfig:
    """Random views of the optimised image at every interpretation step (not the training
    augmentation, :class:`brivl.train.TrainAugmentConfig`)."""

    n_views: int = bounded(4, min=1, max=256)  # augmented copies per step (the loss averages)
    jitter: float = bounded(0.06, min=0, max=1)  # max translation, a fraction of the side
    scale_min: float = bounded(0.9, gt=0, max=10)  # zoom range (>1 zooms in)
    scale_max: float = bounded(1.1, gt=0, max=10)
    rotate_deg: float = bounded(10.0, min=0, max=180)  # max rotation either way, degrees
    flip: bool = False  # random horizontal flips
    padding_mode: str = bounded("reflection", choices=("reflection", "border", "zeros"))

    def __post_init__(self) -> None:
        if self.n_views < 1:
            raise ValueError(f"augment.n_views must be >= 1, got {self.n_views}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"augment.scale_min/scale_max must satisfy 0 < min <= max, got "
                f"{self.scale_min}/{self.scale_max}"
            )
        if self.padding_mode not in ("reflection", "border", "zeros"):
            raise ValueError(
                f"augment.padding_mode {self.padding_mode!r}; accepted: reflection, border, zeros"
            )


def random_views(
    image: torch.Tensor, config: ViewAugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """``config.n_views`` random affine views of one ``[1,3,H,W]`` image -> ``[n,3,H,W]``."""
    n = config.n_views
    u = torch.rand(n, 5, generator=generator)
    angle = (u[:, 0] * 2 - 1) * math.radians(config.rotate_deg)
    log_lo, log_hi = math.log(config.scale_min), math.log(config.scale_max)
    scale = torch.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    shift = (u[:, 2:4] * 2 - 1) * 2 * config.jitter  # normalised coords span 2
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if config.flip else torch.ones(n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(  # [n,2,3]: output coords -> input coords
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    batch = image.expand(n, -1, -1, -1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(
        batch, grid, mode="bilinear", padding_mode=config.padding_mode, align_corners=False
    )


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dx + dy


@dataclass
class TracedImage:
    """An optimised image and how its similarity to the text evolved."""

    image: Image.Image
    trace: list[float]  # un-augmented cosine similarity before each step; last = returned image

    @property
    def initial_similarity(self) -> float:
        return self.trace[0]

    @property
    def final_similarity(self) -> float:
        return self.trace[-1]


@dataclass
class OptimiseResult:
    """The rendered image after the last step and the similarity trace."""

    image: torch.Tensor  # [1,3,H,W] in [0,1], rounded to 8 bits
    trace: list[float]  # un-augmented similarity before each step, then of the returned image


def optimise_input(
    model: EmbeddingModel,
    text: str,
    render: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    steps: int,
    lr: float,
    augment: ViewAugmentConfig,
    tv_weight: float,
    l2_weight: float,
    generator: torch.Generator,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> OptimiseResult:
    """Adam on ``params`` so that ``render()``'s views embed close to ``text``."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    size = model_image_size(model)
    target = embed_texts(model, [text])[0]  # [D]
    optimiser = torch.optim.Adam(params, lr=lr)
    trace: list[float] = []
    with frozen(model):  # type: ignore[arg-type]
        for step in range(steps):
            image = render()  # [1,3,h,w]
            resized = to_model_input(image, size)
            views = random_views(resized, augment, generator)  # [n,3,S,S]
            with autocast(resized.device):
                emb = model.encode_image(torch.cat([resized, views])).float()  # [1+n,D]
            sims = emb @ target  # [1+n]
            loss = -sims[1:].mean()
            if tv_weight:
                loss = loss + tv_weight * total_variation(image)
            if l2_weight:
                loss = loss + l2_weight * (image - 0.5).pow(2).mean()
            if extra_loss is not None:
                loss = loss + extra_loss()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            trace.append(float(sims[0].detach()))
            if on_step is not None:
                on_step(step, trace[-1])
        with torch.no_grad():
            final = quantize_8bit(render())
            trace.append(float(model.encode_image(to_model_input(final, size))[0] @ target))
    return OptimiseResult(final, trace)


