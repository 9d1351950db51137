"""Algorithm 1: optimising an image towards a text with the real (lightly trained) model."""

from __future__ import annotations

import numpy as np
import torch

from brivl.interpret.common import (
    ViewAugmentConfig,
    embed_texts,
    image_text_similarity,
    random_views,
)
from brivl.interpret.visualize import VisualizeConfig, visualize

PROMPTS = ["a red circle", "a green square", "a blue triangle", "a yellow circle"]
TARGET = PROMPTS[0]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_similarity_rises_and_beats_an_unrelated_prompt(trained_model, png):
    before = _state(trained_model)
    texts = embed_texts(trained_model, PROMPTS)
    unrelated_text = PROMPTS[int((texts @ texts[0]).argmin())]  # the model's least similar text
    result = visualize(trained_model, TARGET, VisualizeConfig(steps=40, seed=0))
    assert len(result.trace) == 41
    initial = result.initial_similarity  # a quarter of the way to 1, at least
    assert result.final_similarity >= initial + max(0.05, 0.25 * (1 - initial)), result.trace[::10]
    _, reread = png(result.image)  # judge the image exactly as it is saved
    target, unrelated = image_text_similarity(trained_model, reread, [TARGET, unrelated_text])[0]
    assert abs(float(target) - result.final_similarity) < 1e-4  # trace ends on the saved image
    assert target > unrelated + 0.2
    # The model was only read: weights, gradient flags and mode are as before.
    assert all(torch.equal(v, trained_model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in trained_model.parameters())
    assert not trained_model.training


def test_same_seed_same_png_and_requested_size(trained_model, png):
    config = VisualizeConfig(steps=8, size=40, seed=3)
    first, image = png(visualize(trained_model, TARGET, config).image)
    second, _ = png(visualize(trained_model, TARGET, config).image)
    other, _ = png(
        visualize(trained_model, TARGET, VisualizeConfig(steps=8, size=40, seed=4)).image
    )
    assert first == second
    assert first != other
    assert image.format == "PNG" and image.size == (40, 40) and image.mode == "RGB"


def test_pixel_parameterisation_also_climbs(trained_model):
    config = VisualizeConfig(steps=25, param="pixel", lr=0.1, seed=1)
    result = visualize(trained_model, TARGET, config)
    initial = result.initial_similarity
    assert result.final_similarity >= initial + max(0.05, 0.2 * (1 - initial)), result.trace[::5]


def test_shapes_parameterisation_climbs_and_paints_on_white(trained_model):
    from brivl.interpret.params import ShapesImage

    blank = ShapesImage(32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        blank.opacity.fill_(-30.0)  # fully transparent ellipses: the white canvas shows
        assert torch.allclose(blank(), torch.ones(1, 3, 32, 32), atol=1e-6)
    config = VisualizeConfig(steps=25, param="shapes", tv_weight=0.0, seed=1)
    result = visualize(trained_model, TARGET, config)
    initial = result.initial_similarity
    assert result.final_similarity >= initial + max(0.05, 0.2 * (1 - initial)), result.trace[::5]
    pixels = torch.from_numpy(np.asarray(result.image, dtype=np.float32)).reshape(-1, 3)
    assert pixels.std(dim=0).min() > 5  # shapes were painted, not a flat canvas


def test_views_are_identity_without_augmentation_and_differ_with_it():
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    still = ViewAugmentConfig(n_views=2, jitter=0, scale_min=1, scale_max=1, rotate_deg=0)
    views = random_views(image, still, torch.Generator().manual_seed(0))
    assert views.shape == (2, 3, 32, 32)
    assert torch.allclose(views, image.expand(2, -1, -1, -1), atol=1e-5)
    moved = random_views(image, ViewAugmentConfig(n_views=3), torch.Generator().manual_seed(0))
    assert (moved - image).abs().mean() > 0.05
    again = random_views(image, ViewAugmentConfig(n_views=3), torch.Generator().manual_seed(0))
    assert torch.equal(moved, again)


def test_bad_configs_say_what_is_accepted():
    import pytest

    with pytest.raises(ValueError, match="fourier, pixel"):
        VisualizeConfig(param="dct")
    with pytest.raises(ValueError, match="visualize: unknown key\\(s\\) \\['stepz'\\]"):
        VisualizeConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="padding_mode"):
        VisualizeConfig.from_dict({"augment": {"padding_mode": "wrap"}})
    config = VisualizeConfig.from_dict({"steps": 3, "augment": {"n_views": 2}})
    assert config.augment.n_views == 2
