"""Decode + augment image bytes into fixed-size pixel batches (PIL + numpy, no torchvision).

:func:`decode_augment_batch` takes and returns a dict of columns, so it works as a Ray Data
``map_batches`` function as well as in a plain Python iterator. Augmentations follow
BriVL's released training code (MoCo-v2 style): random resized crop, colour jitter with
probability ``jitter_p``, random greyscale, horizontal flip. With a ``seed``, every sample's
augmentation is a pure function of ``(seed, epoch, key)``, so a run is reproducible no matter
which process decodes which sample.

Speed (``bench/data_path.py``): decode, crop and resize are
:func:`brivl.model.preprocess.crop_resize` (JPEG draft decoding, one antialiased bilinear
resize on uint8: torch's kernel, ~2x Pillow's; inference uses the same function, so without
augmentation training sees inference's pixels), and the colour jitter runs per image on a
cache-sized planar float copy (torch's in-place CPU kernels), not in passes over the whole
batch.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from brivl.model.preprocess import crop_resize, open_image
from brivl.train.config import TrainAugmentConfig

_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma
_RGB2YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32
)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ).astype(np.float32)
_GREY_T = torch.from_numpy(_GREY)


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
    and ``error`` says why). A bad image never raises. With ``augment.jitter_on_device`` the
    pixels are not colour-jittered; ``colour`` (float32 [B, 6]) holds each sample's draws
    for :func:`colour_jitter_batch` on the training device.
    """
    if isinstance(augment, dict):
        augment = TrainAugmentConfig(**augment)
    images = list(batch["image"])
    n = len(images)
    keys = [str(k) for k in batch["key"]] if "key" in batch else [str(i) for i in range(n)]
    rngs = [_sample_rng(seed, epoch, k) for k in keys]
    pixels = np.zeros((n, 3, image_size, image_size), dtype=np.uint8)  # [B, 3, S, S]
    valid = np.ones(n, dtype=bool)
    errors = [""] * n
    use_aug = augment is not None and augment.enabled
    on_device = use_aug and augment.jitter_on_device
    colour = np.ones((n, 6), dtype=np.float32)  # a row of ones: no jitter, no greyscale
    for i, data in enumerate(images):
        try:
            chw = _load(data, image_size, augment if use_aug else None, rngs[i])  # [3, S, S]
        except Exception as exc:  # per-sample failure becomes a row flag, not an exception
            valid[i] = False
            errors[i] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        if use_aug:
            colour[i] = rngs[i].random(6)
            if not on_device:
                chw = colour_jitter(chw, augment, colour[i])
        pixels[i] = chw
    out = {
        "pixels": pixels,
        "caption": np.array([str(c) for c in batch["caption"]], dtype=object),
        "key": np.array(keys, dtype=object),
        "valid": valid,
        "error": np.array(errors, dtype=object),
    }
    if on_device:
        out["colour"] = colour
    return out


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
    """Decode, crop, resize (and flip) one image -> uint8 [3, S, S]."""
    img = open_image(data)
    box = (random_resized_crop_box(*img.size, aug.crop_scale, aug.crop_ratio, rng)
           if aug is not None else None)  # None: the centre square, as at inference
    out = crop_resize(img, size, box)  # [3, S, S]
    if aug is not None and rng.random() < aug.hflip_p:
        out = out.flip(-1)
    return out.numpy()


def colour_jitter(chw: np.ndarray, aug: TrainAugmentConfig, draws: np.ndarray) -> np.ndarray:
    """Colour jitter and random greyscale of one image (uint8 [3, S, S] in and out).

    ``draws``: 6 uniforms: jitter?, brightness, contrast, saturation, hue, greyscale?. In
    order, each result clipped to [0, 1]: brightness ``x * f``, contrast around the mean luma,
    saturation around each pixel's luma, hue rotated in YIQ space, then greyscale. On a
    planar float32 copy (cache-sized) with torch's in-place CPU kernels (its clamp is ~8x
    numpy's), luma and the hue matrix as small matrix products.
    """
    jitter, grey = draws[0] < aug.jitter_p, draws[5] < aug.grayscale_p
    if not (jitter or grey):
        return chw
    buf = np.ascontiguousarray(chw.reshape(3, -1), dtype=np.float32)  # [3, S*S] private copy
    x = torch.from_numpy(buf)  # the same memory
    x.mul_(1 / 255)
    if jitter:
        def factor(u: float, strength: float) -> float:
            return float(np.float32(1.0 + strength * (2.0 * u - 1.0)))

        x.mul_(factor(draws[1], aug.brightness)).clamp_(0.0, 1.0)
        mean = (_GREY_T @ x).mean()  # the image's mean luma
        x.sub_(mean).mul_(factor(draws[2], aug.contrast)).add_(mean).clamp_(0.0, 1.0)
        luma = _GREY_T @ x  # [S*S]
        x.sub_(luma).mul_(factor(draws[3], aug.saturation)).add_(luma).clamp_(0.0, 1.0)
        if aug.hue > 0:
            theta = np.float32(aug.hue * (2.0 * draws[4] - 1.0) * 2.0 * np.pi)
            x.copy_(torch.from_numpy(_hue_matrix(theta)) @ x).clamp_(0.0, 1.0)
    if grey:
        x.copy_((_GREY_T @ x).expand(3, -1))
    buf *= np.float32(255.0)
    np.rint(buf, out=buf)
    return buf.astype(np.uint8).reshape(chw.shape)


def colour_jitter_batch(x: torch.Tensor, aug: TrainAugmentConfig, draws: torch.Tensor) -> torch.Tensor:
    """:func:`colour_jitter` of a batch on its device: x float [B, 3, S, S] in [0, 1],
    ``draws`` [B, 6] (``decode_augment_batch``'s ``colour``) -> float [B, 3, S, S]."""
    n = x.shape[0]
    d = draws.to(device=x.device, dtype=torch.float32)
    jitter, grey = d[:, 0] < aug.jitter_p, d[:, 5] < aug.grayscale_p
    if not bool((jitter | grey).any()):
        return x
    weights = _GREY_T.to(x.device)

    def factor(u: torch.Tensor, strength: float) -> torch.Tensor:
        return torch.where(jitter, 1.0 + strength * (2.0 * u - 1.0), 1.0).view(n, 1, 1, 1)

    def luma(x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("c,bchw->bhw", weights, x).unsqueeze(1)  # [B, 1, S, S]

    x = (x.float() * factor(d[:, 1], aug.brightness)).clamp(0.0, 1.0)
    mean = luma(x).mean(dim=(2, 3), keepdim=True)  # [B, 1, 1, 1]
    x = ((x - mean) * factor(d[:, 2], aug.contrast) + mean).clamp(0.0, 1.0)
    y = luma(x)
    x = ((x - y) * factor(d[:, 3], aug.saturation) + y).clamp(0.0, 1.0)
    if aug.hue > 0:
        theta = torch.where(jitter, aug.hue * (2.0 * d[:, 4] - 1.0), 0.0) * (2.0 * math.pi)
        cos, sin = theta.cos(), theta.sin()
        rot = torch.zeros(n, 3, 3, device=x.device)
        rot[:, 0, 0] = 1.0
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        mats = torch.from_numpy(_YIQ2RGB).to(x.device) @ rot @ torch.from_numpy(_RGB2YIQ).to(x.device)
        x = torch.einsum("bij,bjhw->bihw", mats, x).clamp(0.0, 1.0)
    return torch.where(grey.view(n, 1, 1, 1), luma(x).expand(-1, 3, -1, -1), x)


def _hue_matrix(theta: np.float32) -> np.ndarray:
    """The RGB -> RGB matrix rotating chroma by ``theta`` radians in YIQ space (3, 3)."""
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=np.float32)
    return _YIQ2RGB @ rot @ _RGB2YIQ
