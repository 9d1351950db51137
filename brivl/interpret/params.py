"""Image parameterisations for Algorithm 1: what the optimiser actually changes.

``fourier`` (default): a 2-D real FFT spectrum per colour channel, scaled by 1/frequency so
that low frequencies dominate (natural images have roughly a 1/f spectrum), inverse
transformed, mixed from a decorrelated colour space into RGB and squashed to [0,1] by a
sigmoid. ``pixel``: one logit per pixel and channel, same colour mixing and sigmoid. The
Fourier basis makes the steepest-descent direction smooth, which is what keeps the result
from turning into adversarial high-frequency noise (Olah et al., "Feature Visualization").
``shapes``: a few flat-coloured soft ellipses painted in order on a white canvas (position,
radii, angle, colour and opacity are the parameters), a strong prior for clip-art-like
pictures: the optimiser can only say *which colours, where, how big*, so the result shows
colour and rough shape instead of texture (in the spirit of CLIPDraw's strokes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Square root of the colour correlation of ImageNet RGB (from the Lucid library); mixing a
# decorrelated space through it makes each optimised channel move colours the way natural
# images do.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MIX = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()

PARAM_KINDS = ("fourier", "pixel", "shapes")
SHAPES = 16  # ellipses of the ``shapes`` parameterisation
EDGE_SHARPNESS = 10.0  # steepness of an ellipse's soft edge (larger = crisper)
OPACITY_LOGIT = 0.0  # initial opacity logit of every ellipse (0 = half-transparent)


def _mix_colours(image: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if not decorrelate:
        return image
    return torch.einsum("ij,bjhw->bihw", COLOR_MIX.to(image), image)


class FourierImage(nn.Module):
    """An image parameterised by its (1/f-scaled) spectrum in a decorrelated colour space."""

    def __init__(
        self,
        size: int,
        *,
        generator: torch.Generator,
        init_sd: float = 0.01,
        decay: float = 1.0,
        decorrelate: bool = True,
    ) -> None:
        super().__init__()
        self.size, self.decorrelate = size, decorrelate
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)  # [H, W//2+1]
        scale = 1.0 / freqs.clamp(min=1.0 / size) ** decay * size
        self.register_buffer("scale", scale, persistent=False)
        spectrum = torch.randn(1, 3, size, size // 2 + 1, 2, generator=generator) * init_sd
        self.spectrum = nn.Parameter(spectrum)  # [1,3,H,W//2+1,(re,im)]

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale  # [1,3,H,W//2+1]
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size)) / 4.0  # [1,3,H,W]
        return torch.sigmoid(_mix_colours(image, self.decorrelate))


class PixelImage(nn.Module):
    """An image parameterised pixel by pixel (logits), optionally colour-decorrelated."""

    def __init__(
        self,
        size: int,
        *,
        generator: torch.Generator,
        init_sd: float = 0.01,
        decorrelate: bool = True,
    ) -> None:
        super().__init__()
        self.decorrelate = decorrelate
        self.logits = nn.Parameter(torch.randn(1, 3, size, size, generator=generator) * init_sd)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(_mix_colours(self.logits, self.decorrelate))


class ShapesImage(nn.Module):
    """``n`` soft ellipses with flat colours, painted back to front on white."""

    def __init__(self, size: int, *, generator: torch.Generator, n: int = SHAPES) -> None:
        super().__init__()
        self.size = size
        self.centre = nn.Parameter(torch.rand(n, 2, generator=generator) * 1.2 - 0.6)
        radii = math.log(0.25) + 0.3 * torch.randn(n, 2, generator=generator)
        self.log_radii = nn.Parameter(radii)  # half-axes, in units of half the image side
        self.angle = nn.Parameter(torch.rand(n, generator=generator) * math.pi)
        self.colour = nn.Parameter(torch.randn(n, 3, generator=generator) * 0.5)  # logits
        self.opacity = nn.Parameter(torch.full((n,), OPACITY_LOGIT))  # start half-transparent
        axis = torch.linspace(-1, 1, size)
        ys, xs = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys], -1), persistent=False)  # [H,W,2]

    def forward(self) -> torch.Tensor:
        offset = self.grid[None] - self.centre[:, None, None, :]  # [n,H,W,2]
        cos, sin = torch.cos(self.angle)[:, None, None], torch.sin(self.angle)[:, None, None]
        u = cos * offset[..., 0] + sin * offset[..., 1]
        v = cos * offset[..., 1] - sin * offset[..., 0]
        radii = self.log_radii.exp()[:, None, None, :]  # [n,1,1,2]
        inside = 1 - (u / radii[..., 0]) ** 2 - (v / radii[..., 1]) ** 2
        alpha = torch.sigmoid(inside * EDGE_SHARPNESS) * torch.sigmoid(self.opacity)[:, None, None]
        colours = torch.sigmoid(self.colour)
        image = torch.ones(3, self.size, self.size, device=alpha.device)
        for k in range(len(alpha)):  # back to front
            image = image * (1 - alpha[k]) + colours[k][:, None, None] * alpha[k]
        return image[None]


def make_image_param(
    kind: str,
    size: int,
    *,
    generator: torch.Generator,
    init_sd: float = 0.01,
    decay: float = 1.0,
    decorrelate: bool = True,
) -> nn.Module:
    """A module whose ``forward()`` renders a ``[1,3,size,size]`` image in [0,1]."""
    if kind == "fourier":
        return FourierImage(
            size, generator=generator, init_sd=init_sd, decay=decay, decorrelate=decorrelate
        )
    if kind == "pixel":
        return PixelImage(size, generator=generator, init_sd=init_sd, decorrelate=decorrelate)
    if kind == "shapes":
        return ShapesImage(size, generator=generator)
    raise ValueError(f"unknown image parameterisation {kind!r}; accepted: {', '.join(PARAM_KINDS)}")
