"""Patch pooling, preprocessing, tokenizer, config registry and its errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from brivl.model import ConfigError, create_model, list_models
from brivl.model.pooling import (
    grid_boxes,
    grid_patch_pool,
    grid_patch_pool_adaptive,
    grid_patch_pool_loop,
    num_patches,
)
from brivl.model.preprocess import load_images, try_load_images
from brivl.model.tokenizer import TextTokenizer, train_tokenizer

# -- multi-scale grid patch pooling -------------------------------------------------------


@pytest.mark.parametrize("hw", [(7, 7), (12, 12), (15, 13), (4, 4)])
def test_batched_pooling_equals_per_sample_loop(hw):
    fmap = torch.randn(3, 5, *hw, requires_grad=True)
    got = grid_patch_pool(fmap, [1, 6])
    assert got.shape == (3, 37, 5)
    want = grid_patch_pool_loop(fmap, [1, 6])
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(grid_patch_pool_adaptive(fmap, [1, 6]), want, atol=1e-6)
    assert torch.allclose(got[:, 0], fmap.mean(dim=(2, 3)), atol=1e-6)  # patch 0 = whole image
    weights = torch.randn_like(got)
    grad, = torch.autograd.grad((got * weights).sum(), fmap)
    grad_loop, = torch.autograd.grad((want * weights).sum(), fmap)
    assert torch.allclose(grad, grad_loop, atol=1e-6)


def test_grid_boxes_cover_the_map_row_major():
    boxes = grid_boxes(12, 12, [1, 2, 3])
    assert len(boxes) == num_patches([1, 2, 3]) == 14
    assert boxes[0] == (0, 12, 0, 12)
    assert boxes[1:5] == [(0, 6, 0, 6), (0, 6, 6, 12), (6, 12, 0, 6), (6, 12, 6, 12)]
    fmap = torch.zeros(1, 1, 12, 12)
    fmap[0, 0, 0:4, 8:12] = 1.0  # top-right cell of the 3x3 grid
    pooled = grid_patch_pool(fmap, [1, 2, 3])[0, :, 0]
    assert pooled[5 + 2] == 1.0 and pooled[5:].sum() == 1.0


# -- preprocessing ------------------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_load_images_resize_centre_crop_range():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 30, 100))  # blue left edge: cropped away
    grey = Image.fromarray(np.full((64, 48), 128, dtype=np.uint8), mode="L")
    batch = load_images([_png(wide), grey, wide.convert("RGBA")], 32)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    assert torch.allclose(batch[0, 0], torch.ones(32, 32)) and batch[0, 2].max() < 0.01  # all red
    assert torch.allclose(batch[1], torch.full((3, 32, 32), 128 / 255), atol=1 / 255)
    assert torch.equal(batch[0], batch[2])


def test_bad_image_names_its_index():
    with pytest.raises(ValueError, match="image 1: cannot decode"):
        load_images([_png(Image.new("RGB", (8, 8))), b"not an image"], 16)
    batch, reasons = try_load_images([b"junk", _png(Image.new("RGB", (8, 8), (0, 255, 0)))], 16)
    assert reasons[0] is not None and reasons[1] is None
    assert batch[0].abs().sum() == 0 and batch[1, 1].min() == 1.0


# -- tokenizer ----------------------------------------------------------------------------


def test_tokenizer_pads_truncates_and_wraps(tokenizer):
    tok = TextTokenizer(tokenizer, max_length=6)
    out = tok(["a red cat", "a blue dog on the street number 12 and more words", ""])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == (3, 6) and ids.dtype == torch.long
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 0] and mask[1].sum() == 6 and mask[2].sum() == 2
    assert ids[0, 0] == tokenizer.token_to_id("[CLS]") and ids[0, 4] == tokenizer.token_to_id(
        "[SEP]"
    )
    assert ids[0, 5] == tok.pad_id == 0
    with pytest.raises(TypeError):
        tok("one string")


def test_tokenizer_training_is_deterministic(captions):
    first = train_tokenizer(captions, vocab_size=120, min_frequency=2)
    second = train_tokenizer(list(reversed(captions)), vocab_size=120, min_frequency=2)
    assert first.to_str() == second.to_str() and first.get_vocab_size() <= 120
    # frequent words are whole tokens; rarer ones fall back to characters, unseen ones to [UNK]
    assert first.encode("the red cat").tokens == ["[CLS]", "the", "red", "cat", "[SEP]"]
    assert first.encode("number 137").tokens[2:-1] == ["1", "##3", "##7"]
    assert first.encode("zzz").tokens == ["[CLS]", "[UNK]", "[SEP]"]
    assert train_tokenizer(captions, vocab_size=60, min_frequency=1).get_vocab_size() == 60


# -- config registry and errors -----------------------------------------------------------


def test_registry_lists_the_named_configs():
    assert {"brivl-tiny", "brivl-lite", "brivl-paper"} <= set(list_models())


def test_unknown_model_lists_known_ones():
    with pytest.raises(
        ConfigError, match=r"unknown model 'brivl-huge'; known models: .*brivl-lite.*brivl-tiny"
    ):
        create_model("brivl-huge")


def test_tiny_needs_a_tokenizer():
    with pytest.raises(ConfigError, match="needs a tokenizer.*train_tokenizer"):
        create_model("brivl-tiny")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"image": {"backbone": "resnet50"}},
            r"image.backbone: 'resnet50' is not a known backbone; accepted: tiny-cnn, efficientnet-b0",
        ),
        (
            {"image": {"patch_dim": 30, "patch_heads": 4}},
            r"image.patch_dim: 30 is not divisible by image.patch_heads=4",
        ),
        ({"text": {"width": 30}}, r"text.width: 30 is not divisible by text.heads=4"),
        ({"queue_size": 0}, r"queue_size: 0 is not accepted; accepted: an integer from 1 to "),
        ({"queue_size": 1e10}, r"queue_size: 10000000000.0 is not accepted; .* to 1048576"),
        ({"embed_dim": 2**31}, r"embed_dim: 2147483648 is not accepted; .* from 1 to 65536"),
        ({"in_batch_negatives": 1}, r"in_batch_negatives: 1 is not accepted; accepted: true or"),
        ({"image": {"scales": []}}, r"image.scales: .* accepted: a non-empty list"),
        (
            {"text": {"encoder": "gpt"}},
            r"text.encoder: 'gpt' is not a known text encoder; accepted: scratch, hf",
        ),
        ({"temperature": -1}, r"temperature: -1 is not accepted"),
        (
            {"image": {"pretrained": "imagenet"}},
            r"image.pretrained: tiny-cnn has no pretrained weights",
        ),
        (
            {"image": {"backbone": "efficientnet-b0", "pretrained": "/nope.pth"}},
            r"image.pretrained: weight file '/nope.pth' not found",
        ),
        ({"imgae_size": 64}, r"model: unknown key\(s\) \['imgae_size'\]; accepted: \["),
        ({"text": {"widht": 64}}, r"model.text: unknown key\(s\) \['widht'\]"),
        ({"text": {"vocab_size": 7}}, r"text.vocab_size=7 does not match the tokenizer's"),
    ],
)
def test_bad_configs_fail_naming_the_field(tokenizer, overrides, message):
    with pytest.raises(ConfigError, match=message):
        create_model("brivl-tiny", tokenizer=tokenizer, **overrides)


def test_lite_dims_must_match_the_pretrained_encoder():
    with pytest.raises(
        ConfigError, match=r"text.width=512 does not match hidden_size=384 .* accepted: null or 384"
    ):
        create_model("brivl-lite", text={"width": 512})
    with pytest.raises(
        ConfigError, match=r"'imagenet' weights are shipped for efficientnet-lite0 only"
    ):
        create_model("brivl-lite", image={"backbone": "efficientnet-b3"})
    with pytest.raises(ConfigError, match=r"text.frozen_layers: 9; accepted: 0..6"):
        create_model("brivl-lite", text={"frozen_layers": 9})


def test_overrides_merge_into_the_named_config(tokenizer):
    model = create_model("brivl-tiny", tokenizer=tokenizer, queue_size=64, image={"scales": [1, 2]})
    assert model.config.queue_size == 64 and model.image_queue.shape == (64, model.config.embed_dim)
    assert model.config.image.scales == [1, 2] and model.config.image.backbone == "tiny-cnn"
    assert model.image_tower.patch_pos.shape[1] == 5
    x = torch.rand(2, 3, 64, 64)
    emb = model.encode_image(x)
    assert emb.shape == (2, model.config.embed_dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
