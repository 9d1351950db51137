"""Take-downs in a retrieval index: drop rows by key or image URL, rebuild the faiss files.

Row ``i`` of the concatenated embedding partitions is faiss id ``i``, so removing rows
shifts every later id: the partitions holding a removed row are rewritten without it (the
others stay byte-identical) and both faiss indices are rebuilt from the stored embeddings
(no model is needed, nothing is embedded again). ``rejected.parquet`` loses the removed keys.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brivl import takedown
from brivl.retrieval.build import (
    EMBEDDINGS_DIR,
    INDEX_DIR,
    MODALITIES,
    REJECTED,
    IndexConfig,
    build_faiss_indices,
)


def _hit(table: pa.Table, keys: set[str], urls: set[str]) -> np.ndarray:
    hit = np.zeros(table.num_rows, dtype=bool)
    for column, values in (("key", keys), ("url", urls)):
        if values and column in table.column_names:
            found = pc.is_in(table.column(column).cast(pa.string()),
                             value_set=pa.array(sorted(values), pa.string()))
            hit |= found.fill_null(False).to_numpy(zero_copy_only=False)
    return hit


def _partition(meta: Path) -> str:
    return meta.stem.split("_", 1)[1]  # metadata_<p>.parquet -> <p>


def remove_from_index(index_dir: str | Path, keys: set[str], urls: set[str],
                      request: takedown.Request) -> tuple[takedown.Removal, dict[str, Any] | None]:
    """Remove the rows with these keys or image URLs from an index stage directory and write
    its superseding manifest; ``(removal, new manifest or None when nothing matched)``."""
    index_dir = Path(index_dir)
    old = takedown.begin(index_dir)
    emb = index_dir / EMBEDDINGS_DIR
    removal = takedown.Removal(index_dir)
    staged: list[tuple[Path, Any]] = []
    for meta in sorted((emb / "metadata").glob("metadata_*.parquet")):
        table = pq.read_table(meta)
        hit = _hit(table, keys, urls)
        if not hit.any():
            continue
        removal.removed[str(meta.relative_to(index_dir))] = int(hit.sum())
        removal.keys.update(str(k) for k in table.filter(pa.array(hit)).column("key").to_pylist())
        part = _partition(meta)
        staged.append((meta, table.filter(pa.array(~hit))))
        for prefix in MODALITIES.values():
            path = emb / prefix / f"{prefix}_{part}.npy"
            staged.append((path, np.load(path, allow_pickle=False)[~hit]))
    if not removal.count:
        (index_dir / takedown.JOURNAL).unlink(missing_ok=True)
        return removal, None
    for path, value in staged:
        tmp = path.with_name(f".{path.name}.takedown")
        if isinstance(value, pa.Table):
            pq.write_table(value, tmp)
        else:
            with open(tmp, "wb") as handle:
                np.save(handle, value, allow_pickle=False)
        os.replace(tmp, path)
    _drop_empty_partitions(emb)
    rejected = _filter_rejected(index_dir / REJECTED, keys)
    left = sum(pq.ParquetFile(p).metadata.num_rows for p in (emb / "metadata").glob("*.parquet"))
    if left:
        build_faiss_indices(emb, index_dir / INDEX_DIR, IndexConfig.from_dict(old.get("config")))
    else:  # every row taken down: no index to serve
        shutil.rmtree(index_dir / INDEX_DIR, ignore_errors=True)
    counts = {**old["row_counts"], "indexed": left}
    if rejected is not None:
        counts["rejected"] = rejected
    return removal, takedown.supersede_manifest(index_dir, old, removal, request, counts)


def _drop_empty_partitions(emb: Path) -> None:
    """A partition left with no rows is removed (autofaiss cannot read an empty matrix)."""
    for meta in sorted((emb / "metadata").glob("metadata_*.parquet")):
        if pq.ParquetFile(meta).metadata.num_rows == 0:
            part = _partition(meta)
            for prefix in MODALITIES.values():
                (emb / prefix / f"{prefix}_{part}.npy").unlink(missing_ok=True)
            meta.unlink()


def _filter_rejected(path: Path, keys: set[str]) -> int | None:
    """Drop the keys from ``rejected.parquet``; the rows left (None: no such file)."""
    if not path.is_file():
        return None
    table = pq.read_table(path)
    hit = _hit(table, keys, set())
    if hit.any():
        tmp = path.with_name(f".{path.name}.takedown")
        pq.write_table(table.filter(pa.array(~hit)), tmp)
        os.replace(tmp, path)
    return int((~hit).sum())
