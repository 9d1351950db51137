"""Activation (gradient) checkpointing of the towers' trainable blocks.

A block run through :func:`run_block` keeps only its input for backward and recomputes its
activations there (``torch.utils.checkpoint``, non-reentrant, RNG state preserved so dropout
draws the same mask). Memory then grows with the number of blocks, not their activations, at
the cost of one more forward of the trainable part. Only where a gradient is being recorded:
the momentum towers and frozen prefixes (no grad) run as usual.

BatchNorm in training mode would update its running statistics twice (forward and
recompute); the recompute runs with those updates switched off, so the buffers end as
without checkpointing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Checkpointable:
    """Mixin flag: ``grad_checkpointing`` turns :func:`run_block` checkpointing on."""

    grad_checkpointing = False


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Turn checkpointing on/off in every :class:`Checkpointable` module; how many there are."""
    found = 0
    for module in model.modules():
        if isinstance(module, Checkpointable):
            module.grad_checkpointing = enabled
            found += 1
    return found


def run_block(owner: Checkpointable, block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``block(*args, **kwargs)``, checkpointed when ``owner`` asks for it and grad is on."""
    if not (owner.grad_checkpointing and torch.is_grad_enabled()):
        return block(*args, **kwargs)
    calls = [0]

    def run(*inputs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            return block(*inputs, **kwargs)
        with _no_running_stats(block):  # the recompute in backward
            return block(*inputs, **kwargs)

    return checkpoint(run, *args, use_reentrant=False)


@contextlib.contextmanager
def _no_running_stats(block: nn.Module) -> Iterator[None]:
    """BatchNorms of ``block`` leave their running statistics alone (momentum 0, counter kept)."""
    saved = []
    for m in block.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
