"""Real photographs of a person for the synthetic web's ``face`` pictures.

The photo is ``matplotlib/mpl-data/sample_data/grace_hopper.jpg``, shipped in the
matplotlib wheel (installed with MLflow): Rear Admiral Grace Hopper, an official US Navy
photograph, public domain. One frontal face, found by the filter's detector
(:mod:`brivl.filter.faces`). Nothing is downloaded. Variant ``v`` is the photo cropped a
little more with each pair of variants, mirrored for odd ``v``, and scaled to fit
``max_side``: distinct bytes, one face each.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image, ImageOps

MAX_VARIANTS = 8
PHOTO = "grace_hopper.jpg"


@functools.lru_cache(maxsize=1)
def _original() -> Image.Image:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib comes with MLflow
        raise RuntimeError("the demo web's face photos need matplotlib (pip install "
                           "matplotlib; MLflow installs it)") from exc
    path = Path(matplotlib.get_data_path()) / "sample_data" / PHOTO
    with Image.open(path) as image:
        return image.convert("RGB")


def _variant(variant: int, max_side: int) -> Image.Image:
    if not 0 <= variant < MAX_VARIANTS:
        raise ValueError(f"face photo variant {variant}: accepted 0..{MAX_VARIANTS - 1}")
    image = _original()
    step = variant // 2
    width, height = image.size
    image = image.crop((8 * step, 10 * step, width - 6 * step, height))
    if variant % 2:
        image = ImageOps.mirror(image)
    image = image.copy()
    image.thumbnail((max_side, max_side))
    return image


def face_photo_size(variant: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` of variant ``variant`` fitted into ``max_side``."""
    return _variant(variant, max_side).size


def face_photo(variant: int, max_side: int, quality: int = 90) -> bytes:
    """Variant ``variant`` of the photo as JPEG bytes, its longer side at most ``max_side``."""
    out = io.BytesIO()
    _variant(variant, max_side).save(out, "JPEG", quality=quality)
    return out.getvalue()
