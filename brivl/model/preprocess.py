"""Image preprocessing: decode -> RGB -> resize shorter side -> centre crop -> float [0, 1].

Normalisation (mean/std) happens inside the image tower, so pixels stay in [0, 1] and
interpretation code can optimise them directly.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ImageLike = bytes | bytearray | memoryview | Image.Image | str | Path


def decode_image(item: ImageLike) -> Image.Image:
    """A PIL RGB image from encoded bytes, a PIL image, or a file path."""
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(item)))
    elif isinstance(item, (str, Path)):
        img = Image.open(item)
    else:
        raise TypeError(f"cannot read an image from {type(item).__name__}; accepted: bytes, PIL.Image, path")
    img.load()
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bicubic), then crop the centre square."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_image(item: ImageLike, size: int) -> torch.Tensor:
    """One image as a (3, size, size) float tensor in [0, 1]."""
    return to_tensor(resize_center_crop(decode_image(item), size))


def load_images(items: Sequence[ImageLike], size: int) -> torch.Tensor:
    """A batch (B, 3, size, size) in [0, 1]; an unreadable item raises ``ValueError`` naming its index."""
    out = torch.empty(len(items), 3, size, size)
    for i, item in enumerate(items):
        try:
            out[i] = load_image(item, size)
        except (OSError, ValueError, TypeError, Image.DecompressionBombError) as exc:
            raise ValueError(f"image {i}: cannot decode ({exc}); accepted: JPEG/PNG/WebP bytes, PIL.Image, path") from exc
    return out


def try_load_images(items: Sequence[ImageLike], size: int) -> tuple[torch.Tensor, list[str | None]]:
    """Like :func:`load_images` but per-sample failures become reasons, not exceptions.

    Returns the batch (failed rows are zeros) and, per item, ``None`` or the reason it failed.
    """
    out = torch.zeros(len(items), 3, size, size)
    reasons: list[str | None] = []
    for i, item in enumerate(items):
        try:
            out[i] = load_image(item, size)
            reasons.append(None)
        except (OSError, ValueError, TypeError, Image.DecompressionBombError) as exc:
            reasons.append(f"{type(exc).__name__}: {exc}")
    return out, reasons
