"""The main colours of a picture on white, by name, as stock-art sites list them among the tags.

A picture is shrunk to a small thumbnail and composited on white. Every pixel that is not
background (near-white, or a light grey such as anti-aliased edges) is given one of
:data:`COLOUR_NAMES` from its hue, saturation and value. The names covering at least ``min_share`` of the drawn pixels are returned, the
largest share first.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
from PIL import Image

COLOUR_NAMES = (
    "black", "grey", "red", "orange", "brown", "yellow", "green", "blue", "purple", "pink",
)  # fmt: skip
# Upper hue bound (degrees) of each chromatic name, in order around the wheel.
_HUES = ((15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (255, "blue"),
         (290, "purple"), (340, "pink"), (360, "red"))  # fmt: skip
BACKGROUND_MIN = 235  # a pixel with every channel at or above this is background
THUMB_SIDE = 96
LIGHT_GREY = 0.75  # an unsaturated pixel lighter than this is background
GREY_SATURATION = 0.2  # below this saturation a pixel is black, grey or background
BLACK_VALUE = 0.3  # below this value a pixel is black


def colour_names(image: Image.Image, min_share: float = 0.2, limit: int = 2) -> tuple[str, ...]:
    """Names of the colours covering ``>= min_share`` of the drawn pixels, largest first."""
    thumb = image.copy() if image.mode in ("RGB", "RGBA") else image.convert("RGBA")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), reducing_gap=1.0)
    rgba = thumb.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.float32) / 255
    pixels = rgb.reshape(-1, 3)
    hsv = _hsv(pixels[(pixels < BACKGROUND_MIN / 255).any(axis=1)])
    drawn = hsv[(hsv[:, 1] >= GREY_SATURATION) | (hsv[:, 2] < LIGHT_GREY)]
    if len(drawn) == 0:
        return ()
    counts = Counter(dict(zip(*np.unique(_names(drawn), return_counts=True), strict=True)))
    total = sum(counts.values())
    ranked = [str(n) for n, c in counts.most_common() if c / total >= min_share]
    return tuple(ranked[:limit])


def jpeg_colour_names(body: bytes, **kwargs: float) -> tuple[str, ...]:
    """:func:`colour_names` of JPEG bytes, decoded at reduced size (libjpeg DCT scaling)."""
    with Image.open(io.BytesIO(body)) as image:
        image.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
        return colour_names(image.convert("RGB"), **kwargs)


def _hsv(rgb: np.ndarray) -> np.ndarray:
    """``[N,3]`` RGB in [0,1] -> ``[N,3]`` (hue degrees, saturation, value)."""
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    delta = high - low
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = np.where(delta == 0, 1, delta)
    hue = (
        np.select(
            [high == r, high == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4
        )
        * 60
    )
    saturation = np.where(high == 0, 0, delta / np.where(high == 0, 1, high))
    return np.stack([np.where(delta == 0, 0, hue), saturation, high], axis=1)


def _names(hsv: np.ndarray) -> np.ndarray:
    """One colour name per ``(hue, saturation, value)`` row."""
    hue, saturation, value = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    bounds = np.array([b for b, _ in _HUES])
    chromatic = np.array([n for _, n in _HUES])[
        np.searchsorted(bounds, hue, side="right").clip(max=len(bounds) - 1)
    ]
    return np.select(
        [value < BLACK_VALUE, saturation < GREY_SATURATION,
         (15 <= hue) & (hue < 45) & (value < 0.6)],
        ["black", "grey", "brown"],
        chromatic,
    )
