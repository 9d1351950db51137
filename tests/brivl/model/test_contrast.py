"""The momentum-contrast mechanics: loss, queues, EMA, the global-batch rule."""

from __future__ import annotations

import math

import pytest
import torch

from brivl.model import info_nce


def naive_loss(query, pos_keys, queue, valid, temperature):
    """Per-sample InfoNCE in float64, one sample at a time."""
    losses = []
    for i in range(query.shape[0]):
        q = query[i].detach().double()
        logits = [float(q @ pos_keys[i].double()) / temperature]
        logits += [float(q @ queue[j].double()) / temperature for j in range(valid)]
        m = max(logits)
        log_z = m + math.log(sum(math.exp(v - m) for v in logits))
        losses.append(log_z - logits[0])
    return sum(losses) / len(losses)


def naive_loss_in_batch(query, all_keys, offset, queue, valid, temperature):
    losses = []
    for i in range(query.shape[0]):
        q = query[i].detach().double()
        logits = [float(q @ k.double()) / temperature for k in all_keys]
        logits += [float(q @ queue[j].double()) / temperature for j in range(valid)]
        m = max(logits)
        log_z = m + math.log(sum(math.exp(v - m) for v in logits))
        losses.append(log_z - logits[offset + i])
    return sum(losses) / len(losses)


def unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def test_info_nce_equals_naive_per_sample():
    torch.manual_seed(0)
    q, k, queue = unit(6, 8), unit(6, 8), unit(12, 8)
    for valid in (0, 5, 12):
        loss, _ = info_nce(q, k, queue, 0.07, valid)
        assert float(loss) == pytest.approx(
            naive_loss(q, k, queue, valid, 0.07), rel=1e-5, abs=1e-6
        )


def test_model_loss_equals_naive_per_sample(tiny):
    model = tiny(queue_size=16)
    torch.manual_seed(1)
    x = torch.rand(8, 3, 32, 32)
    batch = model.tokenize([f"caption {i} a red cat" for i in range(8)])
    model(x, **batch, momentum=0.9)  # fills half the queue with real keys
    assert model.queue_fill() == 0.5
    img_queue, txt_queue = model.image_queue.clone(), model.text_queue.clone()
    with torch.no_grad():
        out = model(x.flip(0), **batch, momentum=0.9)
    t = model.config.temperature
    want_i2t = naive_loss(out["image_embed"], out["text_key"], txt_queue, 8, t)
    want_t2i = naive_loss(out["text_embed"], out["image_key"], img_queue, 8, t)
    assert float(out["loss_i2t"]) == pytest.approx(want_i2t, rel=1e-5)
    assert float(out["loss_t2i"]) == pytest.approx(want_t2i, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(want_i2t + want_t2i, rel=1e-5)
    # keys are the momentum towers' embeddings of the same inputs
    with torch.no_grad():
        assert torch.allclose(out["image_key"], model.image_tower_m(x.flip(0)), atol=1e-6)


def test_in_batch_negatives_loss_equals_naive(tiny):
    model = tiny(queue_size=16, in_batch_negatives=True)
    x = torch.rand(8, 3, 32, 32)
    batch = model.tokenize([f"caption {i}" for i in range(8)])
    model(x, **batch)
    txt_queue = model.text_queue.clone()
    with torch.no_grad():
        out = model(x, **batch)
    want = naive_loss_in_batch(
        out["image_embed"], out["text_key"], 0, txt_queue, 8, model.config.temperature
    )
    assert float(out["loss_i2t"]) == pytest.approx(want, rel=1e-5)


def test_empty_queue_is_masked_not_random(tiny):
    model = tiny(queue_size=16)
    x = torch.rand(4, 3, 32, 32)
    out = model(x, **model.tokenize(["a", "b", "c", "d"]))
    assert float(out["loss"].detach()) == 0.0  # only the positive is a candidate while the queue is empty
    assert model.queue_fill() == 0.25


def test_queue_fifo_with_pointer_wraparound(tiny):
    model = tiny(queue_size=12)
    batch = model.tokenize(["a", "b", "c", "d"])
    keys = []
    for step in range(5):  # 20 keys through a queue of 12: wraps after step 3
        out = model(torch.rand(4, 3, 32, 32), **batch, momentum=0.5)
        keys.append((out["image_key"], out["text_key"]))
        assert int(model.image_queue_ptr) == int(model.text_queue_ptr) == (4 * (step + 1)) % 12
        assert model.queue_fill() == min(1.0, 4 * (step + 1) / 12)
    # slots hold, oldest overwritten first: [step 3 | step 4 | step 2]
    for slot, step in ((0, 3), (4, 4), (8, 2)):
        assert torch.equal(model.image_queue[slot : slot + 4], keys[step][0])
        assert torch.equal(model.text_queue[slot : slot + 4], keys[step][1])


def test_no_update_mode_leaves_state_alone(tiny):
    model = tiny()
    batch = model.tokenize(["a", "b", "c", "d"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.rand(4, 3, 32, 32), **batch, momentum=None, enqueue=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ema_update_is_exact(tiny):
    model = tiny()
    with torch.no_grad():  # make query and key towers differ
        for p in model.image_tower.parameters():
            p.add_(torch.randn_like(p))
        for p in model.text_tower.parameters():
            p.add_(0.5)
    pairs = [
        (p.detach().clone(), p_m.detach().clone(), p_m)
        for tower, tower_m in (
            (model.image_tower, model.image_tower_m),
            (model.text_tower, model.text_tower_m),
        )
        for p, p_m in zip(tower.parameters(), tower_m.parameters(), strict=True)
    ]
    model.momentum_update(0.9)
    eps = torch.finfo(torch.float32).eps
    for q, k_before, k_after in pairs:  # the formula in float64, to float32 rounding
        want = 0.9 * k_before.double() + 0.1 * q.double()
        assert ((k_after.double() - want).abs() <= 2 * eps * (k_before.abs() + q.abs()).double()).all()
        assert not torch.equal(k_after, k_before)
    assert all(not p.requires_grad for p in model.image_tower_m.parameters())
    before = [p_m.clone() for _, _, p_m in pairs]
    model.momentum_update(1.0)  # m = 1 leaves the momentum towers bit-identical
    assert all(torch.equal(b, p_m) for b, (_, _, p_m) in zip(before, pairs, strict=True))
    model.momentum_update(0.0)  # m = 0 copies
    for tower, tower_m in (
        (model.image_tower, model.image_tower_m),
        (model.text_tower, model.text_tower_m),
    ):
        for p, p_m in zip(tower.parameters(), tower_m.parameters(), strict=True):
            assert torch.equal(p, p_m)
    with pytest.raises(ValueError, match="momentum"):
        model.momentum_update(1.5)


def test_forward_applies_ema_before_keys(tiny):
    model = tiny()
    with torch.no_grad():
        for p in model.text_tower.parameters():
            p.add_(0.1)
    batch = model.tokenize(["a", "b", "c", "d"])
    x = torch.rand(4, 3, 32, 32)
    out = model(x, **batch, momentum=0.0)  # m = 0: keys come from a copy of the query towers
    assert torch.allclose(out["text_key"], out["text_embed"].detach(), atol=1e-6)


def test_queue_must_be_multiple_of_global_batch(tiny):
    model = tiny(queue_size=20)
    batch = model.tokenize(["a", "b", "c", "d", "e", "f"])
    with pytest.raises(ValueError, match=r"queue_size=20 is not divisible by the global batch 6"):
        model(torch.rand(6, 3, 32, 32), **batch)
    assert model.queue_fill() == 0.0  # failed before touching anything


def test_gradients_reach_query_towers_only(tiny):
    model = tiny(queue_size=16)
    batch = model.tokenize(["a", "b", "c", "d"])
    model(torch.rand(4, 3, 32, 32), **batch)
    out = model(torch.rand(4, 3, 32, 32), **batch)
    out["loss"].backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_tower.parameters()
    )
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text_tower.parameters())
    assert all(p.grad is None for p in model.image_tower_m.parameters())
    assert model.trainable_parameters() == [p for p in model.parameters() if p.requires_grad]
