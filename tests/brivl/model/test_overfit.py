"""A tiny model can overfit 32 image-text pairs through the full training step."""

from __future__ import annotations

import torch

STEPS = 50


def retrieval_accuracy(model, pixels, batch) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        img, txt = model.encode_image(pixels), model.encode_text(**batch)
    model.train()
    sim = img @ txt.t()  # (32, 32)
    target = torch.arange(sim.shape[0])
    return (sim.argmax(1) == target).float().mean().item(), (
        sim.argmax(0) == target
    ).float().mean().item()


def test_overfit_32_pairs(tiny, captions):
    model = tiny(queue_size=32, in_batch_negatives=True, temperature=0.2)
    torch.manual_seed(0)
    # 32 distinct 4x4 colour layouts, upsampled to 32 px
    pixels = torch.nn.functional.interpolate(torch.rand(32, 3, 4, 4), size=32, mode="nearest")
    batch = model.tokenize(captions[:32])
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    before = retrieval_accuracy(model, pixels, batch)
    losses = []
    for _ in range(STEPS):
        out = model(pixels, **batch, momentum=0.9)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    after = retrieval_accuracy(model, pixels, batch)
    print([round(v, 2) for v in losses[::5]], before, after)
    # from ~2 * log 64; the queue holds each pair's previous key as a near-duplicate
    # negative, so the loss floors well above 0
    assert losses[-1] < 0.5 * max(losses[:3])
    assert max(before) < 0.5 and after == (1.0, 1.0)
    assert model.queue_fill() == 1.0
