"""Image parameterisations for Algorithm 1: what the optimiser actually changes.

``fourier`` (default): a 2-D real FFT spectrum per colour channel, scaled by 1/frequency so
that low frequencies dominate (natural images have roughly a 1/f spectrum), inverse
transformed, mixed from a decorrelated colour space into RGB and squashed to [0,1] by a
sigmoid. ``pixel``: one logit per pixel and channel, same colour mixing and sigmoid. The
Fourier basis makes the steepest-descent direction smooth, which is what keeps the result
from turning into adversarial high-frequency noise (Olah et al., "Feature Visualization").
"""

from __future__ import annotations

import torch
from torch import nn

# Square root of the colour correlation of ImageNet RGB (from the Lucid library); mixing a
# decorrelated space through it makes each optimised channel move colours the way natural
# images do.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MIX = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()

PARAM_KINDS = ("fourier", "pixel")


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
    raise ValueError(f"unknown image parameterisation {kind!r}; accepted: {', '.join(PARAM_KINDS)}")
