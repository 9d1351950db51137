"""What a trained model is compared with, and run-size adjustments decided from the data.

- :func:`frozen_towers_config`: the LiT-style baseline. The same pretrained towers, wholly
  frozen and mean-pooled (``brivl-lite-frozen``: global average of the EfficientNet map,
  mean of MiniLM's tokens), with one linear projection per tower trained by in-batch
  InfoNCE on the same shards for the same training wall time as the model it is compared
  with. Only the projections learn.
- :func:`cap_queue`: a queue longer than the corpus holds older keys of the very pairs
  being contrasted, so K is capped at the training split's size.
"""

from __future__ import annotations

import copy
from typing import Any

from brivl.model import build_config
from brivl.train.config import PretrainConfig

FROZEN_TOWERS_MODEL = "brivl-lite-frozen"


def frozen_towers_config(trained: dict[str, Any], seconds: float,
                         overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain config of the frozen-towers baseline for a model trained with ``trained``.

    It sees the same shards in batches of the same size at the trained model's image size,
    for ``seconds`` of training wall time (``max_seconds``), at a constant learning rate.
    """
    base = PretrainConfig.from_dict(trained)
    image_size = build_config(base.model, base.model_overrides).image_size
    cfg: dict[str, Any] = {
        "model": FROZEN_TOWERS_MODEL,
        "model_overrides": {"image_size": image_size},
        "batch_size": base.batch_size,
        "steps": 1_000_000,  # the time budget ends it
        "max_seconds": round(float(seconds), 1),
        "lr": 1e-3,
        "min_lr": 1e-3,
        "warmup_steps": 0,
        "use_queue": False,
        "trunk_cache": True,
        "augment": {"enabled": False},
        "seed": base.seed,
        "device": base.device,
        "val_limit": base.val_limit,
        "checkpoint_every": 1_000_000,
        "report_every": 50,
    }
    cfg.update(copy.deepcopy(overrides or {}))
    return cfg


def cap_queue(config: dict[str, Any], n_train: int, world_size: int = 1) -> tuple[dict[str, Any], str]:
    """``config`` with the model's queue capped at ``n_train`` (a multiple of the global batch).

    Returns the (possibly new) config and a sentence saying what was done ("" if nothing).
    """
    base = PretrainConfig.from_dict(config)
    k = build_config(base.model, base.model_overrides).queue_size
    global_batch = base.batch_size * max(1, world_size)
    if k <= n_train:
        return config, ""
    capped = max(global_batch, n_train // global_batch * global_batch)
    if capped == k:
        return config, ""
    out = copy.deepcopy(config)
    out.setdefault("model_overrides", {})["queue_size"] = capped
    return out, (f"queue_size {k} is longer than the {n_train} training pairs: capped at {capped} "
                 "(a longer queue would hold older keys of the pairs being contrasted)")
