"""Decode + augment image bytes into fixed-size pixel batches (PIL + numpy, no torchvision).

:func:`decode_augment_batch` takes and returns a dict of columns, so it works as a Ray Data
``map_batches`` function as well as in a plain Python iterator. Augmentations follow
BriVL's released training code (MoCo-v2 style): random resized crop, colour jitter with
probability ``jitter_p``, random greyscale, horizontal flip. With a ``seed``, every sample's
augmentation is a pure function of ``(seed, epoch, key)``, so a run is reproducible no matter
which process decodes which sample.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from brivl.train.config import TrainAugmentConfig

_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma
_RGB2YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32
)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ).astype(np.float32)


def decode_augment_batch(
    batch: dict[str, Any],
    *,
    image_size: int,
    augment: TrainAugmentConfig | dict | None = None,
    seed: int | None = None,
    epoch: int = 0,
) -> dict[str, np.ndarray]:
    """Columns ``image`` (encoded bytes), ``caption``, optional ``key`` -> training columns.

    Returns ``pixels`` (uint8 [B, 3, S, S]), ``caption`` and ``key`` (object arrays) and
    ``valid`` (bool [B]; False where the image could not be decoded — its pixels are zero
    and ``error`` says why). A bad image never raises.
    """
    if isinstance(augment, dict):
        augment = TrainAugmentConfig(**augment)
    images = list(batch["image"])
    n = len(images)
    keys = [str(k) for k in batch["key"]] if "key" in batch else [str(i) for i in range(n)]
    rngs = [_sample_rng(seed, epoch, k) for k in keys]
    pixels = np.zeros((n, image_size, image_size, 3), dtype=np.uint8)  # [B, S, S, 3]
    valid = np.ones(n, dtype=bool)
    errors = [""] * n
    use_aug = augment is not None and augment.enabled
    for i, data in enumerate(images):
        try:
            pixels[i] = _load(data, image_size, augment if use_aug else None, rngs[i])
        except Exception as exc:  # per-sample failure becomes a row flag, not an exception
            valid[i] = False
            errors[i] = f"{type(exc).__name__}: {exc}"[:200]
    out = pixels.transpose(0, 3, 1, 2)  # [B, 3, S, S]
    if use_aug and n:
        out = _colour(out, augment, rngs)
    return {
        "pixels": np.ascontiguousarray(out),
        "caption": np.array([str(c) for c in batch["caption"]], dtype=object),
        "key": np.array(keys, dtype=object),
        "valid": valid,
        "error": np.array(errors, dtype=object),
    }


def random_resized_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A crop box (left, top, right, bottom) covering ``scale`` of the area at ``ratio``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    # fallback: the largest centre crop within the ratio range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _sample_rng(seed: int | None, epoch: int, key: str) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


def _load(data: Any, size: int, aug: TrainAugmentConfig | None, rng: np.random.Generator) -> np.ndarray:
    img = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(bytes(data)))
    width, height = img.size
    if aug is not None:
        box = random_resized_crop_box(width, height, aug.crop_scale, aug.crop_ratio, rng)
    else:  # centre square, as brivl.model.preprocess does for evaluation
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    # JPEG draft mode: decode at a reduced scale that still covers the crop at `size`
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    if getattr(img, "format", None) == "JPEG":
        want = (math.ceil(width * size / crop_w), math.ceil(height * size / crop_h))
        img.draft("RGB", want)
        fx, fy = img.size[0] / width, img.size[1] / height
        box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
    img = img.convert("RGB")
    img = img.resize((size, size), Image.BILINEAR, box=box)
    arr = np.asarray(img, dtype=np.uint8)
    if aug is not None and rng.random() < aug.hflip_p:
        arr = arr[:, ::-1]
    return arr


def _colour(pixels: np.ndarray, aug: TrainAugmentConfig, rngs: list[np.random.Generator]) -> np.ndarray:
    """Colour jitter and random greyscale, vectorised over the batch (uint8 in, uint8 out)."""
    n = len(rngs)
    draws = np.array([r.random(6) for r in rngs], dtype=np.float32)  # [B, 6]
    jitter = draws[:, 0] < aug.jitter_p
    grey = draws[:, 5] < aug.grayscale_p
    if not jitter.any() and not grey.any():
        return pixels
    x = pixels.astype(np.float32) / 255.0  # [B, 3, S, S]

    def factor(u: np.ndarray, strength: float) -> np.ndarray:
        f = 1.0 + strength * (2.0 * u - 1.0)
        return np.where(jitter, f, 1.0).reshape(n, 1, 1, 1).astype(np.float32)

    x = np.clip(x * factor(draws[:, 1], aug.brightness), 0.0, 1.0)
    luma = np.einsum("c,bchw->bhw", _GREY, x)[:, None]  # [B, 1, S, S]
    mean = luma.mean(axis=(2, 3), keepdims=True)  # [B, 1, 1, 1]
    x = np.clip((x - mean) * factor(draws[:, 2], aug.contrast) + mean, 0.0, 1.0)
    luma = np.einsum("c,bchw->bhw", _GREY, x)[:, None]
    x = np.clip((x - luma) * factor(draws[:, 3], aug.saturation) + luma, 0.0, 1.0)
    if aug.hue > 0:
        theta = np.where(jitter, aug.hue * (2.0 * draws[:, 4] - 1.0), 0.0) * 2.0 * np.pi  # [B]
        x = _rotate_hue(x, theta.astype(np.float32))
    if grey.any():
        luma = np.einsum("c,bchw->bhw", _GREY, x)[:, None]
        x = np.where(grey.reshape(n, 1, 1, 1), np.repeat(luma, 3, axis=1), x)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _rotate_hue(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate chroma in YIQ space by ``theta`` radians per image (x: float [B, 3, S, S])."""
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.zeros((len(theta), 3, 3), dtype=np.float32)  # [B, 3, 3]
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    mats = _YIQ2RGB[None] @ rot @ _RGB2YIQ[None]  # [B, 3, 3]
    return np.clip(np.einsum("bij,bjhw->bihw", mats, x), 0.0, 1.0)
