"""A picture of sample retrievals: one row per text query, its top-k images left to right."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from brivl.evaluate.runner import Encoder

_TEXT_W = 220  # width of the query column, pixels
_HIT = (40, 170, 60)
_MISS = (200, 200, 200)


def _as_image(value: Image.Image | bytes) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    with Image.open(io.BytesIO(value)) as img:
        return img.convert("RGB")


def retrieval_grid(
    encoder: Encoder,
    images: Sequence[Image.Image | bytes],
    captions: Sequence[str | Sequence[str]] | None = None,
    queries: Sequence[str] | None = None,
    k: int = 4,
    thumb: int = 96,
    batch_size: int = 64,
    shown: list[dict] | None = None,
) -> Image.Image:
    """Query the images by text and draw the top-k per query.

    ``captions[i]`` (one string or several) describes ``images[i]``; a retrieved image whose
    captions include the query gets a green frame. ``queries`` defaults to the first caption
    of the first four images. ``shown``, when given, receives one ``{"row", "rank", "query",
    "image"}`` per cell drawn (``image``: the index into ``images``), for a sources table.
    """
    if not images:
        raise ValueError("retrieval_grid needs at least one image")
    caps = [[c] if isinstance(c, str) else list(c) for c in (captions or [[] for _ in images])]
    if len(caps) != len(images):
        raise ValueError(f"{len(caps)} caption entries for {len(images)} images")
    if queries is None:
        queries = [c[0] for c in caps[:4] if c]
    if not queries:
        raise ValueError("retrieval_grid needs queries (or captions to take them from)")
    k = min(k, len(images))
    img_emb = encoder.encode_images(list(images), batch_size=batch_size)  # [N, D]
    txt_emb = encoder.encode_texts(list(queries), batch_size=batch_size)  # [Q, D]
    top = (-(txt_emb @ img_emb.T)).argsort(axis=1, kind="stable")[:, :k]  # [Q, k]

    pad, label_h = 6, 14
    cell_w, cell_h = thumb + pad, thumb + pad + label_h
    canvas = Image.new("RGB", (_TEXT_W + k * cell_w + pad, len(queries) * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, (query, hits) in enumerate(zip(queries, top, strict=True)):
        y = pad + row * cell_h
        draw.multiline_text(
            (pad, y), "\n".join(textwrap.wrap(query, 32)[:6]), fill="black", font=font
        )
        for col, idx in enumerate(hits):
            if shown is not None:
                shown.append({"row": row + 1, "rank": col + 1, "query": query, "image": int(idx)})
            x = _TEXT_W + col * cell_w
            tile = _as_image(images[idx])
            tile.thumbnail((thumb - 4, thumb - 4))
            frame = _HIT if query in caps[idx] else _MISS
            draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], outline=frame, width=3)
            canvas.paste(
                tile,
                (x + 2 + (thumb - 4 - tile.width) // 2, y + 2 + (thumb - 4 - tile.height) // 2),
            )
            label = caps[idx][0] if caps[idx] else f"#{idx}"
            draw.text(
                (x, y + thumb + 1),
                textwrap.shorten(label, 18, placeholder="…"),
                fill="gray",
                font=font,
            )
    return canvas
