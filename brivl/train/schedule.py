"""Learning-rate and momentum schedules as pure functions of the step (no hidden state).

Because they depend only on ``step``, a checkpoint's step number *is* the scheduler state.
"""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int, floor: float = 0.0) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then cosine down to ``floor``.

    ``step`` counts from 0 (the learning rate used for the first optimiser step).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def momentum_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Momentum-encoder EMA coefficient: cosine increase from ``start`` to ``end``."""
    progress = min(1.0, step / max(1, total_steps - 1))
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * progress))
