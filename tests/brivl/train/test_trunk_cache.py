"""Training from cached frozen trunks, the time budget, and the queue cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from brivl.train import ShardBatches, TrainConfig, train
from brivl.train.baselines import cap_queue, frozen_towers_config

LITE = {"image_size": 32, "queue_size": 32, "image": {"frozen_stages": 5}}


def _run(toy_shards: Path, trunk_store: Path | None = None, **fields):
    cfg = TrainConfig(model="brivl-lite", model_overrides=LITE, batch_size=16, steps=8,
                      report_every=1, augment={"enabled": False}, **fields)
    batches = ShardBatches(toy_shards, batch_size=16, image_size=32, augment=cfg.augment,
                           raw=cfg.trunk_cache)
    losses = []
    result = train(cfg, batches, lambda m: losses.append(m["loss"]), None, resume=False,
                   trunk_store=trunk_store)
    return result, losses


def test_cached_trunks_train_exactly_as_the_full_towers(toy_shards: Path) -> None:
    plain, plain_losses = _run(toy_shards)
    cached, cached_losses = _run(toy_shards, trunk_cache=True)
    assert len(cached_losses) == len(plain_losses) == 8
    # 96 pairs, 16 a batch: steps 7 and 8 are the second epoch, served from the cache
    assert cached_losses == pytest.approx(plain_losses, abs=1e-4)


def test_a_second_run_reads_the_trunk_store_and_trains_the_same(toy_shards: Path,
                                                                  tmp_path: Path) -> None:
    from brivl.model.trunk_store import TrunkStore
    from brivl.train import read_captions

    plain, plain_losses = _run(toy_shards)
    first, first_losses = _run(toy_shards, trunk_store=tmp_path, trunk_cache=True)
    packs = sorted(tmp_path.glob("*/*.npz"))
    stored = TrunkStore(packs[0].parent)
    assert len(stored.records["image"]) == 96  # every training image; every distinct caption:
    assert len(stored.records["text"]) == len(set(read_captions(toy_shards, "train")))
    second, second_losses = _run(toy_shards, trunk_store=tmp_path, trunk_cache=True)
    assert sorted(tmp_path.glob("*/*.npz")) == packs  # all read back: nothing recomputed
    assert first_losses == pytest.approx(plain_losses, abs=1e-4)
    assert second_losses == pytest.approx(first_losses, abs=1e-6)
    metrics = first["metrics"]
    assert metrics["trunk_fill_s"] > 0  # the budget (max_seconds) counts train_s only
    assert metrics["train_s"] == pytest.approx(metrics["elapsed_s"] - metrics["trunk_fill_s"])


def test_trunk_cache_with_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="trunk_cache=True with augment.enabled=True"):
        TrainConfig(trunk_cache=True)


def test_max_seconds_ends_the_run_early(toy_shards: Path) -> None:
    result, losses = _run(toy_shards, trunk_cache=True, max_seconds=1e-6)
    assert result["step"] == 1 and len(losses) == 1  # the first step spends the budget


def test_queue_is_capped_at_the_corpus_size() -> None:
    config = {"model": "brivl-lite", "batch_size": 32}  # brivl-lite: K = 4096
    capped, note = cap_queue(config, n_train=1357)
    assert capped["model_overrides"]["queue_size"] == 1344  # 42 batches of 32
    assert "4096" in note and "1357" in note
    same, none = cap_queue(config, n_train=10_000)
    assert same is config and none == ""


def test_frozen_towers_baseline_sees_the_same_size_for_the_same_time() -> None:
    cfg = frozen_towers_config({"model": "brivl-lite", "model_overrides": {"image_size": 96}}, 42.0)
    assert cfg["model"] == "brivl-lite-frozen" and cfg["max_seconds"] == 42.0
    assert cfg["model_overrides"] == {"image_size": 96}
    TrainConfig.from_dict({k: v for k, v in cfg.items() if k not in ("val_limit",)})
