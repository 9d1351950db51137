"""The frozen trunk is computed once per step, identity init, and the queue's false negatives."""

from __future__ import annotations

import torch

from brivl.model import create_model
from brivl.model.model import info_nce
from brivl.train.trunk_cache import batch_ids


def _lite(**overrides):
    torch.manual_seed(0)
    return create_model("brivl-lite", image_size=64, queue_size=64, **overrides)


def test_split_backbone_equals_the_whole_network():
    model = _lite(image={"frozen_stages": 5})
    net = model.image_tower.backbone.eval()
    x = torch.rand(2, 3, 64, 64)
    reference = net._act(net._bn0(net._conv_stem(x)))
    for block in net._blocks:
        reference = block(reference)
    reference = net._act(net._bn1(net._conv_head(reference)))
    torch.testing.assert_close(net.forward_trainable(net.forward_frozen(x)), reference, rtol=0, atol=0)


def test_text_trunk_then_rest_equals_the_whole_encoder():
    model = _lite().eval()
    tokens = model.tokenize(["a red apple on a table", "a yellow sun"])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    encoder = model.text_tower.encoder
    assert encoder.frozen_layers == 4
    whole = encoder.model(ids, mask)
    split = encoder.forward_trainable(encoder.forward_frozen(ids, mask), mask)
    torch.testing.assert_close(split, whole, rtol=0, atol=0)


def test_step_from_cached_trunks_equals_the_step_from_pixels():
    model = _lite()
    pixels = torch.rand(4, 3, 64, 64)
    tokens = model.tokenize(["a red apple", "a black cat on a mat", "a blue car", "a green tree"])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    image_trunk, text_trunk = model.trunks(pixels, ids, mask)
    from_pixels = model(pixels, ids, mask, momentum=None, enqueue=False)
    from_trunks = model(None, ids, mask, momentum=None, enqueue=False,
                        image_trunk=image_trunk, text_trunk=text_trunk)
    torch.testing.assert_close(from_trunks["loss"], from_pixels["loss"], rtol=0, atol=0)
    # the momentum towers' frozen prefixes are the query towers' (never EMA-updated)
    torch.testing.assert_close(model.image_tower_m.trunk(pixels), image_trunk, rtol=0, atol=0)


def test_identity_init_passes_pretrained_tokens_through():
    model = _lite(text={"identity_init": True, "token_layers": 2})
    tower = model.text_tower.eval()
    x = torch.randn(2, 5, tower.token_encoder.norm.normalized_shape[0])
    out = tower.token_encoder(x)
    torch.testing.assert_close(out, tower.token_encoder.norm(x))


def test_queue_entries_of_the_same_sample_or_caption_are_masked_out():
    torch.manual_seed(0)
    model = _lite()
    d = model.config.embed_dim
    keys = torch.nn.functional.normalize(torch.randn(4, d), dim=1)
    sample_ids, caption_ids = batch_ids(["k0", "k1", "k2", "k3"],
                                        ["an apple", "a sun", "a cat", "An  apple"])
    model.enqueue(keys, keys, sample_ids, caption_ids)
    exclude = model.false_negatives(sample_ids, caption_ids)
    assert exclude.shape == (4, model.config.queue_size)
    # row 0 ("an apple", k0) hits its own entry 0 and entry 3 (the same caption up to case/space)
    assert exclude[0, :4].tolist() == [True, False, False, True]
    assert exclude[1, :4].tolist() == [False, True, False, False]
    assert not exclude[:, 4:].any()  # empty slots are masked by queue_valid, not here
    query = keys.clone()
    masked, _ = info_nce(query, keys, model.text_queue, 0.07, model.queue_filled, exclude=exclude)
    unmasked, _ = info_nce(query, keys, model.text_queue, 0.07, model.queue_filled)
    # the positive also sits in the queue (an older key of the same pair): unmasked, it is
    # counted as a negative as strong as the positive, so the loss is larger
    assert masked < unmasked - 0.1
    # masked: the loss is the InfoNCE against the other samples' keys only
    logits = torch.cat([(query * keys).sum(1, keepdim=True),
                        (query @ keys.t()).masked_fill(exclude[:, :4], float("-inf"))], 1) / 0.07
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(masked, expected)


def test_pooling_matrix_cached_in_inference_mode_still_trains():
    from brivl.model.pooling import grid_patch_pool, pooling_matrix

    pooling_matrix.cache_clear()
    with torch.inference_mode():  # an index or eval run fills the cache first
        grid_patch_pool(torch.rand(2, 8, 5, 5, dtype=torch.bfloat16), [1, 6])
    fmap = torch.rand(2, 8, 5, 5, dtype=torch.bfloat16, requires_grad=True)
    grid_patch_pool(fmap, [1, 6]).float().sum().backward()  # then interpretation backprops
    assert fmap.grad is not None and fmap.grad.shape == fmap.shape


def test_a_fresh_model_runs_its_frozen_batchnorms_on_running_statistics():
    model = _lite(image={"frozen_stages": 5})  # never put in .train() or .eval() by anyone
    before = [b.running_mean.clone() for b in model.image_tower.backbone.modules()
              if isinstance(b, torch.nn.BatchNorm2d)]
    model.image_tower.trunk(torch.rand(2, 3, 64, 64))  # BatchNorm in training mode would update
    after = [b.running_mean for b in model.image_tower.backbone.modules()
             if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))
