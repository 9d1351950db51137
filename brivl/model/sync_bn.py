"""BatchNorm over the global batch across workers (SyncBN), for towers with unfrozen BatchNorm.

Why SyncBN and not MoCo's shuffle-BN: shuffle-BN fights a leak that needs a query and its
positive key to share batch statistics within one tower (MoCo contrasts image against image).
BriVL contrasts across modalities: an image query's positive is a text key, from a tower
without BatchNorm, so there is little to leak. What does hurt BriVL is the per-GPU batch:
B7 at 456-600 px fits a handful of images per GPU, and statistics over 8 images are noise.
SyncBN computes them over the global batch, so n workers with B each normalise exactly as
one worker with n x B (tested with two gloo processes).

:class:`GlobalBatchNorm2d` is a ``BatchNorm2d`` (same parameters, buffers and state-dict keys:
checkpoints are interchangeable) whose training-mode statistics are one differentiable
all-reduce of ``[sum, sum of squares, count]`` (2C + 1 numbers). It works with any
``torch.distributed`` backend, gloo on CPU included (``torch.nn.SyncBatchNorm`` runs on GPUs
only); without a process group, and in eval mode, it is a plain ``BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from brivl.model.distributed import is_distributed


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose batch statistics span every worker's batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable

        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), xf.numel() / c, device=x.device, dtype=torch.float32)
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), count])  # (2C+1,)
        stats = all_reduce(stats, op=dist.ReduceOp.SUM)
        n = stats[-1]
        mean = stats[:c] / n  # (C,)
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)  # (C,) biased
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), m)
        y = (xf - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_global_batchnorm(module: nn.Module) -> int:
    """Make every ``BatchNorm2d`` under ``module`` a :class:`GlobalBatchNorm2d`, in place.

    The same parameter and buffer tensors are kept (an optimizer built before stays valid).
    Returns how many were converted.
    """
    converted = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d  # same fields, only forward differs
            converted += 1
    return converted

