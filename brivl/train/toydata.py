"""Small synthetic shard directories (coloured shapes, captions naming them) for tests/benches.

The captions name colour, shape, size and position, so retrieval can be learned from a few
hundred pairs. The layout is the shard stage's: ``train/part-*.parquet``,
``val/part-*.parquet`` (key, image, caption, width, height, sha256, url) and
``_manifest.json``.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from brivl.manifest import write_manifest

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
           "yellow": (235, 215, 20), "purple": (140, 40, 170), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
PLACES = {"top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
          "bottom right": (0.72, 0.72), "centre": (0.5, 0.5)}


def toy_pair(rng: random.Random, side: int = 64) -> tuple[bytes, str]:
    """One JPEG and its caption."""
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    size, place = rng.choice(SIZES), rng.choice(sorted(PLACES))
    background = tuple(rng.randint(200, 255) for _ in range(3))
    img = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    cx, cy = (v * side + rng.uniform(-0.04, 0.04) * side for v in PLACES[place])
    r = side * (0.10 if size == "small" else 0.2) * rng.uniform(0.9, 1.1)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r / 3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    template = rng.choice(["a {s} {c} {h} in the {p}", "{s} {c} {h}, {p}",
                           "picture of a {s} {c} {h} at the {p}"])
    return buf.getvalue(), template.format(s=size, c=colour, h=shape, p=place)


def make_toy_shards(out_dir: str | Path, n_train: int = 256, n_val: int = 64, side: int = 64,
                    seed: int = 0, rows_per_file: int = 128) -> Path:
    """Write a complete toy shard directory and return it."""
    out = Path(out_dir)
    rng = random.Random(seed)
    counts = {}
    for split, n in (("train", n_train), ("val", n_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            image, caption = toy_pair(rng, side)
            rows.append({"key": f"{split}{i:06d}", "image": image, "caption": caption,
                         "width": side, "height": side,
                         "sha256": hashlib.sha256(image).hexdigest(),
                         "url": f"http://127.0.0.1/{split}/{i}.jpg"})
        for part, start in enumerate(range(0, n, rows_per_file)):
            chunk = rows[start : start + rows_per_file]
            table = pa.Table.from_pylist(chunk, schema=_SCHEMA)
            pq.write_table(table, out / split / f"part-{part:05d}.parquet")
        counts[split] = n
    write_manifest(out, stage="shard", config={"toy": True, "seed": seed, "side": side},
                   inputs=[], code_version="toy", row_counts=counts)
    return out


_SCHEMA = pa.schema([("key", pa.string()), ("image", pa.binary()), ("caption", pa.string()),
                     ("width", pa.int32()), ("height", pa.int32()), ("sha256", pa.string()),
                     ("url", pa.string())])


def make_demo_shards(out_dir: str | Path, n_images: int = 3000, n_val: int = 200, seed: int = 0,
                     rows_per_file: int = 512) -> Path:
    """Shards from the demo web's clean pictures and their true captions (no crawl/filter).

    The same pictures and captions the pipeline crawls (``brivl.demo``), written straight to
    the shard layout so training can be measured without running the data stages. The first
    ``n_val`` pictures with distinct captions go to ``val``.
    """
    from brivl.demo import DemoConfig, build_site

    site = build_site(DemoConfig(n_images=n_images, seed=seed))
    out = Path(out_dir)
    rows: dict[str, list[dict]] = {"train": [], "val": []}
    val_captions: set[str] = set()
    for truth in site.images:
        if truth.fault is not None or not truth.width:
            continue
        image = site.image_bytes(truth.path)
        split = "val" if len(rows["val"]) < n_val and truth.caption not in val_captions else "train"
        if split == "val":
            val_captions.add(truth.caption)
        rows[split].append({"key": f"{split}{len(rows[split]):06d}", "image": image,
                            "caption": truth.caption, "width": truth.width,
                            "height": truth.height, "sha256": hashlib.sha256(image).hexdigest(),
                            "url": f"http://127.0.0.1{truth.path}"})
    for split, split_rows in rows.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        for part, start in enumerate(range(0, len(split_rows), rows_per_file)):
            table = pa.Table.from_pylist(split_rows[start : start + rows_per_file], schema=_SCHEMA)
            pq.write_table(table, out / split / f"part-{part:05d}.parquet")
    write_manifest(out, stage="shard", config={"demo": True, "n_images": n_images, "seed": seed},
                   inputs=[], code_version="demo-direct",
                   row_counts={k: len(v) for k, v in rows.items()})
    return out
