"""Build a clip-retrieval index of the corpus with our model.

Two steps, in clip-retrieval's own layout so its ``clip_back`` serves the result as is:

1. **Embed** (the role of ``clip_inference``): every shard row's image and caption go
   through the encoder; written as ``embeddings/img_emb/img_emb_<p>.npy``,
   ``embeddings/text_emb/text_emb_<p>.npy`` and ``embeddings/metadata/metadata_<p>.parquet``
   (row ``i`` of the concatenated files is faiss id ``i``; partitions are zero-padded so the
   lexicographic order autofaiss and clip_back use is the row order).
2. **Index** (the role of ``clip_index``): autofaiss ``build_index`` over each embedding
   folder, inner-product metric, into ``index/image.index`` + ``index/image.json``,
   ``index/text.index`` + ``index/text.json``, and a copy of ``metadata/`` — then
   ``indices_paths.json`` (``{name: {"indice_folder": ..., "columns_to_return": ...}}``),
   the file ``clip_back --indices_paths`` reads.

Rows whose image does not decode are not indexed; they go to ``rejected.parquet`` with the
reason, and the rest goes on.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from brivl.config_parse import bounded, config_from_dict
from brivl.fingerprint import file_sha256, stable_hash
from brivl.manifest import MANIFEST_NAME, read_manifest
from brivl.report import progress
from brivl.retrieval.adapter import Encoder

EMBEDDINGS_DIR = "embeddings"
INDEX_DIR = "index"
INDICES_PATHS = "indices_paths.json"
REJECTED = "rejected.parquet"
METADATA_COLUMNS = ("key", "caption", "url", "split")
REQUIRED_SHARD_COLUMNS = ("key", "image", "caption")
MODALITIES = {"image": "img_emb", "text": "text_emb"}
# the files that define a BriVL checkpoint's encoder (the same identity tasks.register tags
# registered versions with, so an index built from a directory is found again by model URI)
CHECKPOINT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "checkpoint.json")


@dataclass
class IndexConfig:
    """How the retrieval index is built."""

    splits: list[str] = bounded(["train", "val"], choices=("train", "val"))  # splits indexed
    batch_size: int = bounded(64, min=1, max=65_536)  # rows per encoder call
    rows_per_file: int = bounded(100_000, min=1, max=100_000_000)  # rows per embedding/metadata
    #                                                               partition file
    index_name: str = "brivl"  # the ``indice_name`` clients pass to /knn-service
    index_key: str | None = (
        None  # faiss factory string; None: autofaiss picks (Flat < 1000 rows, then HNSW)
    )
    max_index_memory_usage: str = "4G"  # autofaiss: hard cap on the index size
    current_memory_available: str = "8G"  # autofaiss: memory it may use while building
    # autofaiss tunes search parameters for the best recall within this query time; its
    # default (10 ms) spends the whole latency budget in faiss (HNSW efSearch in the 1000s)
    max_index_query_time_ms: float = bounded(1.0, gt=0)
    nb_cores: int | None = bounded(None, min=1, max=1024)  # faiss threads building; None: all

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> IndexConfig:
        """Build from a JSON-able dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, values, "index")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Row:
    """One shard row on its way to the index."""

    key: str
    caption: str
    url: str | None
    split: str
    image: Any  # encoded bytes


# ----------------------------------------------------------------------------- identity


def checkpoint_identity(checkpoint: str | Path) -> str:
    """A stable identity of a model checkpoint, for cache keys and index manifests.

    A stage directory: its manifest hash. A BriVL checkpoint directory: a hash of the files
    that define the encoder (weights, config, tokenizer; not optimizer state), so retraining
    into the same path is a new identity. Another directory or a file: a hash of all its
    files. Anything else (a ``models:/name/version`` URI): the string itself.
    """
    path = Path(str(checkpoint)).expanduser()
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return read_manifest(path)["hash"]
        wanted = (
            [path / n for n in CHECKPOINT_FILES] if (path / "checkpoint.json").is_file() else None
        )
        files = {
            str(p.relative_to(path)): file_sha256(p)
            for p in (wanted or sorted(path.rglob("*")))
            if p.is_file() and not p.name.startswith(".")
        }
        if not files:
            raise FileNotFoundError(f"checkpoint directory {path} is empty")
        return stable_hash(files)
    if path.is_file():
        return file_sha256(path)
    if "://" in str(checkpoint) or str(checkpoint).startswith("models:/"):
        return str(checkpoint)
    raise FileNotFoundError(
        f"checkpoint {checkpoint!r} is neither a local path nor a model URI (models:/NAME/VERSION)"
    )


# ----------------------------------------------------------------------------- reading


def shard_files(shard_dir: str | Path, splits: list[str]) -> list[tuple[str, Path]]:
    """``(split, file)`` for every shard file of the requested splits, in a stable order."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise FileNotFoundError(f"shard directory {shard_dir} does not exist")
    found = [(s, p) for s in splits for p in sorted((shard_dir / s).glob("*.parquet"))]
    if not found:
        raise FileNotFoundError(
            f"{shard_dir}: no shard files for splits {splits} (expected <split>/*.parquet)"
        )
    return found


def count_rows(files: list[tuple[str, Path]]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for _, p in files)


def iter_rows(files: list[tuple[str, Path]], batch_size: int) -> Iterator[list[Row]]:
    """Batches of rows across all shard files (``url`` optional, the rest required)."""
    for split, path in files:
        handle = pq.ParquetFile(path)
        names = set(handle.schema_arrow.names)
        missing = [c for c in REQUIRED_SHARD_COLUMNS if c not in names]
        if missing:
            raise ValueError(
                f"{path}: missing columns {missing}; a shard needs {list(REQUIRED_SHARD_COLUMNS)} "
                "(and optionally url)"
            )
        columns = list(REQUIRED_SHARD_COLUMNS) + (["url"] if "url" in names else [])
        for batch in handle.iter_batches(batch_size=batch_size, columns=columns):
            data = batch.to_pydict()
            urls = data.get("url") or [None] * batch.num_rows
            yield [
                Row(str(k), c or "", u, split, img)
                for k, c, u, img in zip(
                    data["key"], data["caption"], urls, data["image"], strict=True
                )
            ]


def decode(rows: list[Row]) -> tuple[list[Row], list[bytes], list[dict[str, str]]]:
    """Rows whose image decodes, with their encoded bytes (the encoder's input: bytes key
    the frozen-trunk store, so training's records serve here); the others become rejects
    with their reason."""
    good, images, rejected = [], [], []
    for row in rows:
        try:
            if not row.image:
                raise ValueError("empty image bytes")
            Image.open(io.BytesIO(row.image)).convert("RGB")
        except Exception as exc:  # noqa: BLE001 - any decode failure is a per-row reject
            rejected.append({"key": row.key, "split": row.split, "reason": f"image: {exc}"})
            continue
        good.append(row)
        images.append(bytes(row.image))
    return good, images, rejected


# ----------------------------------------------------------------------------- writing


def _normalised(embeddings: np.ndarray, n: int, what: str) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != n:
        raise ValueError(
            f"encoder returned {what} embeddings of shape {array.shape}, expected ({n}, d)"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"encoder returned non-finite {what} embeddings")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


class PartitionWriter:
    """Buffers embeddings + metadata and writes clip-retrieval partitions of fixed size."""

    def __init__(self, root: Path, rows_per_file: int, width: int) -> None:
        self.root, self.rows_per_file, self.width = root, rows_per_file, width
        for sub in (*MODALITIES.values(), "metadata"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.buffers: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
        self.meta: list[dict[str, Any]] = []
        self.partition = 0
        self.rows = 0

    def add(self, rows: list[Row], image_emb: np.ndarray, text_emb: np.ndarray) -> None:
        self.buffers["image"].append(image_emb)
        self.buffers["text"].append(text_emb)
        self.meta.extend(
            {"key": r.key, "caption": r.caption, "url": r.url, "split": r.split} for r in rows
        )
        while len(self.meta) >= self.rows_per_file:
            self._flush(self.rows_per_file)

    def close(self) -> None:
        if self.meta:
            self._flush(len(self.meta))

    def _flush(self, n: int) -> None:
        name = str(self.partition).zfill(self.width)
        for modality, prefix in MODALITIES.items():
            matrix = np.concatenate(self.buffers[modality])
            np.save(self.root / prefix / f"{prefix}_{name}.npy", matrix[:n])
            self.buffers[modality] = [matrix[n:]] if len(matrix) > n else []
        table = pa.Table.from_pylist(
            self.meta[:n],
            schema=pa.schema([(c, pa.string()) for c in METADATA_COLUMNS]),
        )
        pq.write_table(table, self.root / "metadata" / f"metadata_{name}.parquet")
        self.meta = self.meta[n:]
        self.partition += 1
        self.rows += n


def embed_corpus(
    encoder: Encoder, shard_dir: str | Path, embeddings_dir: str | Path, config: IndexConfig
) -> dict[str, Any]:
    """Embed every shard row's image and caption into clip-retrieval's embedding layout."""
    files = shard_files(shard_dir, config.splits)
    total = count_rows(files)
    width = len(str(max(math.ceil(total / config.rows_per_file) - 1, 0)))
    writer = PartitionWriter(Path(embeddings_dir), config.rows_per_file, width)
    rejected: list[dict[str, str]] = []
    dim = None
    with progress("embedding corpus", total) as advance:
        for batch in iter_rows(files, config.batch_size):
            rows, images, bad = decode(batch)
            rejected.extend(bad)
            if rows:
                img = _normalised(
                    encoder.encode_images(images, batch_size=config.batch_size), len(rows), "image"
                )
                txt = _normalised(
                    encoder.encode_texts([r.caption for r in rows], batch_size=config.batch_size),
                    len(rows),
                    "text",
                )
                if img.shape[1] != txt.shape[1]:
                    raise ValueError(f"image dim {img.shape[1]} != text dim {txt.shape[1]}")
                dim = img.shape[1]
                writer.add(rows, img, txt)
            advance(len(batch))
    writer.close()
    if writer.rows == 0:
        raise ValueError(
            f"{shard_dir}: no row of splits {config.splits} could be embedded ({len(rejected)} rejected)"
        )
    return {"rows": writer.rows, "rejected": rejected, "dim": dim, "partitions": writer.partition}


def build_faiss_indices(
    embeddings_dir: str | Path, index_dir: str | Path, config: IndexConfig
) -> dict[str, str]:
    """autofaiss ``build_index`` per modality, named like ``clip_index`` names them."""
    from autofaiss import build_index

    embeddings_dir, index_dir = Path(embeddings_dir), Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    for modality, folder in MODALITIES.items():
        index, infos = build_index(
            embeddings=str(embeddings_dir / folder),
            index_path=str(index_dir / f"{modality}.index"),
            index_infos_path=str(index_dir / f"{modality}.json"),
            index_key=config.index_key,
            max_index_query_time_ms=config.max_index_query_time_ms,
            max_index_memory_usage=config.max_index_memory_usage,
            current_memory_available=config.current_memory_available,
            nb_cores=config.nb_cores,
            metric_type="ip",
            verbose=logging.WARNING,
        )
        if index is None:
            raise RuntimeError(
                f"autofaiss could not build the {modality} index from {embeddings_dir / folder} "
                f"(index_key={config.index_key}, memory {config.max_index_memory_usage} of "
                f"{config.current_memory_available}); see the autofaiss log above"
            )
        info = json.loads((index_dir / f"{modality}.json").read_text())
        keys[modality] = str(info.get("index_key", config.index_key))
    target = index_dir / "metadata"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(embeddings_dir / "metadata", target)
    return keys


def write_indices_paths(out_dir: str | Path, config: IndexConfig) -> Path:
    """The ``indices_paths.json`` clip_back reads: index name -> folder and options."""
    out_dir = Path(out_dir).resolve()
    path = out_dir / INDICES_PATHS
    body = {
        config.index_name: {
            "indice_folder": str(out_dir / INDEX_DIR),
            "columns_to_return": list(METADATA_COLUMNS),
        }
    }
    path.write_text(json.dumps(body, indent=2))
    return path


def build_retrieval_index(
    encoder: Encoder, shard_dir: str | Path, out_dir: str | Path, config: IndexConfig
) -> dict[str, Any]:
    """Embed the corpus, build both faiss indices, write ``indices_paths.json``.

    Returns a summary (row counts, embedding dim, index keys). The caller writes the
    stage manifest last.
    """
    out_dir = Path(out_dir)
    for stale in (EMBEDDINGS_DIR, INDEX_DIR):
        if (out_dir / stale).exists():
            shutil.rmtree(out_dir / stale)  # a killed earlier attempt; rebuild cleanly
    out_dir.mkdir(parents=True, exist_ok=True)
    embedded = embed_corpus(encoder, shard_dir, out_dir / EMBEDDINGS_DIR, config)
    pq.write_table(
        pa.Table.from_pylist(
            embedded["rejected"],
            schema=pa.schema(
                [("key", pa.string()), ("split", pa.string()), ("reason", pa.string())]
            ),
        ),
        out_dir / REJECTED,
    )
    index_keys = build_faiss_indices(out_dir / EMBEDDINGS_DIR, out_dir / INDEX_DIR, config)
    write_indices_paths(out_dir, config)
    return {
        "rows": embedded["rows"],
        "rejected": len(embedded["rejected"]),
        "dim": embedded["dim"],
        "partitions": embedded["partitions"],
        "index_keys": index_keys,
    }
