"""Pictures of the demo web: labelled shapes drawn with PIL/numpy, and the broken files.

:func:`render` draws ``count`` shapes of one ``object`` kind, ``colour`` and ``texture`` in the
``position`` region of a ``background``; the same labels and seed always give the same pixels
(and :func:`jpeg` the same bytes). :func:`bomb_png` is a tiny PNG whose header promises
20000×20000 pixels.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from brivl.demo.vocab import COLOURS

BACKGROUND_TONES = (
    (236, 236, 230),
    (224, 230, 240),
    (242, 233, 218),
    (228, 240, 228),
    (238, 228, 238),
    (215, 215, 215),
)
REGIONS = {  # (x0, y0, x1, y1) as fractions of the canvas
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
    "centre": (0.17, 0.17, 0.83, 0.83),
}


def render(labels: dict, width: int, height: int, seed: int) -> Image.Image:
    """An RGB picture of ``labels`` at ``width``×``height``, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    canvas = _background(labels["background"], width, height, rng)
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    cells = _cells(labels["position"], int(labels["count"]), width, height)
    radius = 0.0
    for x0, y0, x1, y1 in cells:
        r = 0.5 * min(x1 - x0, y1 - y0) * rng.uniform(0.75, 0.92)
        cx = (x0 + x1) / 2 + rng.uniform(-0.5, 0.5) * (x1 - x0 - 2 * r)
        cy = (y0 + y1) / 2 + rng.uniform(-0.5, 0.5) * (y1 - y0 - 2 * r)
        _shape(draw, labels["object"], cx, cy, max(r, 2.5), rng.uniform(-20, 20))
        radius = max(radius, r)
    texture, dark = _texture(labels["colour"], labels["texture"], width, height, radius, rng)
    # a dark outline keeps each silhouette readable whatever the texture and background
    k = 3 if min(width, height) < 160 else 5
    core = np.asarray(mask.filter(ImageFilter.MinFilter(k))) > 127
    inside = np.asarray(mask) > 127
    out = np.where(inside[..., None], texture, canvas)
    out[inside & ~core] = dark
    return Image.fromarray(out, "RGB")


def jpeg(image: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def near_duplicate(image: Image.Image, variant: int) -> Image.Image:
    """The same picture slightly resized, brightened, or both (then re-encoded by the caller)."""
    if variant % 3 in (0, 2):
        w, h = image.size
        image = image.resize((max(8, round(w * 0.9)), max(8, round(h * 0.9))), Image.BILINEAR)
    if variant % 3 in (1, 2):
        image = ImageEnhance.Brightness(image).enhance(1.12)
    return image


@functools.lru_cache(maxsize=4)
def bomb_png(side: int = 20000) -> bytes:
    """A 1-bit greyscale PNG of ``side``×``side`` black pixels, ~50 kB on the wire.

    The deflate stream is built from one compressed block of whole rows repeated (each block
    ends with a full flush, so blocks are independent), which takes milliseconds instead of
    compressing ``side²/8`` bytes.
    """
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed 1-bit pixels
    rows_per_block = max(1, min(side, (1 << 20) // len(row)))
    blocks, rest = divmod(side, rows_per_block)
    block = row * rows_per_block
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH) if blocks > 1 else b""
    tail = comp.compress(row * rest) + comp.flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(row * rest, adler)
    stream = b"\x78\xda" + first + again * (blocks - 1) + tail + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", stream)
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _background(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(BACKGROUND_TONES[rng.integers(len(BACKGROUND_TONES))], np.float32)
    base = base + rng.uniform(-8, 8, 3)
    canvas = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    if kind == "gradient":
        other = base * rng.uniform(0.55, 0.75) + rng.uniform(-20, 20, 3)
        ys, xs = np.ogrid[0:height, 0:width]
        direction = rng.integers(3)
        t = (
            xs / max(width - 1, 1),
            ys / max(height - 1, 1),
            (xs + ys) / max(width + height - 2, 1),
        )[direction][..., None]
        canvas = canvas * (1 - t) + other * t
    elif kind == "noise":
        canvas = canvas + 24 * rng.standard_normal((height, width, 3), dtype=np.float32)
    elif kind == "grid":
        step = int(rng.integers(9, 18))
        lines = np.zeros((height, width), bool)
        lines[:, int(rng.integers(step)) :: step] = True
        lines[int(rng.integers(step)) :: step, :] = True
        canvas = np.where(lines[..., None], canvas - 55, canvas)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _cells(position: str, count: int, width: int, height: int) -> list[tuple[float, ...]]:
    fx0, fy0, fx1, fy1 = REGIONS[position]
    x0, y0, x1, y1 = fx0 * width, fy0 * height, fx1 * width, fy1 * height
    w, h = x1 - x0, y1 - y0
    if count == 4 and 0.5 < w / h < 2:
        cols, rows = 2, 2
    elif w >= h:
        cols, rows = count, 1
    else:
        cols, rows = 1, count
    cw, ch = w / cols, h / rows
    return [
        (x0 + c * cw, y0 + r * ch, x0 + (c + 1) * cw, y0 + (r + 1) * ch)
        for r in range(rows)
        for c in range(cols)
    ][:count]


def _polygon(points: list[tuple[float, float]], cx: float, cy: float, angle: float) -> list:
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _regular(n: int, r: float, start: float = -90.0) -> list[tuple[float, float]]:
    return [
        (
            r * math.cos(math.radians(start + 360 * i / n)),
            r * math.sin(math.radians(start + 360 * i / n)),
        )
        for i in range(n)
    ]


def _shape(
    draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, angle: float
) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=255)
    elif kind == "ring":
        draw.ellipse(box, fill=255)
        inner = r * 0.58
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif kind == "crescent":
        draw.ellipse(box, fill=255)
        off, inner = r * 0.45, r * 0.85
        draw.ellipse(
            (cx + off - inner, cy - 0.2 * r - inner, cx + off + inner, cy - 0.2 * r + inner), fill=0
        )
    elif kind == "square":
        s = r * 0.8
        draw.polygon(_polygon([(-s, -s), (s, -s), (s, s), (-s, s)], cx, cy, angle), fill=255)
    elif kind == "triangle":
        draw.polygon(_polygon(_regular(3, r), cx, cy + r * 0.15, angle), fill=255)
    elif kind == "star":
        outer, inner = _regular(5, r), _regular(5, r * 0.42, -90 + 36)
        points = [p for pair in zip(outer, inner, strict=True) for p in pair]
        draw.polygon(_polygon(points, cx, cy, angle), fill=255)
    elif kind == "cross":
        t = r * 0.34
        arm = [
            (-t, -r),
            (t, -r),
            (t, -t),
            (r, -t),
            (r, t),
            (t, t),
            (t, r),
            (-t, r),
            (-t, t),
            (-r, t),
            (-r, -t),
            (-t, -t),
        ]
        draw.polygon(_polygon(arm, cx, cy, angle), fill=255)
    elif kind == "heart":
        steps = [2 * math.pi * i / 40 for i in range(40)]
        points = [
            (
                r / 17 * 16 * math.sin(t) ** 3,
                -r
                / 17
                * (13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)),
            )
            for t in steps
        ]
        draw.polygon(_polygon(points, cx, cy, angle * 0.5), fill=255)
    elif kind == "diamond":
        draw.polygon(
            _polygon([(0, -r), (0.62 * r, 0), (0, r), (-0.62 * r, 0)], cx, cy, angle * 0.3),
            fill=255,
        )
    elif kind == "hexagon":
        draw.polygon(_polygon(_regular(6, r, 0), cx, cy, angle), fill=255)
    else:
        raise ValueError(f"unknown object {kind!r}")


def _texture(
    colour: str, texture: str, width: int, height: int, radius: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    main = np.clip(np.array(COLOURS[colour], np.float32) + rng.uniform(-12, 12, 3), 0, 255)
    light = (main * 0.45 + 255 * 0.55).astype(np.uint8)
    dark = (main * 0.4).astype(np.uint8)
    main = main.astype(np.uint8)
    if texture == "solid":
        return np.broadcast_to(main, (height, width, 3)), dark
    period = max(4, int(radius * rng.uniform(0.55, 0.75)))
    ys, xs = np.ogrid[0:height, 0:width]
    if texture == "striped":
        direction = int(rng.integers(3))
        coord = (xs, ys, xs + ys)[direction]
        second = (coord // max(2, period // 2)) % 2 == 1
    elif texture == "dotted":
        dx, dy = xs % period - period / 2, ys % period - period / 2
        second = dx * dx + dy * dy < (period * 0.3) ** 2
    elif texture == "checked":
        q = max(2, period // 2)
        second = (xs // q + ys // q) % 2 == 1
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.where(second[..., None], light, main), dark
