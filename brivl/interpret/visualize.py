"""Algorithm 1 — neural-network visualisation: the image a frozen model "imagines" for a text.

Optimise an image parameterisation (see :mod:`brivl.interpret.params`) with Adam so that
its embedding under the model's image tower moves towards the text's embedding, under
random augmentations and total-variation / L2 regularisers (:mod:`brivl.interpret.common`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from brivl.config_parse import bounded, config_from_dict
from brivl.interpret.common import (
    EmbeddingModel,
    TracedImage,
    ViewAugmentConfig,
    model_image_size,
    optimise_input,
    tensor_to_pil,
)
from brivl.interpret.params import PARAM_KINDS, make_image_param


@dataclass
class VisualizeConfig:
    """Everything that decides the visualisation (same config and seed => same image)."""

    steps: int = bounded(256, min=0, max=1_000_000)  # Adam steps
    size: int | None = bounded(None, min=8, max=4096)  # output side; None: the model's input
    lr: float = bounded(0.05, gt=0, max=100)  # Adam learning rate on the parameterisation
    seed: int = bounded(0, min=0)  # seeds the initial image and every augmentation draw
    param: str = bounded("fourier", choices=PARAM_KINDS)  # image parameterisation
    decorrelate: bool = True  # optimise in a decorrelated colour space
    fourier_decay: float = bounded(1.0, min=0, max=10)  # spectrum scaling 1/f**decay
    init_sd: float = bounded(0.01, min=0, max=10)  # std of the random initial parameters
    tv_weight: float = bounded(0.05, min=0)  # total-variation regulariser weight
    l2_weight: float = bounded(0.0, min=0)  # L2 pull towards mid-grey
    augment: ViewAugmentConfig = field(default_factory=ViewAugmentConfig)

    def __post_init__(self) -> None:
        if self.param not in PARAM_KINDS:
            raise ValueError(f"param {self.param!r}; accepted: {', '.join(PARAM_KINDS)}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"size must be >= 8 pixels (or None), got {self.size}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> VisualizeConfig:
        """From a plain (JSON) dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, data, "visualize")


@dataclass
class VisualizeResult(TracedImage):
    """The visualisation and how the similarity to the text evolved."""

    text: str
    config: VisualizeConfig


def visualize(
    model: EmbeddingModel,
    text: str,
    config: VisualizeConfig | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> VisualizeResult:
    """Optimise an image so the frozen model embeds it close to ``text``."""
    config = config or VisualizeConfig()
    size = config.size or model_image_size(model)
    generator = torch.Generator().manual_seed(config.seed)
    image_param = make_image_param(
        config.param,
        size,
        generator=generator,
        init_sd=config.init_sd,
        decay=config.fourier_decay,
        decorrelate=config.decorrelate,
    )
    result = optimise_input(
        model,
        text,
        image_param,
        list(image_param.parameters()),
        steps=config.steps,
        lr=config.lr,
        augment=config.augment,
        tv_weight=config.tv_weight,
        l2_weight=config.l2_weight,
        generator=generator,
        on_step=on_step,
    )
    return VisualizeResult(tensor_to_pil(result.image), result.trace, text, config)
