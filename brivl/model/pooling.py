"""Multi-scale grid patch pooling: the whole image plus uniform grids of patches.

The released BriVL code pools 37 boxes (the whole image and a 6x6 grid) from the CNN
feature map with a Python loop over the batch. Pooling a uniform grid is exactly
``adaptive_avg_pool2d`` at that grid size, so here every scale is one batched call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def num_patches(scales: Sequence[int]) -> int:
    """Patches produced by ``scales``: sum of s*s (``(1, 6)`` -> 37)."""
    return sum(s * s for s in scales)


def grid_patch_pool(fmap: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """Average-pool ``fmap`` (B, C, H, W) over each scale's s x s grid -> (B, P, C).

    Patches are ordered scale by scale, row-major inside a scale.
    """
    parts = [F.adaptive_avg_pool2d(fmap, s).flatten(2) for s in scales]  # each (B, C, s*s)
    return torch.cat(parts, dim=2).transpose(1, 2)  # (B, P, C)


def grid_boxes(height: int, width: int, scales: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """The (y0, y1, x0, x1) cell of every patch, same bins as ``adaptive_avg_pool2d``."""
    boxes = []
    for s in scales:
        for i in range(s):
            y0, y1 = (i * height) // s, -((-(i + 1) * height) // s)
            for j in range(s):
                x0, x1 = (j * width) // s, -((-(j + 1) * width) // s)
                boxes.append((y0, y1, x0, x1))
    return boxes


def grid_patch_pool_loop(fmap: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """Reference implementation: a Python loop over samples and boxes -> (B, P, C)."""
    boxes = grid_boxes(fmap.shape[2], fmap.shape[3], scales)
    out = []
    for b in range(fmap.shape[0]):
        out.append(torch.stack([fmap[b, :, y0:y1, x0:x1].mean(dim=(1, 2)) for y0, y1, x0, x1 in boxes]))
    return torch.stack(out)
