from __future__ import annotations

import math

import pytest

from brivl.train import TrainConfig, lr_at, momentum_at


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor() -> None:
    lrs = [lr_at(s, 100, peak=1.0, warmup_steps=10, floor=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5)
    assert lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)


def test_momentum_rises_by_cosine_from_start_to_end() -> None:
    ms = [momentum_at(s, 50, 0.99, 0.999) for s in range(50)]
    assert ms[0] == pytest.approx(0.99) and ms[-1] == pytest.approx(0.999)
    assert all(a <= b for a, b in zip(ms, ms[1:], strict=False))


def test_bad_configs_name_the_field_and_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(momentum_start=0.999, momentum_end=0.99)
    with pytest.raises(ValueError, match=r"train: unknown key\(s\) \['stepz'\]"):
        TrainConfig.from_dict({"stepz": 3})
    cfg = TrainConfig.from_dict(TrainConfig(augment={"hue": 0.0}).to_dict())
    assert cfg.augment.hue == 0.0 and cfg.total_steps(1000) == cfg.steps
    assert TrainConfig(steps=None, epochs=2, batch_size=10).total_steps(105, world_size=2) == 10
