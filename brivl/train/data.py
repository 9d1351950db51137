"""Batches for training from a shard directory, without Ray: deterministic and resumable.

A shard directory holds ``train/part-*.parquet`` and ``val/part-*.parquet`` (columns key,
image, caption, ...) plus ``_manifest.json``. :class:`ShardBatches` is the plain-Python data
path (tests, CPU demos): it keeps the split in memory, gives each worker its own slice of a
seeded per-epoch permutation, and can start at any batch number without decoding the
batches it skips — which is what makes resume exact. Ray Data is the scalable path (see
``tasks/pretrain_ray.py``); both decode with :func:`brivl.train.augment.decode_augment_batch`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from brivl.train.augment import decode_augment_batch
from brivl.train.config import TrainAugmentConfig

SPLITS = ("train", "val")
REQUIRED_COLUMNS = ("key", "image", "caption")


def shard_files(shard_dir: str | Path, split: str = "train") -> list[Path]:
    """The split's Parquet files, sorted; a clear error when there are none."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: accepted {SPLITS}")
    root = Path(shard_dir)
    files = sorted((root / split).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{root}: no {split}/*.parquet files; expected a shard directory with "
            "train/part-*.parquet and val/part-*.parquet (the shard stage's output)"
        )
    return files


def read_split(shard_dir: str | Path, split: str = "train", columns: Iterable[str] = REQUIRED_COLUMNS,
               limit: int | None = None) -> dict[str, list[Any]]:
    """Read columns of a split into lists (in file order), checking the columns exist."""
    columns = list(columns)
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for path in shard_files(shard_dir, split):
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; present: {names}")
        table = pq.read_table(path, columns=columns)
        for c in columns:
            out[c].extend(table.column(c).to_pylist())
        if limit is not None and len(out[columns[0]]) >= limit:
            return {c: v[:limit] for c, v in out.items()}
    return out


def read_captions(shard_dir: str | Path, split: str = "train") -> list[str]:
    """Every caption of a split (for training a tokenizer)."""
    return [c for c in read_split(shard_dir, split, ["caption"])["caption"] if isinstance(c, str)]


class ShardBatches:
    """This worker's batches of a shard split, epoch after epoch, from any batch number.

    Calling the object with ``skip`` yields batch ``skip``, ``skip + 1``, ... forever
    (``decode_augment_batch`` columns). Batch ``b`` of the run is batch ``b % per_epoch`` of
    epoch ``b // per_epoch``; each epoch is a permutation seeded by ``(seed, epoch)``,
    split round-robin across ``world_size`` workers, incomplete batches dropped. With
    ``resampled`` every global batch is drawn with replacement, seeded by ``(seed, b)``
    (OpenCLIP's ``--dataset-resampled``: no epochs, any number of samples).
    """

    def __init__(self, shard_dir: str | Path, split: str = "train", *, batch_size: int,
                 image_size: int, augment: TrainAugmentConfig | None = None, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1, raw: bool = False,
                 resampled: bool = False) -> None:
        data = read_split(shard_dir, split)
        self.images: list[bytes] = data["image"]
        self.captions: list[str] = data["caption"]
        self.keys: list[str] = [str(k) for k in data["key"]]
        self.batch_size, self.image_size = batch_size, image_size
        self.augment, self.seed, self.shuffle = augment, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.raw = raw  # yield encoded images undecoded (the trainer's trunk cache decodes)
        self.resampled = resampled
        self.per_epoch = len(self.keys) // (batch_size * world_size)
        self._order: tuple[int, np.ndarray] = (-1, np.arange(0))
        if self.per_epoch == 0:
            raise ValueError(
                f"{shard_dir}/{split}: {len(self.keys)} samples cannot fill one batch of "
                f"{batch_size} x {world_size} workers; accepted: batch_size * workers <= "
                f"{len(self.keys)}"
            )

    @property
    def samples_per_epoch(self) -> int:
        return len(self.keys)

    def indices(self, batch_number: int) -> np.ndarray:
        """Row indices of this worker's batch ``batch_number`` (no decoding)."""
        if self.resampled:  # the same global draw on every worker, each takes its slice
            draw = np.random.default_rng([self.seed, 0x5A11, batch_number])
            rows = draw.integers(0, len(self.keys), size=self.batch_size * self.world_size)
            return rows[self.rank :: self.world_size]
        epoch, b = divmod(batch_number, self.per_epoch)
        if self._order[0] != epoch:
            n = len(self.keys)
            order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                     else np.arange(n))
            self._order = (epoch, order[self.rank :: self.world_size])
        return self._order[1][b * self.batch_size : (b + 1) * self.batch_size]

    def batch(self, batch_number: int) -> dict[str, np.ndarray]:
        """Decode (and augment) one batch."""
        rows = self.indices(batch_number)
        raw = {
            "image": [self.images[i] for i in rows],
            "caption": [self.captions[i] for i in rows],
            "key": [self.keys[i] for i in rows],
        }
        epoch = batch_number // self.per_epoch
        if self.raw:
            return {**raw, "epoch": np.full(len(rows), epoch)}
        out = decode_augment_batch(raw, image_size=self.image_size, augment=self.augment,
                                   seed=self.seed, epoch=epoch)
        out["epoch"] = np.full(len(rows), epoch)
        return out

    def __call__(self, skip: int = 0) -> Iterator[dict[str, np.ndarray]]:
        number = skip
        while True:
            yield self.batch(number)
            number += 1


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a background thread, up to ``depth`` items ahead.

    Decoding (PIL, numpy) releases the GIL, so this overlaps data preparation with the
    training step. Exceptions in the producer re-raise in the consumer.
    """
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as exc:  # handed to the consumer
            buffer.put(_Raised(exc))

    thread = threading.Thread(target=produce, name="brivl-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

