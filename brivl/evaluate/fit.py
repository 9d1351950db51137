"""Full-batch training of the small evaluation heads (probe, VQA head).

A plain Adam written out here on purpose: ``torch.optim`` optimizers import
``torch._dynamo`` on construction, which costs seconds per process (measured 2-11 s on a
2-core box), far more than fitting a head of a few thousand parameters. Training runs on
one thread: for matrices this small, more threads only contend with other work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``, restoring the old count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def adam_fit(
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    steps: int,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> float:
    """Minimise ``loss_fn()`` over ``params`` with Adam (decoupled weight decay); final loss."""
    b1, b2 = betas
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    loss = torch.tensor(float("nan"))
    with torch.enable_grad(), one_thread():
        for step in range(1, steps + 1):
            for p in params:
                p.grad = None
            loss = loss_fn()
            loss.backward()
            with torch.no_grad():
                for p, m_i, v_i in zip(params, m, v, strict=True):
                    g = p.grad
                    m_i.mul_(b1).add_(g, alpha=1 - b1)
                    v_i.mul_(b2).addcmul_(g, g, value=1 - b2)
                    denom = (v_i / (1 - b2**step)).sqrt_().add_(eps)
                    if weight_decay:
                        p.mul_(1 - lr * weight_decay)
                    p.addcdiv_(m_i, denom, value=-lr / (1 - b1**step))
    return float(loss.detach())
