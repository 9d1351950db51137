"""Algorithm 2: the VQ generator (training, save/load) and text-to-image through it."""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageDraw

from brivl.colours import colour_names
from brivl.interpret.common import embed_texts, image_text_similarity, pil_to_tensor, tensor_to_pil
from brivl.interpret.data import ReadStats, iter_shard_images
from brivl.interpret.generate import Generator, TextToImageConfig, generate
from brivl.interpret.vqgan import (
    VQGenerator,
    VQGeneratorConfig,
    load_generator,
    save_generator,
    train_generator,
)

PROMPTS = ["a red circle", "a green square", "a blue triangle", "a yellow circle"]
SMALL = dict(image_size=32, channels=8, channel_mult=(1, 2), latent_dim=8, codebook_size=64)


@pytest.fixture(scope="module")
def trained(shapes):
    """A small generator trained 60 steps on 48 shape pictures, with its training log."""
    torch.set_num_threads(1)
    images = [im for im, _ in shapes(48, 32)]
    log: list[tuple[int, dict]] = []
    config = VQGeneratorConfig(**SMALL, steps=60, batch_size=8, lr=2e-3, log_every=5)
    return train_generator(images, config, report=lambda s, m: log.append((s, m))), log, images


def test_reconstruction_error_falls_during_training(trained):
    generator, log, images = trained
    steps = [s for s, _ in log]
    assert steps[0] == 0 and steps[-1] == 59
    first_l1 = log[0][1]["l1"]  # the batch at step 0, before any update
    batch = torch.stack([pil_to_tensor(im) for im in images[:16]])
    with torch.no_grad():
        final_l1 = float((generator.reconstruct(batch) - batch).abs().mean())
    assert final_l1 < 0.5 * first_l1, (first_l1, final_l1)
    late = [m["l1"] for _, m in log[-3:]]
    early = [m["l1"] for _, m in log[:3]]
    assert max(late) < min(early)
    assert log[-1][1]["codes_used"] >= 2


CLIPART = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
           "yellow": (235, 205, 30)}


def clipart(colour: str, seed: int, size: int = 32) -> Image.Image:
    """Clip art as the corpus has it: a black-outlined coloured blob on a white page."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), "white")
    c, r = size / 2 + rng.uniform(-size / 6, size / 6), size * rng.uniform(0.18, 0.26)
    ImageDraw.Draw(image).ellipse((c - r, c - 0.8 * r, c + r, c + 0.8 * r),
                                  fill=CLIPART[colour], outline=(0, 0, 0), width=1)
    return image


def test_reconstructions_of_clip_art_keep_their_colour():
    """Mostly-white pictures: plain L1 with the old recipe (no foreground weight, colour loss,
    colour path or code restarts; lr 1e-2) decoded every held-out blob black or grey."""
    names = list(CLIPART)
    train = [clipart(names[i % 4], i) for i in range(64)]
    held = [(names[i % 4], clipart(names[i % 4], 1000 + i)) for i in range(16)]
    config = VQGeneratorConfig(**SMALL, steps=150, batch_size=8, lr=3e-3, perceptual="none")
    generator = train_generator(train, config)
    with torch.no_grad():
        out = generator.reconstruct(torch.stack([pil_to_tensor(im) for _, im in held]))
    named = [colour_names(tensor_to_pil(image), limit=2) for image in out]
    kept = sum(colour in n for (colour, _), n in zip(held, named, strict=True))
    assert kept >= 6, named  # of 16; the old recipe kept 0


def test_save_load_roundtrip(trained, tmp_path):
    generator = trained[0]
    save_generator(generator, tmp_path / "gen")
    loaded = load_generator(tmp_path / "gen")
    latent = generator.init_latent(7)
    assert torch.equal(latent, loaded.init_latent(7))
    assert latent.shape == (1, *generator.latent_shape) == (1, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(generator.decode(latent), loaded.decode(latent))
    with pytest.raises(FileNotFoundError, match="generator.json"):
        load_generator(tmp_path / "nowhere")


def test_generate_raises_similarity_above_an_unrelated_prompt(trained, trained_model, png):
    generator = trained[0]
    assert isinstance(generator, Generator)
    target_text = PROMPTS[0]
    texts = embed_texts(trained_model, PROMPTS)
    unrelated_text = PROMPTS[int((texts @ texts[0]).argmin())]  # the model's least similar text
    result = generate(trained_model, generator, target_text, TextToImageConfig(steps=25, seed=0))
    initial = result.initial_similarity  # a quarter of the way to 1, at least
    assert result.final_similarity >= initial + max(0.05, 0.25 * (1 - initial)), result.trace[::5]
    _, reread = png(result.image)
    target, unrelated = image_text_similarity(trained_model, reread, [target_text, unrelated_text])[
        0
    ]
    assert target > unrelated + 0.1, (unrelated_text, result.trace[::5])
    assert all(p.grad is None for p in generator.parameters())


def test_same_seed_same_png_requested_size_and_snapping(trained, trained_model, png):
    generator = trained[0]
    config = TextToImageConfig(steps=6, size=48, seed=5, snap_to_codebook=True)
    first, image = png(generate(trained_model, generator, PROMPTS[0], config).image)
    result = generate(trained_model, generator, PROMPTS[0], config)
    second, _ = png(result.image)
    other, _ = png(
        generate(
            trained_model, generator, PROMPTS[0], TextToImageConfig(steps=6, size=48, seed=6)
        ).image
    )
    assert first == second and first != other
    assert image.format == "PNG" and image.size == (48, 48)
    with torch.no_grad():  # a snapped latent decodes from codebook entries only
        snapped = generator.quantize(result.latent)
        codes = generator.codebook.embedding.weight
        cells = snapped.permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
        gap = (cells[:, None, :] - codes[None]).abs().amax(-1).min(1).values  # [cells]
        assert gap.max() < 1e-5


class SmoothGenerator:
    """Any generator plugs in: here a 4x4 colour grid upsampled to 32 px (no nn.Module)."""

    latent_shape = (3, 4, 4)

    def init_latent(self, seed: int) -> torch.Tensor:
        return torch.randn(1, *self.latent_shape, generator=torch.Generator().manual_seed(seed))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.nn.functional.interpolate(latent, size=32, mode="bilinear"))


def test_any_generator_plugs_in(trained_model):
    result = generate(
        trained_model, SmoothGenerator(), PROMPTS[0], TextToImageConfig(steps=15, lr=0.2)
    )
    assert result.image.size == (32, 32)
    assert result.final_similarity > result.initial_similarity
    with pytest.raises(ValueError, match="no quantize"):
        generate(
            trained_model,
            SmoothGenerator(),
            PROMPTS[0],
            TextToImageConfig(steps=1, snap_to_codebook=True),
        )


def test_white_start_and_a_coarse_latent_paint_regions(trained, trained_model):
    generator = trained[0]
    config = TextToImageConfig(steps=0, init="white", seed=3)
    blank = generate(trained_model, generator, PROMPTS[0], config)
    with torch.no_grad():
        white = generator.encode(torch.ones(1, 3, generator.image_size, generator.image_size))
    torch.testing.assert_close(blank.latent, white)  # no noise, no step: the white canvas
    coarse = TextToImageConfig(steps=8, lr=0.5, init="white", init_noise=1.0, latent_cells=2, seed=3)
    result = generate(trained_model, generator, PROMPTS[0], coarse)
    offset = result.latent - white  # [1, D, h, w], upsampled from 2 x 2 free cells
    side = offset.shape[-1]
    corners = offset[..., :: side - 1, :: side - 1]
    rebuilt = torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(offset, size=2, mode="bilinear", align_corners=False),
        size=side, mode="bilinear", align_corners=False)
    assert corners.abs().max() > 0 and result.final_similarity > result.initial_similarity
    torch.testing.assert_close(rebuilt, offset, atol=0.35 * float(offset.abs().max()), rtol=0)
    with pytest.raises(ValueError, match="init='white' needs a generator with encode"):
        generate(trained_model, SmoothGenerator(), PROMPTS[0], TextToImageConfig(init="white"))
    with pytest.raises(ValueError, match="accepted: random, white"):
        TextToImageConfig(init="grey")


def test_adversarial_loss_trains_a_discriminator(shapes):
    images = [im for im, _ in shapes(6, 32)]
    log: list[dict] = []
    config = VQGeneratorConfig(**SMALL, steps=3, batch_size=4, adversarial_weight=0.1, log_every=1)
    model = train_generator(images, config, report=lambda s, m: log.append(m))
    assert isinstance(model, VQGenerator) and not model.training
    assert all("adv_d" in m and "adv_g" in m for m in log)
    with pytest.raises(ValueError, match="divisible"):
        VQGeneratorConfig(image_size=30, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="no images"):
        train_generator([], config)


def test_shard_reader_skips_undecodable_rows(shapes, tmp_path):
    blobs = []
    for image, _ in shapes(3, 24):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG")
        blobs.append(buffer.getvalue())
    blobs.insert(1, b"not a jpeg")
    (tmp_path / "train").mkdir()
    table = pa.table({"key": [f"k{i}" for i in range(4)], "image": blobs, "caption": ["x"] * 4})
    pq.write_table(table, tmp_path / "train" / "part-00000.parquet")
    stats = ReadStats()
    images = list(iter_shard_images(tmp_path, stats=stats))
    assert len(images) == 3 and images[0].size == (24, 24)
    assert stats.skipped == 1 and "key=k1" in stats.examples[0]
    assert len(list(iter_shard_images(tmp_path, limit=2))) == 2
    with pytest.raises(FileNotFoundError, match="val/\\*.parquet"):
        list(iter_shard_images(tmp_path, split="val"))


def test_lite0_perceptual_features_load_imagenet_weights():
    from brivl.interpret.vqgan import FeatureNet

    features = FeatureNet(0, "lite0")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert [f.shape[1] for f in features(x)] == [16, 24, 40]
    near = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert float(features.distance(x, x)) == 0.0
    assert 0 < float(features.distance(x, near)) < float(features.distance(x, x.flip(-1, -2)))
    # the weights are ImageNet's, not a fresh init: a BatchNorm holds trained statistics
    assert not torch.allclose(features.stages[0][1].running_var, torch.ones(32))
