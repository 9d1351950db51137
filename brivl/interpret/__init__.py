"""Interpretation: what a frozen BriVL model "imagines" for a text.

Algorithm 1, :func:`visualize` — optimise an image parameterisation (decorrelated colour +
Fourier basis) so its embedding matches the text's. Algorithm 2, :func:`generate` — optimise
the latent grid of an image generator (any :class:`Generator`; the pipeline trains a
:class:`VQGenerator` on its own images with :func:`train_generator`) instead.

>>> from brivl.interpret import visualize, VisualizeConfig
>>> result = visualize(model, "a red circle", VisualizeConfig(steps=200, seed=0))
>>> result.image.save("red_circle.png"); result.trace[0], result.trace[-1]
"""

from brivl.interpret.common import EmbeddingModel, ViewAugmentConfig, image_text_similarity
from brivl.interpret.data import ReadStats, iter_shard_images
from brivl.interpret.generate import GenerateResult, Generator, TextToImageConfig, generate
from brivl.interpret.grid import compose_grid, render_prompt_grid
from brivl.interpret.visualize import VisualizeConfig, VisualizeResult, visualize
from brivl.interpret.vqgan import (
    VQGenerator,
    VQGeneratorConfig,
    load_generator,
    save_generator,
    train_generator,
)

__all__ = [
    "EmbeddingModel",
    "GenerateResult",
    "Generator",
    "ReadStats",
    "TextToImageConfig",
    "VQGenerator",
    "VQGeneratorConfig",
    "ViewAugmentConfig",
    "VisualizeConfig",
    "VisualizeResult",
    "compose_grid",
    "generate",
    "image_text_similarity",
    "iter_shard_images",
    "load_generator",
    "render_prompt_grid",
    "save_generator",
    "train_generator",
    "visualize",
]
