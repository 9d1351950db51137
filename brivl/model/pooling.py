"""Multi-scale grid patch pooling: the whole image plus uniform grids of patches.

The released BriVL code pools 37 boxes (the whole image and a 6x6 grid) from the CNN
feature map with a Python loop over the batch. Pooling a uniform grid is exactly
``adaptive_avg_pool2d`` at that grid size. All scales at once are one linear map of the
flattened feature map, ``(B, C, H*W) @ (H*W, P)``, with the same bins as
``adaptive_avg_pool2d``: a single batched matrix product, which on CPU is ~10-30x faster
than ``adaptive_avg_pool2d`` on channels-first maps (and its backward is a matrix product too).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F


def num_patches(scales: Sequence[int]) -> int:
    """Patches produced by ``scales``: sum of s*s (``(1, 6)`` -> 37)."""
    return sum(s * s for s in scales)


@lru_cache(maxsize=64)
def pooling_matrix(height: int, width: int, scales: tuple[int, ...], device: str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(P, H*W): row p averages the cells of patch p (adaptive_avg_pool2d's bins).

    Built outside inference mode: the cached matrix is shared by inference calls and by
    training steps, and autograd cannot save an inference tensor for backward.
    """
    boxes = grid_boxes(height, width, scales)
    with torch.inference_mode(False), torch.no_grad():
        m = torch.zeros(len(boxes), height, width, dtype=torch.float64, device="cpu")
        for p, (y0, y1, x0, x1) in enumerate(boxes):
            m[p, y0:y1, x0:x1] = 1.0 / ((y1 - y0) * (x1 - x0))
        return m.flatten(1).to(device=device, dtype=dtype)


def grid_patch_pool(fmap: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """Average-pool ``fmap`` (B, C, H, W) over each scale's s x s grid -> (B, P, C).

    Patches are ordered scale by scale, row-major inside a scale.
    """
    if torch.compiler.is_compiling():  # traced, the cached matrix would be rebuilt every call
        return grid_patch_pool_adaptive(fmap, scales)
    b, c, h, w = fmap.shape
    weights = pooling_matrix(h, w, tuple(scales), str(fmap.device), fmap.dtype)  # (P, H*W)
    return (fmap.reshape(b, c, h * w) @ weights.t()).transpose(1, 2)  # (B, P, C)


def grid_patch_pool_adaptive(fmap: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """The same pooling as one ``adaptive_avg_pool2d`` per scale -> (B, P, C)."""
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
