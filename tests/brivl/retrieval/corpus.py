"""A tiny image-text corpus in the shard stage's layout, and a tiny real model checkpoint.

Shared by the retrieval tests and ``tests/tasks/test_index.py`` (loaded there by path).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from brivl.manifest import write_manifest

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 220, 40),
    "purple": (140, 40, 170),
}
SHAPES = ("circle", "square", "triangle", "cross")
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("image", pa.binary()),
        ("caption", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("url", pa.string()),
    ]
)


def drawn_jpeg(colour: str, shape: str, i: int, size: int = 48) -> bytes:
    """A shape of a colour on a grey background, offset by ``i``."""
    image = Image.new("RGB", (size, size), (200 - 7 * i % 90, 200, 190))
    draw = ImageDraw.Draw(image)
    x, y, r = 8 + i % 7, 8 + (3 * i) % 9, 14 + i % 5
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x, y, x + 2 * r, y + 2 * r), fill=fill)
    elif shape == "square":
        draw.rectangle((x, y, x + 2 * r, y + 2 * r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(x + r, y), (x, y + 2 * r), (x + 2 * r, y + 2 * r)], fill=fill)
    else:
        draw.rectangle((x + r - 4, y, x + r + 4, y + 2 * r), fill=fill)
        draw.rectangle((x, y + r - 4, x + 2 * r, y + r + 4), fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def rows(n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        data = drawn_jpeg(colour, shape, i)
        out.append(
            {
                "key": f"{i:06d}",
                "image": data,
                "caption": f"a {colour} {shape} picture number {i}",
                "width": 48,
                "height": 48,
                "sha256": hashlib.sha256(data).hexdigest(),
                "url": f"http://127.0.0.1:9/img/{i}.jpg",
            }
        )
    return out


BAD_ROW = {
    "key": "broken",
    "image": b"\xff\xd8\xff not really a jpeg",
    "caption": "a broken download",
    "width": 0,
    "height": 0,
    "sha256": "",
    "url": "http://127.0.0.1:9/img/broken.jpg",
}


def make_shards(root: Path, n_train: int = 16, n_val: int = 4, bad: bool = True) -> Path:
    """``root/train/part-00000.parquet``, ``root/val/...`` (+ one undecodable row) and a manifest."""
    train, val = rows(n_train), rows(n_val, start=n_train)
    if bad:
        val.append(BAD_ROW)
    for split, items in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(items, schema=SCHEMA), root / split / "part-00000.parquet"
        )
    write_manifest(
        root,
        stage="shard",
        config={"test": True},
        inputs=[],
        code_version="test",
        row_counts={"train": len(train), "val": len(val)},
    )
    return root


def shard_rows(root: Path) -> list[dict]:
    """All rows in index order (train then val)."""
    return [r for s in ("train", "val") for r in pq.read_table(root / s).to_pylist()]


def make_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised brivl-tiny checkpoint with a tokenizer trained on the captions."""
    import torch

    from brivl.model import create_model, save_checkpoint
    from brivl.model.tokenizer import train_tokenizer

    captions = [r["caption"] for r in rows(40)] + [BAD_ROW["caption"]]
    torch.manual_seed(seed)
    model = create_model(
        "brivl-tiny", tokenizer=train_tokenizer(captions, vocab_size=200, min_frequency=1)
    )
    return save_checkpoint(model, directory)
