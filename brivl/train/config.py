"""Training configuration: what to train, for how long, and how (all plain, JSON-able fields)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from brivl.config_parse import ConfigError, bounded, config_from_dict
from brivl.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_STEPS


@dataclass
class TrainAugmentConfig:
    """Training-sample augmentation (BriVL/MoCo-v2 style), applied per sample while decoding
    shard images; not the interpretation views (:class:`brivl.interpret.ViewAugmentConfig`)."""

    enabled: bool = True
    crop_scale: tuple[float, float] = bounded((0.5, 1.0), gt=0, max=1)  # random resized crop:
    #                                                                    area fraction kept
    crop_ratio: tuple[float, float] = bounded((3 / 4, 4 / 3), gt=0, max=100)  # aspect range
    jitter_p: float = bounded(0.8, min=0, max=1)  # probability of colour jitter
    brightness: float = bounded(0.4, min=0, max=1)  # factor drawn from [1-b, 1+b]
    contrast: float = bounded(0.4, min=0, max=1)
    saturation: float = bounded(0.4, min=0, max=1)
    hue: float = bounded(0.1, min=0, max=0.5)  # hue rotation drawn from [-h, h] turns
    grayscale_p: float = bounded(0.2, min=0, max=1)  # probability of converting to greyscale
    hflip_p: float = bounded(0.5, min=0, max=1)  # probability of a horizontal flip
    jitter_on_device: bool = False  # leave colour jitter and greyscale to the trainer, batched
    #   on the training device (the data path decodes, crops, flips and only draws each
    #   sample's 6 colour numbers: ~30 % less CPU per sample; same draws, no uint8 rounding)


@dataclass
class TrainConfig:
    """One pretraining run. ``train_samples`` wins over ``steps``, ``steps`` over ``epochs``.

    One optimiser step takes ``grad_accum_steps`` micro-batches of ``batch_size`` per worker:
    the global batch of a step is ``batch_size x workers x grad_accum_steps``, each
    micro-batch enqueues its own keys, so the queue size must be a multiple of the global
    micro-batch ``batch_size x workers`` (see :class:`brivl.model.BriVL` for why the step is
    exactly the step of one big batch).
    """

    model: str = DEFAULT_MODEL  # a name from the model registry (brivl.model.create_model)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # config fields to override
    vocab_size: int = bounded(2000, min=10, max=1_000_000)  # tokenizer trained on the shard
    #                                                        captions (models without one)
    batch_size: int = bounded(DEFAULT_BATCH_SIZE, min=1, max=65_536)  # per worker and micro-batch
    grad_accum_steps: int = bounded(1, min=1, max=65_536)  # micro-batches per optimiser step
    steps: int | None = bounded(DEFAULT_STEPS, min=1, max=100_000_000)  # optimiser steps in
    #                                                        total; None: run ``epochs`` epochs
    epochs: float | None = bounded(None, gt=0, max=1_000_000)
    train_samples: int | None = bounded(None, min=1, max=10**13)  # samples to train on in
    #   total (OpenCLIP's --train-num-samples): steps = ceil(train_samples / global batch);
    #   the data repeats as many passes as that takes
    resampled: bool = False  # draw every batch's rows with replacement (OpenCLIP's
    #   --dataset-resampled) instead of one permutation per epoch
    lr: float = bounded(1e-3, gt=0, max=10)  # peak AdamW learning rate
    min_lr: float = bounded(1e-5, min=0, max=10)  # cosine floor
    weight_decay: float = bounded(0.05, min=0, max=10)
    betas: tuple[float, float] = bounded((0.9, 0.98), min=0, max=1)
    warmup_steps: int = bounded(20, min=0, max=100_000_000)  # linear warmup from 0 to ``lr``
    momentum_start: float = bounded(0.99, min=0, max=1)  # momentum-encoder EMA, cosine-
    momentum_end: float = bounded(0.999, min=0, max=1)  # increased to this at the last step
    use_queue: bool = True  # enqueue momentum keys (False: in-batch negatives only, ablation)
    grad_clip: float | None = bounded(1.0, gt=0)  # max global gradient norm (None: no clipping)
    checkpoint_every: int = bounded(50, min=1)  # steps between checkpoints (a final one is
    #                                             always written)
    keep_checkpoints: int = bounded(2, min=1)  # how many step checkpoints to keep
    report_every: int = bounded(10, min=1)  # steps between report() calls (the last always)
    seed: int = bounded(0, min=0)
    bf16: bool = True  # bf16 autocast when training on a GPU (on CPU only with cpu_bf16)
    cpu_bf16: bool | str = "auto"  # bf16 autocast on CPU: "auto" = only where the CPU has
    #   bf16 instructions (AVX512-BF16 or AMX; emulated, a step ran 14x slower on an AVX2 CPU);
    #   true/false force it
    fp16: bool = False  # fp16 autocast with a GradScaler instead of bf16 (GPUs without bf16;
    #   on CPU it runs too, slowly: for tests)
    grad_checkpointing: bool = False  # recompute the towers' trainable blocks in backward
    #   (activation memory for one more forward)
    compile: bool = False  # torch.compile the towers (opt-in: the first steps pay the compile)
    compile_backend: str = bounded("inductor", choices=("inductor", "aot_eager", "eager"))
    channels_last: bool = False  # image towers and pixels in channels-last memory (CNNs on GPUs)
    fused_adamw: bool = True  # the fused AdamW kernel on CUDA (elsewhere: torch's default)
    sync_bn: bool = False  # BatchNorm statistics over the global batch across workers
    #   (towers with unfrozen BatchNorm, e.g. brivl-paper; brivl.model.sync_bn says why SyncBN)
    trunk_cache: bool = False  # keep the frozen trunks' outputs per sample (needs augment off)
    mask_false_negatives: bool = True  # mask queued keys of the same sample or caption
    max_seconds: float | None = bounded(None, gt=0)  # stop after this much training wall
    #                        time, the trunk-cache fill not counted (None: no limit)
    pretrained_lr_scale: float = bounded(1.0, gt=0, max=1)  # lr multiplier of the pretrained,
    #                                                         unfrozen backbone layers
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    shuffle: bool = True  # reshuffle the sample order every epoch (seeded)
    augment: TrainAugmentConfig = field(default_factory=TrainAugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = config_from_dict(TrainAugmentConfig, self.augment, "train.augment")
        self.betas = tuple(self.betas)
        self.augment.crop_scale = tuple(self.augment.crop_scale)
        self.augment.crop_ratio = tuple(self.augment.crop_ratio)
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size} (accepted: >= 1)")
        if self.steps is None and self.epochs is None and self.train_samples is None:
            problems.append("none of steps, epochs, train_samples is set (accepted: one of "
                            "them > 0)")
        if self.steps is not None and self.steps < 1:
            problems.append(f"steps={self.steps} (accepted: >= 1)")
        if self.epochs is not None and self.epochs <= 0:
            problems.append(f"epochs={self.epochs} (accepted: > 0)")
        if not 0.0 <= self.momentum_start <= self.momentum_end <= 1.0:
            problems.append(
                f"momentum {self.momentum_start} -> {self.momentum_end} "
                "(accepted: 0 <= start <= end <= 1)"
            )
        if self.trunk_cache and self.augment.enabled:
            problems.append("trunk_cache=True with augment.enabled=True (augmentation changes "
                            "the frozen trunk's input every epoch; accepted: augment "
                            "{'enabled': false} with trunk_cache, or trunk_cache=False)")
        if isinstance(self.cpu_bf16, str) and self.cpu_bf16 != "auto":
            problems.append(f"cpu_bf16={self.cpu_bf16!r} (accepted: true, false or \"auto\")")
        if self.grad_accum_steps < 1:
            problems.append(f"grad_accum_steps={self.grad_accum_steps} (accepted: >= 1)")
        if self.train_samples is not None and self.train_samples < 1:
            problems.append(f"train_samples={self.train_samples} (accepted: >= 1, or null)")
        if self.max_seconds is not None and self.max_seconds <= 0:
            problems.append(f"max_seconds={self.max_seconds} (accepted: > 0, or null)")
        if not 0.0 < self.pretrained_lr_scale <= 1.0:
            problems.append(f"pretrained_lr_scale={self.pretrained_lr_scale} (accepted: 0 < x <= 1)")
        if self.checkpoint_every < 1 or self.report_every < 1 or self.keep_checkpoints < 1:
            problems.append("checkpoint_every, report_every and keep_checkpoints must be >= 1")
        if problems:
            raise ValueError("bad TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainConfig:
        """Build from a dict, every field checked, the model config too (ConfigError)."""
        return check_model(config_from_dict(cls, values, "train"))

    def global_batch(self, world_size: int = 1) -> int:
        """Samples per optimiser step over all workers and micro-batches."""
        return self.batch_size * world_size * self.grad_accum_steps

    def total_steps(self, samples_per_epoch: int, world_size: int = 1) -> int:
        """Optimiser steps in the run, given the training split's size."""
        if self.train_samples is not None:
            return max(1, math.ceil(self.train_samples / self.global_batch(world_size)))
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, samples_per_epoch // self.global_batch(world_size))
        return max(1, round(self.epochs * per_epoch))


TrainConfigT = TypeVar("TrainConfigT", bound=TrainConfig)


def check_model(cfg: TrainConfigT) -> TrainConfigT:
    """``cfg`` once its model name and ``model_overrides`` make a valid model config."""
    from brivl.model.factory import build_config

    try:
        build_config(cfg.model, cfg.model_overrides)
    except ConfigError as exc:
        where = "train.model" if str(exc).startswith("unknown model") else (
            f"train.model_overrides (model {cfg.model!r})")
        raise ConfigError(f"{where}: {exc}") from exc
    return cfg


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class PretrainConfig(TrainConfig):
    """A pretraining stage run: the training config plus how to run it.

    ``workers == 0`` trains in the calling process (no Ray); ``workers >= 1`` runs Ray Train
    with that many workers (gloo on CPU, nccl with ``use_gpu``).
    """

    workers: int = bounded(0, min=0, max=4096)
    use_gpu: bool = False
    cpus_per_worker: float | None = bounded(None, gt=0)  # Ray CPUs per worker (None: leave 1
    #                                                      for Ray Data)
    placement_strategy: str = bounded("PACK", choices=PLACEMENT_STRATEGIES)  # Ray placement of
    #   the workers: PACK fills a node first, SPREAD puts them on different nodes where it can
    #   (STRICT_*: must)
    data_cpus: float = bounded(1.0, gt=0)  # CPUs each Ray Data read/decode task asks for
    max_failures: int = bounded(2, min=0)  # Ray Train restarts the worker group this often
    val_limit: int = bounded(1000, min=0)  # validation pairs for the final R@k (0: skip)

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.workers < 0:
            problems.append(f"workers={self.workers} (accepted: >= 0)")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            problems.append(f"placement_strategy={self.placement_strategy!r} "
                            f"(accepted: {', '.join(PLACEMENT_STRATEGIES)})")
        if (self.cpus_per_worker is not None and self.cpus_per_worker <= 0) or self.data_cpus <= 0:
            problems.append(f"cpus_per_worker={self.cpus_per_worker}, data_cpus={self.data_cpus} "
                            "(accepted: > 0)")
        if self.workers > 0 and self.trunk_cache:
            problems.append("trunk_cache=True with Ray workers (the cache is in-process; "
                            "accepted: workers=0 with trunk_cache)")
        if problems:
            raise ValueError("bad PretrainConfig: " + "; ".join(problems))

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` part."""
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in self.to_dict().items() if k in names})
