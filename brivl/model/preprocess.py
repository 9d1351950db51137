"""Image preprocessing: decode -> RGB -> centre square -> resize -> float [0, 1].

Normalisation (mean/std) happens inside the image tower, so pixels stay in [0, 1] and
interpretation code can optimise them directly.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageLike = bytes | bytearray | memoryview | Image.Image | str | Path


def open_image(item: ImageLike) -> Image.Image:
    """A lazily decoded PIL image from encoded bytes, a PIL image, or a file path."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(item)))
    if isinstance(item, (str, Path)):
        return Image.open(item)
    raise TypeError(f"cannot read an image from {type(item).__name__}; accepted: bytes, PIL.Image, path")


def crop_resize(img: Image.Image, size: int,
                box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """Crop ``box`` (default: the centre square) and resize it to ``size`` x ``size``.

    Returns uint8 (3, size, size). Training (with or without augmentation) and inference
    share this one path, so a model sees the same pixels at both. A JPEG is decoded at the
    smallest libjpeg DCT scale that still covers the crop at ``size`` (``Image.draft``); the
    crop is a view and the resize one antialiased bilinear ``F.interpolate`` on uint8.
    """
    width, height = img.size
    if box is None:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    if getattr(img, "format", None) == "JPEG":
        img.draft("RGB", (math.ceil(width * size / crop_w), math.ceil(height * size / crop_h)))
        fx, fy = img.size[0] / width, img.size[1] / height
        box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
    if img.mode != "RGB":
        img = img.convert("RGB")
    hwc = torch.from_numpy(np.array(img, dtype=np.uint8))  # (H, W, 3), decoded here
    left, top, right, bottom = (int(round(v)) for v in box)
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    crop = hwc[top:bottom, left:right].permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w) view
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0]  # (3, size, size) uint8


def load_image(item: ImageLike, size: int) -> torch.Tensor:
    """One image as a (3, size, size) float tensor in [0, 1] (centre square, resized)."""
    return crop_resize(open_image(item), size).float().div_(255.0)


DECODE_ERRORS = (OSError, ValueError, TypeError, Image.DecompressionBombError)


def load_images(items: Sequence[ImageLike], size: int,
                indices: Sequence[int] | None = None) -> torch.Tensor:
    """A batch (B, 3, size, size) in [0, 1]; an unreadable item raises ``ValueError`` naming its
    index (``indices[i]`` when given: the item's place in the caller's list)."""
    out = torch.empty(len(items), 3, size, size)
    for i, item in enumerate(items):
        try:
            out[i] = load_image(item, size)
        except DECODE_ERRORS as exc:
            where = indices[i] if indices is not None else i
            raise ValueError(f"image {where}: cannot decode ({exc}); accepted: JPEG/PNG/WebP "
                             "bytes, PIL.Image, path") from exc
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
        except DECODE_ERRORS as exc:
            reasons.append(f"{type(exc).__name__}: {exc}")
    return out, reasons
