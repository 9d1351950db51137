"""Trainer features for large runs, each proved on the CPU: gradient accumulation, activation
checkpointing, torch.compile, fp16 with a GradScaler, a learnt temperature, sample-count
training with resampled batches, and exact resume after SIGKILL with accumulation on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from brivl.errors import ConfigError
from brivl.model import build_config, load_checkpoint, save_checkpoint
from brivl.model.recompute import set_grad_checkpointing
from brivl.train import (
    ShardBatches,
    TrainConfig,
    build_model,
    make_optimizer,
    prepare_initial_checkpoint,
    read_trainer_state,
    train,
)
from brivl.train.loop import _Runner

ROOT = Path(__file__).resolve().parents[3]
TINY = {"image_size": 32, "queue_size": 32}


def _config(**changes) -> TrainConfig:
    values = dict(model_overrides=dict(TINY), vocab_size=300, batch_size=8, steps=4,
                  warmup_steps=1, lr=2e-3, report_every=1, checkpoint_every=100,
                  cpu_bf16=False)  # fp32: the equalities below are to 1e-5
    values.update(changes)
    return TrainConfig(**values)


def _batches(shards: Path, cfg: TrainConfig) -> ShardBatches:
    size = build_config(cfg.model, cfg.model_overrides).image_size
    return ShardBatches(shards, batch_size=cfg.batch_size, image_size=size, augment=cfg.augment,
                        seed=cfg.seed, resampled=cfg.resampled)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# -- gradient accumulation ------------------------------------------------------------------------
@pytest.mark.parametrize("in_batch,use_queue", [(True, False), (False, True), (True, True)])
def test_accumulated_micro_batches_give_the_gradients_of_one_big_batch(
        tmp_path: Path, toy_shards: Path, toy_captions: list[str], in_batch: bool,
        use_queue: bool) -> None:
    overrides = dict(TINY, in_batch_negatives=in_batch)
    base = build_model(_config(model_overrides=overrides), toy_captions)
    if use_queue:  # a queue a quarter full of real keys, so it takes part in the loss
        warm = base.tokenize(toy_captions[40:48])
        with torch.no_grad():
            base(torch.rand(8, 3, 32, 32), **warm)
    ckpt = save_checkpoint(base, tmp_path / "start")
    rows = _batches(toy_shards, _config()).batch(0)  # 8 decoded samples

    def one_step(batch_size: int, accum: int):
        cfg = _config(model_overrides=overrides, batch_size=batch_size, grad_accum_steps=accum,
                      use_queue=use_queue)
        model = load_checkpoint(ckpt)
        model.train()
        runner = _Runner(cfg, model, make_optimizer(model, cfg), torch.device("cpu"), 1, 10)
        micro = [runner.prepare({k: v[i * batch_size:(i + 1) * batch_size] for k, v in rows.items()})
                 for i in range(accum)]
        out = runner.backward(3, micro)
        return out, _grads(model), model

    big_out, big_grads, big = one_step(8, 1)
    acc_out, acc_grads, acc = one_step(4, 2)
    assert big_out["loss"] > 0 and torch.allclose(acc_out["loss"], big_out["loss"], atol=1e-5)
    assert set(acc_grads) == set(big_grads) and len(big_grads) > 20
    assert sum(float(g.abs().sum()) for g in big_grads.values()) > 0
    for name, g in big_grads.items():
        torch.testing.assert_close(acc_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)
    for name, value in big.state_dict().items():  # the EMA (once) and the queues agree too
        torch.testing.assert_close(acc.state_dict()[name], value, atol=1e-6, rtol=0, msg=name)
    assert int(acc.queue_filled) == (16 if use_queue else 0)


def test_a_queue_not_divisible_by_the_global_micro_batch_is_refused(toy_captions: list[str]) -> None:
    cfg = _config(batch_size=12, grad_accum_steps=2)  # K=32 is no multiple of 12
    batch = {"pixels": torch.rand(12, 3, 32, 32), "caption": toy_captions[:12]}
    with pytest.raises(ValueError, match=r"queue_size=32 is not divisible by the global batch 12"):
        train(cfg, [batch] * 4, None, None, captions=toy_captions)


def test_accumulation_trains_and_counts_samples_per_optimiser_step(toy_shards: Path,
                                                                     toy_captions: list[str]) -> None:
    cfg = _config(batch_size=4, grad_accum_steps=2, steps=3)
    reports: list[dict] = []
    out = train(cfg, _batches(toy_shards, cfg), reports.append, None, captions=toy_captions)
    assert out["step"] == 3 and out["samples_seen"] == 3 * 4 * 2
    assert reports[-1]["queue_fill"] == 24 / 32  # every micro-batch enqueued its 4 keys


# -- activation checkpointing ---------------------------------------------------------------------
@pytest.mark.parametrize("image", [{}, {"backbone": "efficientnet-b0", "freeze_bn": False}])
def test_checkpointing_gives_the_same_loss_gradients_and_batchnorm_statistics(
        tmp_path: Path, toy_captions: list[str], image: dict) -> None:
    overrides = dict(TINY, image=image, text={"dropout": 0.1})  # dropout: RNG replayed
    ckpt = save_checkpoint(build_model(_config(model_overrides=overrides), toy_captions),
                           tmp_path / "m")
    pixels, tokens = torch.rand(4, 3, 32, 32), None

    def run(checkpointing: bool):
        nonlocal tokens
        model = load_checkpoint(ckpt)
        model.train()
        assert set_grad_checkpointing(model, checkpointing) > 0
        tokens = tokens or model.tokenize(toy_captions[:4])
        torch.manual_seed(7)
        out = model(pixels, **tokens, momentum=0.9, enqueue=False)
        out["loss"].backward()
        return out["loss"].detach(), _grads(model), model.state_dict()

    loss, grads, state = run(False)
    loss_c, grads_c, state_c = run(True)
    torch.testing.assert_close(loss_c, loss, atol=1e-5, rtol=0)
    assert set(grads_c) == set(grads)
    for name, g in grads.items():
        torch.testing.assert_close(grads_c[name], g, atol=1e-5, rtol=1e-4, msg=name)
    for name, value in state.items():  # running statistics updated once, not twice
        torch.testing.assert_close(state_c[name], value, atol=1e-6, rtol=0, msg=name)


def test_checkpointing_in_the_trainer_reports_the_same_losses(toy_shards: Path,
                                                               toy_captions: list[str]) -> None:
    losses = []
    for on in (False, True):
        cfg = _config(grad_checkpointing=on, steps=3)
        reports: list[dict] = []
        train(cfg, _batches(toy_shards, cfg), reports.append, None, captions=toy_captions)
        losses.append([r["loss"] for r in reports])
    assert losses[0][-1] > 0
    np.testing.assert_allclose(losses[1], losses[0], atol=1e-5)


def test_the_trainer_applies_jitter_drawn_by_the_data_path(toy_shards: Path,
                                                         toy_captions: list[str]) -> None:
    import dataclasses

    cfg = _config()
    deferred = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment,
                                                                   jitter_on_device=True))
    model = build_model(cfg, toy_captions)
    on_cpu = _Runner(cfg, model, make_optimizer(model, cfg), torch.device("cpu"), 1, 10)
    on_device = _Runner(deferred, model, make_optimizer(model, cfg), torch.device("cpu"), 1, 10)
    a = on_cpu.prepare(_batches(toy_shards, cfg).batch(0))
    b = on_device.prepare(_batches(toy_shards, deferred).batch(0))
    assert (a.pixels - b.pixels).abs().max() <= 1 / 255 + 1e-4


# -- torch.compile, channels-last, fp16 ------------------------------------------------------------
SMALL = dict(TINY, image={"patch_layers": 1}, text={"layers": 1, "token_layers": 0})


def _compile_run(backend: str, toy_shards: Path, toy_captions: list[str]) -> list[list[float]]:
    losses = []
    for compiled in (False, True):
        cfg = _config(model_overrides=SMALL, compile=compiled, compile_backend=backend, steps=2,
                      channels_last=True)
        reports: list[dict] = []
        train(cfg, _batches(toy_shards, cfg), reports.append, None, captions=toy_captions)
        losses.append([r["loss"] for r in reports])
    return losses


def test_compiled_towers_train_as_the_eager_ones(toy_shards: Path, toy_captions: list[str]) -> None:
    """Dynamo captures every tower (backend "eager": no code generation, which on this 2-core
    box takes minutes; BRIVL_TEST_INDUCTOR=1 runs inductor too)."""
    torch._dynamo.reset()
    eager, compiled = _compile_run("eager", toy_shards, toy_captions)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


@pytest.mark.skipif(not os.environ.get("BRIVL_TEST_INDUCTOR"),
                    reason="inductor compiles brivl-tiny in ~2 min on the 2-core CI box (gcc "
                           "present, it works); set BRIVL_TEST_INDUCTOR=1 to run it")
def test_inductor_compiled_towers_train_as_the_eager_ones(toy_shards: Path,
                                                          toy_captions: list[str]) -> None:
    torch._dynamo.reset()
    eager, compiled = _compile_run("inductor", toy_shards, toy_captions)
    np.testing.assert_allclose(compiled, eager, atol=1e-4)


def test_fp16_trains_with_a_grad_scaler_that_is_checkpointed(tmp_path: Path, toy_shards: Path,
                                                              toy_captions: list[str]) -> None:
    cfg = _config(fp16=True, steps=2, checkpoint_every=1)
    reports: list[dict] = []
    out = train(cfg, _batches(toy_shards, cfg), reports.append, tmp_path, captions=toy_captions)
    assert all(np.isfinite(r["loss"]) and r["grad_scale"] > 1 for r in reports)
    saved = read_trainer_state(out["checkpoint"])["grad_scaler"]
    assert saved["scale"] == reports[-1]["grad_scale"]
    again = _config(fp16=True, steps=3, checkpoint_every=1)
    more: list[dict] = []
    train(again, _batches(toy_shards, again), more.append, tmp_path, captions=toy_captions)
    assert [r["step"] for r in more] == [3] and more[0]["grad_scale"] in (
        saved["scale"], saved["scale"] / 2)  # restored, then kept or backed off once


# -- learnt temperature -------------------------------------------------------------------------
def test_a_learnt_temperature_stays_in_its_clamp_and_is_checkpointed(tmp_path: Path, toy_shards: Path,
                                                                     toy_captions: list[str]) -> None:
    overrides = dict(TINY, learn_temperature=True, temperature_range=[0.03, 0.2])
    cfg = _config(model_overrides=overrides, lr=5.0, steps=5, checkpoint_every=5, grad_clip=None)
    reports: list[dict] = []
    out = train(cfg, _batches(toy_shards, cfg), reports.append, tmp_path, captions=toy_captions)
    temps = [r["temperature"] for r in reports]
    assert all(0.03 - 1e-7 <= t <= 0.2 + 1e-7 for t in temps) and any(abs(t - 0.07) > 1e-3 for t in temps)
    saved = load_checkpoint(out["checkpoint"])
    assert float(saved.temperature().detach()) == pytest.approx(temps[-1], abs=1e-7)
    assert torch.equal(saved.log_temperature, out["model"].log_temperature)
    fixed = load_checkpoint(prepare_initial_checkpoint(_config(), toy_captions, tmp_path / "fixed"))
    assert fixed.temperature() == 0.07 and not hasattr(fixed, "log_temperature")
    with pytest.raises(ConfigError, match="temperature: 0.07 lies outside temperature_range"):
        TrainConfig.from_dict({"model_overrides": dict(TINY, learn_temperature=True,
                                                       temperature_range=[0.1, 0.5])})


# -- sample-count training ------------------------------------------------------------------------
def test_train_samples_sets_the_steps_and_runs_past_one_pass(toy_shards: Path,
                                                             toy_captions: list[str]) -> None:
    cfg = _config(train_samples=120, batch_size=4, grad_accum_steps=2, resampled=True, steps=None)
    assert cfg.total_steps(96, world_size=1) == 15 and cfg.total_steps(96, world_size=2) == 8
    out = train(cfg, _batches(toy_shards, cfg), None, None, captions=toy_captions)
    assert out["step"] == 15 and out["samples_seen"] == 120 > 96  # more than one pass


def test_resampled_batches_are_seeded_draws_with_replacement_split_over_workers(
        toy_shards: Path) -> None:
    def worker(rank: int) -> ShardBatches:
        return ShardBatches(toy_shards, batch_size=8, image_size=32, resampled=True, seed=3,
                            rank=rank, world_size=2)

    a, b = worker(0), worker(1)
    rows = np.concatenate([np.stack([a.indices(n), b.indices(n)], 1).ravel() for n in range(6)])  # 96 draws
    assert np.array_equal(worker(0).indices(17), a.indices(17))  # a pure function of (seed, batch)
    counts = np.bincount(rows, minlength=96)
    assert counts.max() > 1 and (counts == 0).any()  # with replacement: not one pass of 96
    assert not np.array_equal(a.indices(0), b.indices(0))


# -- resume after SIGKILL with accumulation -------------------------------------------------------
def test_a_killed_accumulating_run_resumes_with_the_exact_queue(
        tmp_path: Path, toy_shards: Path, toy_captions: list[str], kill_when) -> None:
    init = prepare_initial_checkpoint(_config(), toy_captions, tmp_path / "init")
    values = dict(model_overrides=TINY, vocab_size=300, batch_size=4, grad_accum_steps=2, steps=4,
                  warmup_steps=1, report_every=1, checkpoint_every=2)
    cfg = TrainConfig(**values)
    whole = train(cfg, _batches(toy_shards, cfg), None, tmp_path / "whole", init_checkpoint=init)

    killed = tmp_path / "killed"
    script = (  # trains in another process and pauses after the step-2 checkpoint
        "import time, torch\n"
        "torch.set_num_threads(1)\n"
        "import brivl.train.loop as loop\n"
        "from brivl.train import ShardBatches, TrainConfig, train\n"
        "save = loop.save_training_checkpoint\n"
        "def pausing_save(root, step, *args, **kwargs):\n"
        "    path = save(root, step, *args, **kwargs)\n"
        "    if step == 2:\n"
        "        time.sleep(120)\n"
        "    return path\n"
        "loop.save_training_checkpoint = pausing_save\n"
        f"cfg = TrainConfig(**{values!r})\n"
        f"batches = ShardBatches({str(toy_shards)!r}, batch_size=4, image_size=32, augment=cfg.augment)\n"
        f"train(cfg, batches, None, {str(killed)!r}, init_checkpoint={str(init)!r})\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, killed / "step-00000002" / "trainer.json", 90)
    assert proc.returncode == -signal.SIGKILL
    assert read_trainer_state(killed / "step-00000002")["batches_consumed"] == 4  # micro-batches
    resumed = train(cfg, _batches(toy_shards, cfg), None, killed, init_checkpoint=init)
    assert resumed["resumed_from_step"] == 2 and resumed["step"] == 4
    expected = whole["model"].state_dict()
    for name, value in resumed["model"].state_dict().items():
        assert torch.equal(value, expected[name]), name  # the queues and pointers included
    assert whole["model"].queue_fill() == 1.0
