from __future__ import annotations

import io

import numpy as np
from PIL import Image

from brivl.model.preprocess import load_images
from brivl.train import TrainAugmentConfig, decode_augment_batch, random_resized_crop_box


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> bytes:
    img = Image.new("RGB", size, colour)
    img.paste((255, 255, 255), (10, 10, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _batch(n: int = 4) -> dict:
    return {"image": [_jpeg((40 * i, 100, 200 - 30 * i)) for i in range(n)],
            "caption": [f"caption {i}" for i in range(n)], "key": [f"k{i}" for i in range(n)]}


def test_seeded_augmentation_is_a_function_of_seed_epoch_and_key() -> None:
    aug = TrainAugmentConfig()
    a = decode_augment_batch(_batch(), image_size=32, augment=aug, seed=7, epoch=0)
    b = decode_augment_batch(_batch(), image_size=32, augment=aug, seed=7, epoch=0)
    c = decode_augment_batch(_batch(), image_size=32, augment=aug, seed=7, epoch=1)
    assert a["pixels"].shape == (4, 3, 32, 32) and a["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(a["pixels"], b["pixels"])
    assert not np.array_equal(a["pixels"], c["pixels"])
    # the same key gives the same pixels whatever batch it is decoded in
    single = {k: v[2:3] for k, v in _batch().items()}
    d = decode_augment_batch(single, image_size=32, augment=aug, seed=7, epoch=0)
    np.testing.assert_array_equal(d["pixels"][0], a["pixels"][2])
    assert list(a["caption"]) == [f"caption {i}" for i in range(4)]


def test_without_augmentation_pixels_are_the_evaluation_preprocessing() -> None:
    img = Image.new("RGB", (120, 40), (230, 20, 20))  # red | green | blue thirds
    img.paste((20, 200, 20), (40, 0, 80, 40))
    img.paste((20, 20, 230), (80, 0, 120, 40))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    out = decode_augment_batch({"image": [buf.getvalue()], "caption": ["x"]}, image_size=16,
                               augment=None)["pixels"][0].astype(float)
    expected = load_images([buf.getvalue()], 16)[0].numpy() * 255  # resize + centre crop
    assert np.abs(out - expected).mean() < 6
    assert out[1].mean() > 150 and out[0].mean() < 60  # the green centre, not squashed thirds


def test_greyscale_and_jitter_change_colour_but_not_shape() -> None:
    grey = TrainAugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(4 / 3, 4 / 3), jitter_p=0.0,
                         grayscale_p=1.0, hflip_p=0.0)
    out = decode_augment_batch(_batch(), image_size=24, augment=grey, seed=1)["pixels"]
    assert np.abs(out[:, 0].astype(int) - out[:, 1]).max() <= 1
    jitter = TrainAugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(4 / 3, 4 / 3), jitter_p=1.0,
                           grayscale_p=0.0, hflip_p=0.0, hue=0.5)
    plain = decode_augment_batch(_batch(), image_size=24, augment=None)["pixels"]
    moved = decode_augment_batch(_batch(), image_size=24, augment=jitter, seed=1)["pixels"]
    assert np.abs(moved.astype(int) - plain).mean() > 5


def test_a_bad_image_becomes_a_flagged_row_not_an_exception() -> None:
    batch = _batch(3)
    batch["image"][1] = b"not a jpeg"
    out = decode_augment_batch(batch, image_size=16, augment=TrainAugmentConfig(), seed=0)
    assert out["valid"].tolist() == [True, False, True]
    assert "UnidentifiedImageError" in out["error"][1] and out["pixels"][1].max() == 0


def test_random_resized_crop_box_stays_inside_and_respects_the_scale() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(100, 50, (0.3, 0.6), (0.75, 1.33), rng)
        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 50
    # an impossible request falls back to a centred crop within the ratio range
    assert random_resized_crop_box(100, 10, (1.0, 1.0), (1.0, 1.0), rng) == (45, 0, 55, 10)


def _reference_colour(pixels: np.ndarray, aug: TrainAugmentConfig,
                      rngs: list[np.random.Generator]) -> np.ndarray:
    """The batch-vectorised colour jitter the per-image fast path replaced (same maths)."""
    grey_w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    rgb2yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                       dtype=np.float32)
    n = len(rngs)
    draws = np.array([r.random(6) for r in rngs], dtype=np.float32)
    jitter, grey = draws[:, 0] < aug.jitter_p, draws[:, 5] < aug.grayscale_p
    x = pixels.astype(np.float32) / 255.0

    def factor(u: np.ndarray, strength: float) -> np.ndarray:
        return np.where(jitter, 1.0 + strength * (2.0 * u - 1.0), 1.0).reshape(n, 1, 1, 1).astype(np.float32)

    def luma(x: np.ndarray) -> np.ndarray:
        return np.einsum("c,bchw->bhw", grey_w, x)[:, None]

    x = np.clip(x * factor(draws[:, 1], aug.brightness), 0.0, 1.0)
    mean = luma(x).mean(axis=(2, 3), keepdims=True)
    x = np.clip((x - mean) * factor(draws[:, 2], aug.contrast) + mean, 0.0, 1.0)
    x = np.clip((x - luma(x)) * factor(draws[:, 3], aug.saturation) + luma(x), 0.0, 1.0)
    theta = (np.where(jitter, aug.hue * (2.0 * draws[:, 4] - 1.0), 0.0) * 2.0 * np.pi).astype(np.float32)
    rot = np.zeros((n, 3, 3), dtype=np.float32)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = (np.cos(theta), -np.sin(theta),
                                                              np.sin(theta), np.cos(theta))
    mats = np.linalg.inv(rgb2yiq).astype(np.float32)[None] @ rot @ rgb2yiq[None]
    x = np.clip(np.einsum("bij,bjhw->bihw", mats, x), 0.0, 1.0)
    x = np.where(grey.reshape(n, 1, 1, 1), np.repeat(luma(x), 3, axis=1), x)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def test_per_image_colour_jitter_equals_the_batch_reference() -> None:
    from brivl.train.augment import colour_jitter

    aug = TrainAugmentConfig()
    pixels = np.random.default_rng(0).integers(0, 256, (32, 3, 20, 20), dtype=np.uint8)
    expected = _reference_colour(pixels, aug, [np.random.default_rng(i) for i in range(32)])
    got = np.stack([colour_jitter(p, aug, np.random.default_rng(i).random(6).astype(np.float32))
                    for i, p in enumerate(pixels)])
    assert np.abs(got.astype(int) - expected).max() <= 1  # float rounding only
    assert (got != pixels).any(axis=(1, 2, 3)).sum() > 20  # most images were changed


def test_the_draft_decode_keeps_the_crop_geometry_and_size() -> None:
    """Image.draft (reduced DCT scale) gives the crop a full decode gives, at the same size."""
    y, x = np.mgrid[0:600, 0:800]
    img = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)  # position-coded
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    batch = {"image": [buf.getvalue()] * 4, "caption": ["x"] * 4, "key": list("abcd")}
    aug = TrainAugmentConfig(crop_scale=(0.9, 1.0), jitter_p=0.0, grayscale_p=0.0, hflip_p=0.0)
    fast = decode_augment_batch(batch, image_size=64, augment=aug, seed=3)["pixels"]
    draft = Image.Image.draft
    Image.Image.draft = lambda self, mode, size: None  # full decode
    try:
        full = decode_augment_batch(batch, image_size=64, augment=aug, seed=3)["pixels"]
    finally:
        Image.Image.draft = draft
    with Image.open(io.BytesIO(buf.getvalue())) as probe:
        probe.draft("RGB", (64 * 800 // 720 + 1, 64 * 600 // 540 + 1))
        assert probe.size[0] <= 400  # the DCT scaling did reduce the decode
    assert fast.shape == full.shape == (4, 3, 64, 64)
    assert np.abs(fast.astype(int) - full).mean() < 4  # same crop: position-coded pixels agree


def test_jitter_on_the_device_equals_the_data_path_jitter() -> None:
    import dataclasses

    import torch

    from brivl.train.augment import colour_jitter_batch

    aug = TrainAugmentConfig(hue=0.3)
    batch = {"image": [_jpeg((30 * i, 120, 220 - 25 * i), (90, 70)) for i in range(8)],
             "caption": ["x"] * 8, "key": [f"k{i}" for i in range(8)]}
    cpu = decode_augment_batch(batch, image_size=24, augment=aug, seed=5)
    deferred = decode_augment_batch(batch, image_size=24, seed=5,
                                    augment=dataclasses.replace(aug, jitter_on_device=True))
    assert "colour" not in cpu and deferred["colour"].shape == (8, 6)
    assert not np.array_equal(deferred["pixels"], cpu["pixels"])  # not jittered yet
    done = colour_jitter_batch(torch.from_numpy(deferred["pixels"]).float() / 255, aug,
                               torch.from_numpy(deferred["colour"]))
    assert (done * 255 - torch.from_numpy(cpu["pixels"]).float()).abs().max() <= 1.0 + 1e-3
