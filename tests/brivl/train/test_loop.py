from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brivl.model import build_config
from brivl.train import (
    ShardBatches,
    TrainConfig,
    list_checkpoints,
    read_metrics_log,
    read_trainer_state,
    train,
)

TINY = {"image_size": 32, "queue_size": 32}  # as in conftest.py
REPORTED = {"loss", "lr", "momentum", "queue_fill", "samples_per_s", "data_wait_frac", "step"}


def _config(**changes) -> TrainConfig:
    values = dict(model_overrides=dict(TINY), vocab_size=300, batch_size=8, steps=6,
                  warmup_steps=2, lr=2e-3, report_every=1, checkpoint_every=3, keep_checkpoints=5)
    values.update(changes)
    return TrainConfig(**values)


def _batches(shards: Path, cfg: TrainConfig) -> ShardBatches:
    size = build_config(cfg.model, cfg.model_overrides).image_size
    return ShardBatches(shards, batch_size=cfg.batch_size, image_size=size, augment=cfg.augment,
                        seed=cfg.seed)


def test_resume_from_a_checkpoint_gives_the_identical_next_steps(tmp_path: Path, toy_shards: Path,
                                                                  toy_captions: list[str]) -> None:
    cfg = _config()
    reports: list[dict] = []
    first = train(cfg, _batches(toy_shards, cfg), reports.append, tmp_path, captions=toy_captions)
    assert [r["step"] for r in reports] == [1, 2, 3, 4, 5, 6] and first["step"] == 6
    assert REPORTED <= set(reports[0]) and reports[-1]["queue_fill"] == 1.0
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000006"]
    assert read_trainer_state(tmp_path / "step-00000003")["batches_consumed"] == 3

    shutil.rmtree(tmp_path / "step-00000006")  # as if the run had died after step 3
    again: list[dict] = []
    second = train(cfg, _batches(toy_shards, cfg), again.append, tmp_path, captions=toy_captions)
    assert second["resumed_from_step"] == 3 and [r["step"] for r in again] == [4, 5, 6]
    for before, after in zip(reports[3:], again, strict=True):
        assert after["loss"] == before["loss"] and after["grad_norm"] == before["grad_norm"]
        assert after["lr"] == before["lr"] and after["momentum"] == before["momentum"]
    for (name, a), b in zip(first["model"].state_dict().items(),
                            second["model"].state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # the log keeps one row per step, the resumed run's rows replacing the killed run's
    assert [r["step"] for r in read_metrics_log(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_bad_rows_are_replaced_and_short_batches_skipped(tmp_path: Path, toy_captions: list[str]) -> None:
    cfg = _config(steps=2, checkpoint_every=100)
    size = 32
    good = {"pixels": np.random.default_rng(0).integers(0, 255, (8, 3, size, size), dtype=np.uint8),
            "caption": toy_captions[:8], "valid": np.array([True] * 6 + [False] * 2)}
    short = {"pixels": good["pixels"][:5], "caption": toy_captions[:5]}
    reports: list[dict] = []
    out = train(cfg, [short, good, good], reports.append, None, captions=toy_captions)
    assert out["step"] == 2 and out["checkpoint"] is None
    assert reports[-1]["bad_samples"] == 4 and reports[-1]["skipped_batches"] == 1


def test_an_iterable_that_runs_dry_ends_the_run_early(toy_captions: list[str]) -> None:
    cfg = _config(steps=5, checkpoint_every=100)
    batch = {"pixels": torch.rand(8, 3, 32, 32), "caption": toy_captions[:8]}
    out = train(cfg, [batch, batch], None, None, captions=toy_captions)
    assert out["step"] == 2 and out["total_steps"] == 5


def test_resuming_with_another_batch_size_is_refused(tmp_path: Path, toy_shards: Path,
                                                     toy_captions: list[str]) -> None:
    cfg = _config(steps=1)
    train(cfg, _batches(toy_shards, cfg), None, tmp_path, captions=toy_captions)
    other = _config(steps=2, batch_size=16)
    with pytest.raises(ValueError, match="batch_size=8"):
        train(other, _batches(toy_shards, other), None, tmp_path, captions=toy_captions)
