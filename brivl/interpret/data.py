"""Training images for the generator, read from a shard stage directory.

A shard directory holds ``<split>/*.parquet`` (columns ``key``, ``image`` = encoded image
bytes, ``caption``, ...) and ``_manifest.json``. Rows whose bytes do not decode are skipped
and counted (with the first few keys and reasons) instead of stopping the read.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image


@dataclass
class ReadStats:
    """What :func:`iter_shard_images` read and skipped."""

    files: int = 0
    images: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)  # "file:row key: reason", first few

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")


def shard_files(shard_dir: str | Path, split: str = "train") -> list[Path]:
    """The Parquet files of one split, sorted; a clear error when there are none."""
    files = sorted((Path(shard_dir) / split).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{shard_dir}: no {split}/*.parquet; expected a shard stage directory "
            f"(train/*.parquet with columns key, image, caption)"
        )
    return files


def iter_shard_images(
    shard_dir: str | Path,
    split: str = "train",
    limit: int | None = None,
    stats: ReadStats | None = None,
) -> Iterator[Image.Image]:
    """Decoded RGB images of a shard split, in file and row order, at most ``limit``."""
    stats = stats if stats is not None else ReadStats()
    for path in shard_files(shard_dir, split):
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        if "image" not in names:
            raise ValueError(f"{path}: no 'image' column (columns: {names}); expected image bytes")
        columns = ["image"] + (["key"] if "key" in names else [])
        stats.files += 1
        row = 0
        for batch in parquet.iter_batches(batch_size=256, columns=columns):
            keys = batch.column("key").to_pylist() if "key" in columns else [None] * batch.num_rows
            for blob, key in zip(batch.column("image").to_pylist(), keys, strict=True):
                where = f"{path.name}:{row} key={key}"
                row += 1
                if not blob:
                    stats.skip(where, "empty image bytes")
                    continue
                try:
                    image = Image.open(io.BytesIO(blob))
                    image = image.convert("RGB")
                except Exception as exc:  # noqa: BLE001 - any undecodable row is skipped
                    stats.skip(where, f"undecodable image ({type(exc).__name__}: {exc})")
                    continue
                stats.images += 1
                yield image
                if limit is not None and stats.images >= limit:
                    return
