"""The pretraining loop: a plain function of (config, batches, report callback, checkpoint dir).

It runs alone in one process (a Python iterator over shards) or as the body of a Ray Train
worker (the caller passes Ray's dataset iterator and ``ray.train.report``); it never imports
Ray. With a ``torch.distributed`` process group it averages gradients across workers (the
model all-gathers its momentum keys itself).

What large runs need, each a :class:`TrainConfig` field: gradient accumulation over
micro-batches (``grad_accum_steps``), activation checkpointing (``grad_checkpointing``),
``torch.compile`` of the towers (``compile``), channels-last pixels, fused AdamW on CUDA,
bf16 or fp16 (with a GradScaler) autocast, SyncBN (``sync_bn``) and sample-count training
(``train_samples``). A learnt temperature is a model config field (``learn_temperature``:
the parameter lives in the checkpoint).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from brivl.model import BriVL, build_config, create_model, load_checkpoint, save_checkpoint
from brivl.model.distributed import all_gather_cat
from brivl.model.precision import cpu_has_native_bf16
from brivl.model.recompute import set_grad_checkpointing
from brivl.model.sync_bn import convert_global_batchnorm
from brivl.model.tokenizer import train_tokenizer
from brivl.train.augment import colour_jitter_batch, decode_augment_batch
from brivl.train.config import TrainConfig
from brivl.train.data import prefetch
from brivl.train.schedule import lr_at, momentum_at
from brivl.train.state import (
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
    seed_everything,
)
from brivl.train.trunk_cache import TrunkCache, batch_ids

METRICS_LOG = "metrics.jsonl"
Report = Callable[[dict[str, Any]], None]


def needs_tokenizer(config: TrainConfig) -> bool:
    """True when the model has no tokenizer of its own (one is trained on the captions)."""
    cfg = build_config(config.model, config.model_overrides)
    return cfg.text.encoder == "scratch" and cfg.text.tokenizer is None


def build_model(config: TrainConfig, captions: Iterable[str] | None = None) -> BriVL:
    """A fresh model for ``config`` (seeded); trains a tokenizer on ``captions`` if needed."""
    tokenizer = None
    if needs_tokenizer(config):
        if captions is None:
            raise ValueError(
                f"{config.model} trains its tokenizer on the corpus: pass the training captions"
            )
        tokenizer = train_tokenizer(captions, vocab_size=config.vocab_size)
    torch.manual_seed(config.seed)
    return create_model(config.model, tokenizer=tokenizer, **config.model_overrides)


def prepare_initial_checkpoint(config: TrainConfig | dict, captions: Iterable[str],
                               out_dir: str | Path) -> Path:
    """Build the starting model once and save it, so every worker starts from the same weights."""
    config = _as_config(config)
    return save_checkpoint(build_model(config, captions), out_dir)


BACKBONES = ("image_tower.backbone.", "text_tower.encoder.")  # the pretrained parts


def make_optimizer(model: BriVL, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norm weights.

    The backbones' unfrozen layers learn at ``lr * pretrained_lr_scale`` (group
    ``lr_scale``), the new layers (patch/token Transformers, heads, a learnt temperature)
    at ``lr``. The fused kernel on CUDA with ``fused_adamw``.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (name.startswith(BACKBONES), p.ndim < 2)
            groups.setdefault(key, []).append(p)
    param_groups = [
        {"params": params, "weight_decay": 0.0 if no_decay else config.weight_decay,
         "lr_scale": config.pretrained_lr_scale if backbone else 1.0}
        for (backbone, no_decay), params in sorted(groups.items())
    ]
    on_cuda = next(model.parameters()).device.type == "cuda"
    fused = {"fused": True} if config.fused_adamw and on_cuda else {}
    return torch.optim.AdamW(param_groups, lr=config.lr, betas=config.betas, **fused)


def train(
    config: TrainConfig | dict,
    batches: Iterable[dict] | Callable[[int], Iterable[dict]],
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    *,
    init_checkpoint: str | Path | None = None,
    captions: Iterable[str] | None = None,
    samples_per_epoch: int | None = None,
    prefetch_batches: int = 2,
    trunk_store: str | Path | None = None,
) -> dict[str, Any]:
    """Pretrain; return ``{step, checkpoint, resumed_from, metrics, samples_seen}``.

    ``batches``: an iterable of batches (columns ``pixels`` uint8/float [B, 3, S, S],
    ``caption``; optional ``valid``), or a callable ``batches(skip)`` that starts at batch
    number ``skip`` (cheap resume). On resume from the newest checkpoint in
    ``checkpoint_dir`` the batches already consumed are skipped, so the run continues exactly
    where the checkpointed one was. The model comes from that checkpoint, else from
    ``init_checkpoint``, else is built fresh (a tokenizer trained on ``captions`` if the model
    needs one). ``report(metrics)`` is called on every worker every ``report_every`` steps.
    ``trunk_store``: a frozen-trunk store directory the trunk cache reads and adds to
    (:mod:`brivl.model.trunk_store`; only with ``config.trunk_cache``).
    """
    config = _as_config(config)
    rank, world = _rank_world()
    device = _device(config.device)
    latest = latest_checkpoint(checkpoint_dir) if resume else None
    state: dict[str, Any] = {"batches_consumed": 0, "samples_seen": 0, "bad_samples": 0,
                             "skipped_batches": 0}
    if latest is not None:
        model, optimizer, saved = load_training_checkpoint(
            latest, lambda m: make_optimizer(m.to(device), config), map_location=device)
        _check_resumable(saved, config, latest)
        state.update({k: saved[k] for k in state if k in saved})
        step = int(saved["step"])
        previous_metrics = saved.get("metrics") or {}
    else:
        seed_everything(config.seed)
        model = load_checkpoint(init_checkpoint) if init_checkpoint else build_model(config, captions)
        model.to(device)
        optimizer = make_optimizer(model, config)
        seed_everything(config.seed * 1000 + rank)  # per-worker randomness (dropout)
        step = 0
        previous_metrics = {}
        saved = {}
    resumed_from_step = step
    _prepare_model(model, config, device)
    if not config.use_queue and not model.config.in_batch_negatives:
        raise ValueError("use_queue=False leaves no negatives; accepted: use_queue=True, or "
                         "model_overrides={'in_batch_negatives': True}")
    if config.use_queue:
        model.check_global_batch(config.batch_size)  # K divisible by the global micro-batch
    samples_per_epoch = samples_per_epoch or getattr(batches, "samples_per_epoch", None)
    if config.steps is None and config.train_samples is None and not samples_per_epoch:
        raise ValueError("config.epochs needs samples_per_epoch (or batches.samples_per_epoch)")
    total = config.total_steps(samples_per_epoch or 0, world)
    model.train()
    runner = _Runner(config, model, optimizer, device, world, total, trunk_store)
    if runner.scaler is not None and saved.get("grad_scaler"):
        runner.scaler.load_state_dict(saved["grad_scaler"])
    source = _start(batches, state["batches_consumed"], prefetch_batches)
    log = Path(checkpoint_dir) / METRICS_LOG if checkpoint_dir and rank == 0 else None
    checkpoint = latest
    meter = _Meter()
    try:
        step, checkpoint, last = _loop(config, runner, source, state, meter, step, total, report,
                                       checkpoint_dir, checkpoint, log, samples_per_epoch,
                                       previous_metrics)
    finally:
        source.close()
        if runner.trunk_cache is not None:
            runner.trunk_cache.flush()
    return {"step": step, "total_steps": total, "checkpoint": str(checkpoint) if checkpoint else None,
            "resumed_from": str(latest) if latest else None,
            "resumed_from_step": resumed_from_step,
            "metrics": last,
            "samples_seen": state["samples_seen"], "model": model}


def _prepare_model(model: BriVL, config: TrainConfig, device: torch.device) -> None:
    """SyncBN, activation checkpointing, channels-last and compile, as the config asks."""
    if config.sync_bn:
        convert_global_batchnorm(model)
    set_grad_checkpointing(model, config.grad_checkpointing)
    if config.channels_last:
        for tower in (model.image_tower, model.image_tower_m):
            tower.to(memory_format=torch.channels_last)
    if config.compile:
        _compile_towers(model, config.compile_backend)


def _compile_towers(model: BriVL, backend: str) -> None:
    """``torch.compile`` each tower's trunk and head part (the model's own bookkeeping, queues
    and collectives stay eager); the weights and state-dict keys are untouched."""
    for tower in (model.image_tower, model.text_tower, model.image_tower_m, model.text_tower_m):
        tower.trunk = torch.compile(tower.trunk, backend=backend)
        tower.from_trunk = torch.compile(tower.from_trunk, backend=backend)


def _next_micro_batches(config: TrainConfig, runner: _Runner, source: Iterator[dict],
                        state: dict[str, Any], meter: _Meter) -> list[_Prepared] | None:
    """The ``grad_accum_steps`` micro-batches of one step (None: the data ran out)."""
    micro: list[_Prepared] = []
    while len(micro) < config.grad_accum_steps:
        with meter.waiting():
            batch = next(source, None)
        if batch is None:
            return None  # the data ran out before `total` steps
        state["batches_consumed"] += 1
        prepared = runner.prepare(batch)
        if prepared is None:  # short, or not one decodable image
            state["skipped_batches"] += 1
            continue
        state["bad_samples"] += prepared.bad
        micro.append(prepared)
    return micro


def _loop(config: TrainConfig, runner: _Runner, source: Iterator[dict], state: dict[str, Any],
          meter: _Meter, step: int, total: int, report: Report | None,
          checkpoint_dir: str | Path | None, checkpoint: Path | None, log: Path | None,
          samples_per_epoch: int | None, last: dict[str, Any]) -> tuple[int, Path | None, dict]:
    """Steps until ``total`` (or the data ends); reports and checkpoints on schedule."""
    model, optimizer, world = runner.model, runner.optimizer, runner.world
    while step < total:
        micro = _next_micro_batches(config, runner, source, state, meter)
        if micro is None:
            break
        out = runner.step(step, micro)
        step += 1
        state["samples_seen"] += config.global_batch(world)
        meter.add(out)
        if config.max_seconds is not None and runner.train_seconds(meter) >= config.max_seconds:
            total = step  # the time budget is spent: this step is the last
        if step % config.report_every == 0 or step == total:
            last = meter.flush(step, runner, state, model)
            _log_metrics(log, last)
            if report is not None:
                report(last)
        if checkpoint_dir is not None and (step % config.checkpoint_every == 0 or step == total):
            checkpoint = save_training_checkpoint(
                checkpoint_dir, step, model, optimizer,
                {**state, "epoch": _epoch(state, samples_per_epoch),
                 "total_steps": total, "config": config.to_dict(), "metrics": last,
                 **runner.extra_state()},
                keep=config.keep_checkpoints)
    return step, checkpoint, last


@dataclass
class _Prepared:
    """One batch ready for a step: pixels or cached trunks, captions, tokens, ids."""

    pixels: torch.Tensor | None
    captions: list[str]
    keys: list[str]
    tokens: dict[str, torch.Tensor]
    bad: int = 0
    image_trunk: torch.Tensor | None = None
    text_trunk: torch.Tensor | None = None


class _Runner:
    """One optimisation step: schedules, autocast, backward, gradient averaging, clipping."""

    def __init__(self, config: TrainConfig, model: BriVL, optimizer: torch.optim.Optimizer,
                 device: torch.device, world: int, total: int,
                 trunk_store: str | Path | None = None) -> None:
        self.config, self.model, self.optimizer = config, model, optimizer
        self.device, self.world, self.total = device, world, total
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        if config.fp16:  # fp16 wins over bf16; its small range needs loss scaling
            self.autocast, self.amp_dtype = True, torch.float16
            self.scaler: torch.amp.GradScaler | None = torch.amp.GradScaler(device.type)
        else:
            self.autocast = config.bf16 and (device.type == "cuda" or cpu_bf16(config.cpu_bf16))
            self.amp_dtype, self.scaler = torch.bfloat16, None
        self.lr = self.momentum = 0.0
        self.grad_norm = torch.zeros((), device=device)
        self.trunk_cache = (TrunkCache(bf16=self.autocast, store=trunk_store)
                            if config.trunk_cache else None)

    def fill_seconds(self) -> float:
        """Seconds spent so far filling the frozen-trunk cache (store reads included)."""
        return self.trunk_cache.fill_seconds if self.trunk_cache is not None else 0.0

    def train_seconds(self, meter: _Meter) -> float:
        """Wall time of the run so far without the trunk-cache fill: what ``max_seconds`` limits."""
        return meter.elapsed() - self.fill_seconds()

    def prepare(self, batch: dict[str, Any]) -> _Prepared | None:
        """Pixels on the device as float [0, 1] (or cached trunks), captions, tokens; bad
        rows replaced by good ones."""
        captions = [str(c) for c in batch["caption"]]
        n = len(captions)
        keys = [str(k) for k in batch["key"]] if "key" in batch else [str(i) for i in range(n)]
        if n != self.config.batch_size:
            return None  # a short batch (last of an iterable) would desynchronise the queues
        if self.trunk_cache is not None:
            return self._prepare_cached(batch, captions, keys)
        pixels = torch.as_tensor(np.asarray(batch["pixels"])) if not torch.is_tensor(
            batch["pixels"]) else batch["pixels"]
        if pixels.shape[0] != n:
            return None
        valid = np.asarray(batch["valid"], dtype=bool) if "valid" in batch else np.ones(n, dtype=bool)
        rows = _fill_rows(valid)
        if rows is None:
            return None
        colour = torch.as_tensor(np.asarray(batch["colour"])) if "colour" in batch else None
        if not valid.all():
            pixels = pixels[torch.as_tensor(rows)]
            captions, keys = [captions[i] for i in rows], [keys[i] for i in rows]
            colour = colour[torch.as_tensor(rows)] if colour is not None else None
        pixels = pixels.to(self.device, non_blocking=True)
        if pixels.dtype == torch.uint8:
            pixels = pixels.float().div_(255.0)
        if colour is not None and self.config.augment.enabled:  # jitter_on_device draws
            pixels = colour_jitter_batch(pixels, self.config.augment, colour)
        if self.config.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return _Prepared(pixels, captions, keys, self._tokens(captions), bad=int((~valid).sum()))

    def _prepare_cached(self, batch: dict[str, Any], captions: list[str], keys: list[str]) -> _Prepared | None:
        """Trunk outputs from the cache; raw batches (``image`` bytes) are decoded on a miss."""
        tokens = self._tokens(captions)
        image, text, valid = self.trunk_cache.lookup(
            self.model, keys, captions, list(batch["image"]), tokens, self._decode, self.device)
        rows = _fill_rows(valid)
        if rows is None:
            return None
        if not valid.all():  # a bad image's row is replaced by a good row (trunks already are)
            captions, keys = [captions[i] for i in rows], [keys[i] for i in rows]
            tokens = self._tokens(captions)
            image, text, _ = self.trunk_cache.lookup(
                self.model, keys, captions, [batch["image"][i] for i in rows], tokens,
                self._decode, self.device)
        return _Prepared(None, captions, keys, tokens, bad=int((~valid).sum()),
                         image_trunk=image, text_trunk=text)

    def _decode(self, images: list[bytes], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = decode_augment_batch({"image": images, "caption": [""] * len(images), "key": keys},
                                   image_size=self.model.config.image_size, augment=None)
        return out["pixels"], out["valid"]

    def _tokens(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.model.tokenize(captions)  # one batched call (the tokenizers library)
        if self.config.compile:  # one static shape: no recompiles for every caption length
            tok = self.model.tokenizer
            extra = tok.max_length - tokens["input_ids"].shape[1]
            tokens = {"input_ids": F.pad(tokens["input_ids"], (0, extra), value=tok.pad_id),
                      "attention_mask": F.pad(tokens["attention_mask"], (0, extra), value=0)}
        return {k: v.to(self.device) for k, v in tokens.items()}

    def step(self, step: int, micro: list[_Prepared]) -> dict[str, torch.Tensor]:
        """One optimiser step over the micro-batches of ``micro``; their mean metrics."""
        out = self.backward(step, micro)
        self.apply()
        return out

    def backward(self, step: int, micro: list[_Prepared]) -> dict[str, torch.Tensor]:
        """Schedules, EMA update, forward and backward of every micro-batch, keys enqueued;
        the gradient of the step's loss is left in ``.grad`` (not yet averaged over workers)."""
        cfg = self.config
        self.lr = lr_at(step, self.total, cfg.lr, cfg.warmup_steps, cfg.min_lr)
        self.momentum = momentum_at(step, self.total, cfg.momentum_start, cfg.momentum_end)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)
        if len(micro) == 1:
            out = self._forward(micro[0], momentum=self.momentum, enqueue=cfg.use_queue)
            self._backward(out["loss"])
            return {k: out[k].detach() for k in METRIC_NAMES}
        return self._accumulate(micro)

    def _accumulate(self, micro: list[_Prepared]) -> dict[str, torch.Tensor]:
        """N micro-batches as one batch of N x B (see :class:`brivl.model.BriVL`): one EMA
        update, the whole step's keys first when negatives are in-batch, the queue read as
        at the step's start, each micro-batch's keys enqueued after the last backward."""
        model, n = self.model, len(micro)
        model.momentum_update(self.momentum)
        batch_keys = None
        if model.config.in_batch_negatives:
            with self._autocast():
                keys = [model.momentum_keys(m.pixels, m.tokens["input_ids"],
                                            m.tokens["attention_mask"], m.image_trunk,
                                            m.text_trunk) for m in micro]
            batch_keys = (torch.cat([all_gather_cat(k[0]) for k in keys]),  # (N x B_global, D)
                          torch.cat([all_gather_cat(k[1]) for k in keys]))
        rank = dist.get_rank() if self.world > 1 else 0
        sums: dict[str, torch.Tensor] = {}
        enqueue = []
        for j, m in enumerate(micro):
            offset = (j * self.world + rank) * self.config.batch_size
            out = self._forward(m, momentum=None, enqueue=False,
                                batch_keys=None if batch_keys is None else (*batch_keys, offset))
            self._backward(out["loss"] / n)
            for k in METRIC_NAMES:
                sums[k] = sums.get(k, 0.0) + out[k].detach() / n
            enqueue.append((out["image_key"].detach(), out["text_key"].detach(), self._ids(m)))
        if self.config.use_queue:
            for k_img, k_txt, ids in enqueue:
                model.enqueue(k_img, k_txt, ids.get("sample_ids"), ids.get("caption_ids"))
        return sums

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.autocast)

    def _ids(self, batch: _Prepared) -> dict[str, torch.Tensor]:
        if not self.config.mask_false_negatives:
            return {}
        sample_ids, caption_ids = batch_ids(batch.keys, batch.captions)
        return {"sample_ids": sample_ids.to(self.device), "caption_ids": caption_ids.to(self.device)}

    def _forward(self, batch: _Prepared, **kwargs: Any) -> dict[str, torch.Tensor]:
        tokens = batch.tokens
        with self._autocast():
            return self.model(batch.pixels, tokens["input_ids"], tokens["attention_mask"],
                              **self._ids(batch), image_trunk=batch.image_trunk,
                              text_trunk=batch.text_trunk, **kwargs)

    def _backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def apply(self) -> None:
        """Average gradients over workers, unscale (fp16), clip, optimiser step, clamp a
        learnt temperature."""
        if self.world > 1:
            _average_gradients(self.params, self.world)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip is not None:
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when a gradient is inf/nan
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.clamp_temperature()

    def extra_state(self) -> dict[str, Any]:
        """JSON state a checkpoint needs beyond model and optimizer (the GradScaler's)."""
        return {"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}


METRIC_NAMES = ("loss", "loss_i2t", "loss_t2i", "acc_i2t", "acc_t2i")


class _Meter:
    """Accumulates step outputs and time spent waiting for data between reports."""

    NAMES = METRIC_NAMES

    def __init__(self) -> None:
        self.start = self.interval_start = time.perf_counter()
        self.wait = 0.0
        self.sums: torch.Tensor | None = None
        self.steps = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def waiting(self) -> _Timer:
        return _Timer(self)

    def add(self, out: dict[str, torch.Tensor]) -> None:
        values = torch.stack([out[k].float() for k in self.NAMES])
        self.sums = values if self.sums is None else self.sums + values
        self.steps += 1

    def flush(self, step: int, runner: _Runner, state: dict[str, Any], model: BriVL) -> dict[str, Any]:
        now = time.perf_counter()
        elapsed = now - self.interval_start
        means = self.sums / self.steps
        timing = torch.tensor([self.wait, elapsed], dtype=torch.float64, device=runner.device)
        if runner.world > 1:
            dist.all_reduce(means.div_(runner.world))
            dist.all_reduce(timing, op=dist.ReduceOp.MAX)  # the slowest worker's view
        values = dict(zip(self.NAMES, means.tolist(), strict=True))
        wait, elapsed = timing.tolist()
        if runner.world > 1:
            values["replica_drift"] = _replica_drift(runner.params)
        metrics = {
            "step": step,
            **values,
            "lr": runner.lr,
            "momentum": runner.momentum,
            "queue_fill": model.queue_fill(),
            "grad_norm": float(runner.grad_norm),
            "samples_per_s": (self.steps * runner.config.global_batch(runner.world)
                              / max(elapsed, 1e-9)),
            "data_wait_frac": wait / max(elapsed, 1e-9),
            "samples_seen": state["samples_seen"],
            "bad_samples": state["bad_samples"],
            "skipped_batches": state["skipped_batches"],
            "elapsed_s": now - self.start,
            "trunk_fill_s": runner.fill_seconds(),
            "train_s": now - self.start - runner.fill_seconds(),
            "torch_threads": torch.get_num_threads(),
        }
        if model.config.learn_temperature:
            metrics["temperature"] = float(model.temperature().detach())
        if runner.scaler is not None:
            metrics["grad_scale"] = float(runner.scaler.get_scale())
        self.interval_start, self.wait, self.sums, self.steps = now, 0.0, None, 0
        return metrics


class _Timer:
    def __init__(self, meter: _Meter) -> None:
        self.meter = meter

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.meter.wait += time.perf_counter() - self.t0


def _replica_drift(params: list[torch.nn.Parameter]) -> float:
    """Spread across workers of the sum of |parameters| (0.0 while the replicas agree)."""
    total = torch.stack([p.detach().double().abs().sum() for p in params]).sum().reshape(1)
    spread = torch.cat([total, -total])
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread[0] + spread[1])


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce the mean gradient across workers in one flat buffer."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat.div_(world)
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def _fill_rows(valid: np.ndarray) -> np.ndarray | None:
    """Row indices with each invalid row replaced by a valid one (None: no valid row)."""
    good = np.flatnonzero(valid)
    if len(good) == 0:
        return None
    fill = good[np.arange(len(valid)) % len(good)]
    return np.where(valid, np.arange(len(valid)), fill)


def _start(batches: Any, skip: int, depth: int) -> Generator[dict, None, None]:
    if callable(batches):  # batches(skip) starts at batch number `skip` by itself
        source = iter(batches(skip))
    else:
        source = iter(batches)
        for _ in range(skip):  # an opaque iterable: consume what was already trained on
            if next(source, None) is None:
                break
    return prefetch(source, depth)


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    for name in ("batch_size", "grad_accum_steps"):  # what the data position depends on
        before = saved.get("config", {}).get(name)
        if before is not None and before != getattr(config, name):
            raise ValueError(
                f"{path}: checkpoint was trained with {name}={before}, this run asks for "
                f"{getattr(config, name)}; accepted: the same {name}, or resume=False / a new "
                "checkpoint directory"
            )


def _epoch(state: dict[str, Any], samples_per_epoch: int | None) -> float:
    if not samples_per_epoch:
        return math.nan
    return state["samples_seen"] / samples_per_epoch


def _log_metrics(path: Path | None, metrics: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(metrics) + "\n")


def read_metrics_log(checkpoint_dir: str | Path) -> list[dict[str, Any]]:
    """The reported metrics of a run, one per report step (a resumed run's repeats dropped)."""
    path = Path(checkpoint_dir) / METRICS_LOG
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def _as_config(config: TrainConfig | dict) -> TrainConfig:
    return config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def cpu_bf16(setting: bool | str) -> bool:
    """``TrainConfig.cpu_bf16`` resolved: ``"auto"`` means the CPU has bf16 instructions
    (:func:`brivl.model.precision.cpu_has_native_bf16`); emulated bf16 slows a step down."""
    return cpu_has_native_bf16() if setting == "auto" else bool(setting)


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(name)
