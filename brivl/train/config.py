"""Training configuration: what to train, for how long, and how (all plain, JSON-able fields)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AugmentConfig:
    """BriVL/MoCo-v2 style image augmentation, applied per sample while decoding."""

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)  # random resized crop: area fraction kept
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # ... and aspect ratio range
    jitter_p: float = 0.8  # probability of colour jitter
    brightness: float = 0.4  # factor drawn from [1-b, 1+b]
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # hue rotation drawn from [-h, h] turns (0.5 = 180 degrees)
    grayscale_p: float = 0.2  # probability of converting to greyscale
    hflip_p: float = 0.5  # probability of a horizontal flip


@dataclass
class TrainConfig:
    """One pretraining run. ``steps`` wins over ``epochs`` when both are set."""

    model: str = "brivl-tiny"  # a name from the model registry (brivl.model.create_model)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # config fields to override
    vocab_size: int = 2000  # tokenizer trained on the shard captions (models without one)
    batch_size: int = 32  # per worker
    steps: int | None = 200  # optimiser steps in total; None: run ``epochs`` epochs
    epochs: float | None = None
    lr: float = 1e-3  # peak AdamW learning rate
    min_lr: float = 1e-5  # cosine floor
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 20  # linear warmup from 0 to ``lr``
    momentum_start: float = 0.99  # momentum-encoder EMA, cosine-increased ...
    momentum_end: float = 0.999  # ... to this value at the last step
    use_queue: bool = True  # enqueue momentum keys (False: in-batch negatives only, ablation)
    grad_clip: float | None = 1.0  # max global gradient norm (None: no clipping)
    checkpoint_every: int = 50  # steps between checkpoints (a final one is always written)
    keep_checkpoints: int = 2  # how many step checkpoints to keep
    report_every: int = 10  # steps between report() calls (the last step always reports)
    seed: int = 0
    bf16: bool = True  # bf16 autocast when training on a GPU (on CPU only with cpu_bf16)
    cpu_bf16: bool = False  # bf16 autocast on CPU too (see bench/train.py for when it pays)
    trunk_cache: bool = False  # keep the frozen trunks' outputs per sample (needs augment off)
    mask_false_negatives: bool = True  # mask queued keys of the same sample or caption
    max_seconds: float | None = None  # stop after this much training wall time (None: no limit)
    pretrained_lr_scale: float = 1.0  # lr multiplier of the pretrained, unfrozen backbone layers
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    shuffle: bool = True  # reshuffle the sample order every epoch (seeded)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**_known(AugmentConfig, self.augment, "augment"))
        self.betas = tuple(self.betas)
        self.augment.crop_scale = tuple(self.augment.crop_scale)
        self.augment.crop_ratio = tuple(self.augment.crop_ratio)
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size} (accepted: >= 1)")
        if self.steps is None and self.epochs is None:
            problems.append("neither steps nor epochs is set (accepted: one of them > 0)")
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
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise an error naming the accepted ones."""
        return cls(**_known(cls, values, "TrainConfig"))

    def total_steps(self, samples_per_epoch: int, world_size: int = 1) -> int:
        """Optimiser steps in the run, given the training split's size."""
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, samples_per_epoch // (self.batch_size * world_size))
        return max(1, round(self.epochs * per_epoch))


def _known(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; accepted: {sorted(names)}")
    return dict(values)


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class PretrainConfig(TrainConfig):
    """A pretraining stage run: the training config plus how to run it.

    ``workers == 0`` trains in the calling process (no Ray); ``workers >= 1`` runs Ray Train
    with that many workers (gloo on CPU, nccl with ``use_gpu``).
    """

    workers: int = 0
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # Ray CPUs per worker (None: leave 1 for Ray Data)
    placement_strategy: str = "PACK"  # Ray placement of the workers: PACK fills a node first,
    #   SPREAD puts them on different nodes where it can (STRICT_*: must)
    data_cpus: float = 1.0  # CPUs each Ray Data read/decode task asks for
    max_failures: int = 2  # Ray Train restarts the worker group this often, resuming
    val_limit: int = 1000  # validation pairs for the final retrieval R@k (0: skip)

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
