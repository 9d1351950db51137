"""Training shards: fixed-row Parquet files, split train/val by key hash, resumable.

Layout of a shard directory::

    train/part-00000.parquet ...   key, image (JPEG bytes), caption, width, height, sha256, url,
                                   page_url, source_sha256, face_count, face_boxes,
                                   licence, licence_source, copyright (as the page declared),
                                   brivl_score
    val/part-00000.parquet ...
    rejected/part-00000.parquet    input rows not sharded (key, source, row, reason, detail):
                                   no key, duplicate key, no or undecodable image, and the
                                   input files that could not be read (reason bad_input_file)
    _manifest.json                 (written by the stage task, last: checksums, row counts)

* The split of a row depends only on its key (``sha256(salt:key)`` against ``val_fraction``),
  so it is stable across reruns and when the corpus grows.
* Row order is a function of the input's content: input files sorted by name, and within a
  file its rows sorted by key (then by row). So the shards depend on which rows each file
  holds, never on the order they were written in (img2dataset writes a shard's rows in
  completion order: two downloads of one crawl differ there) or on the directory listing.
  Reordering a file holds its columns in memory (a filter part is one download shard);
  a file already in key order streams. Every shard but the last of a split holds exactly
  ``rows_per_shard`` rows, and row groups of ``row_group_rows`` let readers
  (``ray.data.read_parquet``, :func:`iter_shard_batches`) stream without loading whole files.
* Each shard is written to a hidden temporary name and renamed when complete. A rerun after a
  crash (even SIGKILL) skips the shards that exist - their rows are known from the plan, so
  their images are not even read - and writes the rest: the same rows as an uninterrupted run.
* The columns after ``url`` are copied from the input as they are, and null where it lacks
  them. ``brivl_score`` (float32, the filter's model-score cosine) is always present and
  null unless the filter ran its model-score rule: one schema for every shard directory,
  whichever rules ran. Shards written before it existed lack the column; readers select
  the columns they need by name, so they read both.
* Non-JPEG inputs are re-encoded to JPEG; ``sha256``, ``width`` and ``height`` describe the
  bytes written.
* Input columns are checked first (a SchemaError names the file and column). Rows are
  planned before anything is written, so a bad row is rejected with its reason and every
  shard still holds exactly ``rows_per_shard`` rows: the plan reads the keys and, unless the
  input is a finished filter stage (whose images are known good), the image bytes too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from brivl.config_parse import bounded, config_from_dict
from brivl.errors import InputError
from brivl.parquet_input import (
    BINARY,
    FLOAT,
    INTEGER,
    READ_ERRORS,
    STRING,
    BadFile,
    Column,
    bad_file,
    open_inputs,
    resolve_columns,
)
from brivl.report import progress

SPLITS = ("train", "val")
PLAN_NAME = ".shard_plan.json"  # hidden: which plan the existing shard files belong to
SLOW_ENV = "BRIVL_SHARD_DELAY_S"  # test hook: sleep this long after each shard is written
# copied from the input as they are (null when the input lacks them): where the pair came
# from, what the filter's face rule found (face_boxes: JSON [[x, y, w, h], ...]) and its
# model-score rule's image-caption cosine
PASSED_THROUGH = {"page_url": pa.string(), "source_sha256": pa.string(),
                  "face_count": pa.int32(), "face_boxes": pa.string(),
                  "licence": pa.string(), "licence_source": pa.string(),
                  "copyright": pa.string(), "brivl_score": pa.float32()}
SHARD_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("image", pa.binary()),
        ("caption", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("url", pa.string()),
    ]
    + [(name, kind) for name, kind in PASSED_THROUGH.items()]
)
REJECTED_DIR = "rejected"
REJECTED_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


def _input_kind(kind: pa.DataType) -> str:
    """The input column kind accepted for a passed-through column of type ``kind``."""
    if pa.types.is_integer(kind):
        return INTEGER
    return FLOAT if pa.types.is_floating(kind) else STRING


# what shard reads of an input file, with the column types it accepts
INPUT_COLUMNS = {
    "key": Column(("candidate_id", "key"), (STRING, INTEGER)),
    "image": Column(("jpg", "image"), (BINARY,)),
    "caption": Column(("caption",)),
    "url": Column(("url",), required=False),
    "width": Column(("width",), (INTEGER,), required=False),
    "height": Column(("height",), (INTEGER,), required=False),
    "sha256": Column(("sha256",), required=False),
    **{name: Column((name,), (_input_kind(kind),), required=False)
       for name, kind in PASSED_THROUGH.items()},
}
TRAIN, VAL, REJECTED = 0, 1, -1  # where the plan routes a row
_JPEG_MAGIC = b"\xff\xd8\xff"
_READ_BATCH = 256


@dataclass
class ShardConfig:
    """How pairs are laid out for training."""

    rows_per_shard: int = bounded(2048, min=1, max=10_000_000)  # every shard but the last of
    #                                                              a split has exactly this many
    val_fraction: float = bounded(0.02, min=0, max=0.99)  # share of keys in val, by key hash
    row_group_rows: int = bounded(128, min=1, max=10_000_000)  # rows per Parquet row group:
    #                                                            the unit a streaming reader loads
    split_salt: str = "brivl-split-v1"  # change it to draw a different (still stable) split
    jpeg_quality: int = bounded(95, min=1, max=100)  # for re-encoding non-JPEG input images
    compression: str = bounded("snappy", choices=("snappy", "zstd", "gzip", "brotli", "lz4", "none"))
    #                          for the text columns; JPEG bytes are stored uncompressed

    def __post_init__(self) -> None:
        problems = []
        if self.rows_per_shard < 1:
            problems.append("rows_per_shard must be >= 1")
        if not 0 <= self.val_fraction < 1:
            problems.append("val_fraction must be in [0, 1)")
        if self.row_group_rows < 1:
            problems.append("row_group_rows must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append("jpeg_quality must be in 1..100")
        if problems:
            raise ValueError("bad ShardConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ShardConfig:
        """Build from a plain dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, values, "shard")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def eager_arrow_release() -> None:
    """Have Arrow's jemalloc pool hand freed memory back at once (it keeps it ~1 s by
    default), so a streaming stage's RSS tracks its working set rather than its history.

    Pair with ``ARROW_DEFAULT_MEMORY_POOL=jemalloc`` in the environment before pyarrow is
    imported (``brivl.env`` does). A no-op with other pools. The cost: freed pages are
    faulted in again, which makes Arrow's multi-threaded reads ~2x slower, so the stages
    read with ``use_threads=False``."""
    if pa.default_memory_pool().backend_name == "jemalloc":
        pa.jemalloc_set_decay_ms(0)


def split_of(key: str, val_fraction: float, salt: str = ShardConfig.split_salt) -> str:
    """``"val"`` or ``"train"`` for ``key``: a pure function of the key, salt and fraction."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") < val_fraction * 2**64 else "train"


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# --- input ------------------------------------------------------------------------------------
def find_shard_inputs(input_dir: str | Path) -> list[Path]:
    """A filter stage's ``kept/*.parquet``, else ``input_dir/*.parquet``, sorted; or one file."""
    path = Path(input_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"shard input {path} does not exist")
    base = path / "kept" if (path / "kept").is_dir() else path
    files = sorted(p for p in base.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files and base.name != "kept":
        raise FileNotFoundError(
            f"{path}: no kept/*.parquet or *.parquet files; shard reads a filter stage output "
            "or Parquet files with (candidate_id or key, caption, jpg or image[, url])"
        )
    return files


def _roles(path: Path, schema: pa.Schema) -> dict[str, str | None]:
    return resolve_columns(path, schema, INPUT_COLUMNS, "shard")


# --- plan -------------------------------------------------------------------------------------
@dataclass
class _Plan:
    counts: dict[str, int]  # rows per split
    fingerprint: str  # of the inputs (names, sizes, keys) and the config
    files: list[tuple[Path, dict]]  # the input files read, with their column roles
    route: list[np.ndarray]  # per input file, per row: TRAIN, VAL or REJECTED
    order: list[np.ndarray]  # per input file: its row indices in the order they are written
    rejected: list[dict[str, Any]]  # REJECTED_SCHEMA rows
    bad_files: list[BadFile]  # input files that could not be read

    def shards(self, split: str, rows_per_shard: int) -> int:
        return -(-self.counts[split] // rows_per_shard)


def _plan(files: list[tuple[Path, dict]], cfg: ShardConfig, check_images: bool) -> _Plan:
    """Route every row: its split by key hash, or rejected (no key, duplicate key, no or
    undecodable image when ``check_images``); a file that cannot be read is set aside."""
    seen: dict[str, str] = {}
    plan = _Plan({}, "", [], [], [], [], [])
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for path, role in files:
        try:
            keys = pq.read_table(path, columns=[role["key"]], use_threads=False).column(0)
            problems = _image_problems(path, role) if check_images else {}
        except READ_ERRORS as exc:
            plan.bad_files.append(bad_file(path, exc))
            continue
        keys = [None if k is None else str(k) for k in keys.to_pylist()]
        order = key_order(keys)
        digest.update(f"{path.name}:{path.stat().st_size}:{len(keys)}:".encode())
        digest.update("\0".join(str(keys[i]) for i in order).encode())
        route = np.empty(len(keys), np.int8)
        for row in order.tolist():
            key = keys[row]
            problem = _key_problem(key, seen, role["key"]) or problems.get(row)
            if problem:
                route[row] = REJECTED
                plan.rejected.append({"key": key, "source": path.name, "row": row,
                                      "reason": problem[0], "detail": problem[1]})
                continue
            seen[key] = path.name
            route[row] = VAL if split_of(key, cfg.val_fraction, cfg.split_salt) == "val" else TRAIN
        plan.files.append((path, role))
        plan.route.append(route)
        plan.order.append(order)
    val = int(sum(int((r == VAL).sum()) for r in plan.route))
    plan.counts = {"train": len(seen) - val, "val": val}
    plan.fingerprint = digest.hexdigest()[:24]
    return plan


def key_order(keys: list[str | None]) -> np.ndarray:
    """Row indices sorted by key (rows without a key last), ties by row: the write order."""
    return np.array(sorted(range(len(keys)), key=lambda i: (keys[i] is None, keys[i] or "", i)),
                    dtype=np.int64)


def _key_problem(key: str | None, seen: dict[str, str], column: str) -> tuple[str, str] | None:
    if key in (None, ""):
        return "no_key", f"empty {column}"
    if key in seen:
        return "duplicate_key", f"the same {column} as a row of {seen[key]} (the first is kept)"
    return None


def _image_problems(path: Path, role: dict) -> dict[int, tuple[str, str]]:
    """``{row: (reason, detail)}`` of the rows whose image is missing or does not decode."""
    problems: dict[int, tuple[str, str]] = {}
    offset = 0
    for batch in pq.ParquetFile(path).iter_batches(_READ_BATCH, columns=[role["image"]],
                                                   use_threads=False):
        for i, blob in enumerate(batch.column(0).to_pylist()):
            problem = _image_problem(blob)
            if problem:
                problems[offset + i] = problem
        offset += batch.num_rows
    return problems


def _image_problem(blob: bytes | None) -> tuple[str, str] | None:
    if not blob:
        return "no_image", "the row has no image bytes"
    try:
        with Image.open(io.BytesIO(blob)) as im:
            if not blob.startswith(_JPEG_MAGIC):
                im.load()  # re-encoded to JPEG when written: it must decode whole
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return "undecodable", f"{type(exc).__name__}: {exc}"[:300]
    return None


# --- write ------------------------------------------------------------------------------------
@dataclass
class ShardResult:
    """What :func:`write_shards` produced."""

    counts: dict[str, int]  # rows per split
    shards: dict[str, list[dict[str, Any]]]  # per split: [{"file", "rows"}]
    skipped: int  # shards found complete from an earlier (interrupted) run
    reencoded: int  # non-JPEG images re-encoded
    rejected: int = 0  # input rows not sharded (``rejected/`` says which and why)
    bad_input_files: list[dict[str, str]] = dataclasses.field(default_factory=list)

    @property
    def row_counts(self) -> dict[str, int]:
        return {**self.counts, "total": sum(self.counts.values()), "rejected": self.rejected,
                "bad_input_files": len(self.bad_input_files)}


def write_shards(
    input_dir: str | Path,
    out_dir: str | Path,
    config: ShardConfig | dict | None = None,
    *,
    on_shard: Callable[[Path], None] | None = None,
) -> ShardResult:
    """Write ``train/`` and ``val/`` shards of ``input_dir`` into ``out_dir`` (no manifest).

    ``on_shard(path)`` is called after each shard file is complete. Setting the environment
    variable ``BRIVL_SHARD_DELAY_S`` sleeps that long after each shard (to test resume).
    """
    cfg = config if isinstance(config, ShardConfig) else ShardConfig.from_dict(config)
    eager_arrow_release()
    handles, bad = open_inputs(find_shard_inputs(input_dir))  # unreadable files: set aside
    roles = [(path, _roles(path, handle.schema_arrow)) for path, handle in handles]
    trusted = _is_filter_output(input_dir)
    plan = _plan(roles, cfg, check_images=not trusted)
    plan.bad_files[:0] = bad
    out = Path(out_dir)
    _prepare(out, plan)
    delay = float(os.environ.get(SLOW_ENV, "0") or 0)
    writer = _SplitWriter(out, cfg, plan, on_shard, delay)
    total = sum(plan.counts.values())
    with progress("shard: write", total) as advance:
        for (path, role), route, order in zip(plan.files, plan.route, plan.order, strict=True):
            _write_file(writer, path, role, trusted, route, order, advance)
    writer.finish()
    _write_rejected(out, plan)
    for leftover in out.glob("*/.*.tmp"):
        leftover.unlink()
    shards = {
        split: [{"file": f"{split}/{shard_name(i)}", "rows": min(cfg.rows_per_shard,
                 plan.counts[split] - i * cfg.rows_per_shard)}
                for i in range(plan.shards(split, cfg.rows_per_shard))]
        for split in SPLITS
    }
    return ShardResult(dict(plan.counts), shards, writer.skipped, writer.reencoded,
                       len(plan.rejected), [b.to_dict() for b in plan.bad_files])


def _write_file(writer: _SplitWriter, path: Path, role: dict, trusted: bool, route: np.ndarray,
                order: np.ndarray, advance: Callable[[int], None]) -> None:
    """Route one input file's rows to their shards, in ``order``."""
    offset = 0
    try:
        for batch, rows in _ordered_batches(path, role, order):
            writer.add(batch, role, trusted, route[rows])
            offset += batch.num_rows
            advance(batch.num_rows)
    except READ_ERRORS as exc:
        raise InputError(f"{path}: unreadable after row {offset} while writing shards "
                         f"({type(exc).__name__}: {exc}); its keys were readable, so another "
                         "column is damaged: repair or remove the file and rerun") from exc


def _ordered_batches(path: Path, role: dict, order: np.ndarray
                     ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """``(batch, its row indices)`` of ``path`` in ``order``: streamed when that is the
    file's own order, else taken from the file's columns read whole."""
    columns = [c for c in dict.fromkeys(role.values()) if c]
    if np.array_equal(order, np.arange(len(order))):
        offset = 0
        for batch in pq.ParquetFile(path).iter_batches(_READ_BATCH, columns=columns,
                                                       use_threads=False):
            yield batch, order[offset:offset + batch.num_rows]
            offset += batch.num_rows
        return
    table = pq.read_table(path, columns=columns, use_threads=False)
    for start in range(0, len(order), _READ_BATCH):
        rows = order[start:start + _READ_BATCH]
        yield table.take(pa.array(rows)).combine_chunks().to_batches()[0], rows


def _write_rejected(out: Path, plan: _Plan) -> None:
    """``rejected/part-00000.parquet``: the rows not sharded, then the unreadable files."""
    rows = [*plan.rejected, *({"key": None, "source": Path(b.file).name, "row": -1,
                               "reason": "bad_input_file", "detail": b.error}
                              for b in plan.bad_files)]
    target = out / REJECTED_DIR / shard_name(0)
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA), tmp)
    tmp.replace(target)


def _is_filter_output(input_dir: str | Path) -> bool:
    """True when the input is a finished filter stage (its sha256/width/height are trusted)."""
    manifest = Path(input_dir) / "_manifest.json"
    try:
        return json.loads(manifest.read_text()).get("stage") == "filter"
    except (OSError, ValueError):
        return False


def _prepare(out: Path, plan: _Plan) -> None:
    """Keep existing shards only when they belong to this very plan."""
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / PLAN_NAME
    previous = plan_file.read_text() if plan_file.is_file() else None
    if previous != plan.fingerprint:
        (out / "_manifest.json").unlink(missing_ok=True)
        for split in SPLITS:
            for old in (out / split).glob("*.parquet") if (out / split).is_dir() else ():
                old.unlink()
        plan_file.write_text(plan.fingerprint)
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)


class _SplitWriter:
    """Routes rows to their split's shard; writes whole shards, skips those already on disk.

    A split's rows arrive in order, and shard ``i`` holds its rows ``i*N .. (i+1)*N - 1``, so
    the pending rows always belong to one shard, written as soon as it is full.
    """

    def __init__(self, out: Path, cfg: ShardConfig, plan: _Plan, on_shard, delay: float) -> None:
        self.out, self.cfg, self.plan = out, cfg, plan
        self.on_shard, self.delay = on_shard, delay
        self.position = dict.fromkeys(SPLITS, 0)  # rows of each split routed so far
        self.pending: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
        self.pending_rows = dict.fromkeys(SPLITS, 0)
        self.pending_index: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self.skipped_shards: set[tuple[str, int]] = set()
        self.reencoded = 0

    @property
    def skipped(self) -> int:
        return len(self.skipped_shards)

    def _path(self, split: str, index: int) -> Path:
        return self.out / split / shard_name(index)

    def _exists(self, split: str, index: int) -> bool:
        if (split, index) in self.skipped_shards:
            return True
        if self._path(split, index).exists():
            self.skipped_shards.add((split, index))
            return True
        return False

    def add(self, batch: pa.RecordBatch, role: dict, trusted: bool, route: np.ndarray) -> None:
        rps = self.cfg.rows_per_shard
        for split, code in (("train", TRAIN), ("val", VAL)):
            rows = np.flatnonzero(route == code)
            if not len(rows):
                continue
            index = (self.position[split] + np.arange(len(rows))) // rps  # shard of each row
            self.position[split] += len(rows)
            cuts = [0, *(np.flatnonzero(np.diff(index)) + 1).tolist(), len(rows)]
            todo = [(int(index[a]), rows[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)
                    if not self._exists(split, int(index[a]))]
            if not todo:
                continue  # every row of this batch lands in a shard that is already complete
            take = np.concatenate([r for _, r in todo])
            part = batch if len(take) == batch.num_rows else batch.take(pa.array(take, pa.int32()))
            table = self._normalise(part, role, trusted)
            offset = 0
            for index_, rows_ in todo:
                self.pending[split].append(table.slice(offset, len(rows_)))
                offset += len(rows_)
                self.pending_rows[split] += len(rows_)
                self.pending_index[split] = index_
                if self.pending_rows[split] == rps:
                    self._flush(split)

    def finish(self) -> None:
        for split in SPLITS:
            if self.pending_rows[split]:
                self._flush(split)

    def _flush(self, split: str) -> None:
        self._write(split, self.pending_index[split], pa.concat_tables(self.pending[split]))
        self.pending[split] = []
        self.pending_rows[split] = 0

    def _write(self, split: str, index: int, table: pa.Table) -> None:
        path = self._path(split, index)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(
            table,
            tmp,
            row_group_size=self.cfg.row_group_rows,
            compression={c: ("none" if c == "image" else self.cfg.compression)
                         for c in SHARD_SCHEMA.names},
            use_dictionary=False,
            write_statistics=["key", "width", "height"],
        )
        tmp.replace(path)  # atomic: a shard file exists only when complete (a killed process
        # cannot leave half a shard under its final name; power loss is not covered: no fsync)
        if self.on_shard:
            self.on_shard(path)
        if self.delay:
            time.sleep(self.delay)

    def _normalise(self, batch: pa.RecordBatch, role: dict, trusted: bool) -> pa.Table:
        """The batch in :data:`SHARD_SCHEMA`: JPEG bytes, and their sha256/width/height."""
        images = batch.column(role["image"])
        n = batch.num_rows
        is_jpeg = pc.equal(pc.binary_slice(images, 0, 3), pa.scalar(_JPEG_MAGIC, pa.binary()))
        is_jpeg = is_jpeg.fill_null(False).to_pylist()
        have_meta = trusted and all(role[c] for c in ("width", "height", "sha256"))
        if have_meta and all(is_jpeg):
            width = batch.column(role["width"]).cast(pa.int32())
            height = batch.column(role["height"]).cast(pa.int32())
            sha = batch.column(role["sha256"]).cast(pa.string())
        else:
            blobs = images.to_pylist()
            width, height, sha = [0] * n, [0] * n, [""] * n
            for i, blob in enumerate(blobs):
                if blob is None:
                    raise ValueError(f"row with key {batch.column(role['key'])[i]} has no image")
                if not is_jpeg[i]:
                    blob = _to_jpeg(blob, self.cfg.jpeg_quality)
                    blobs[i] = blob
                    self.reencoded += 1
                with Image.open(io.BytesIO(blob)) as im:
                    width[i], height[i] = im.size
                sha[i] = hashlib.sha256(blob).hexdigest()
            images = pa.array(blobs, pa.binary())
        def column(role_name: str, kind: pa.DataType) -> pa.Array:
            name = role[role_name]
            return batch.column(name).cast(kind) if name else pa.nulls(n, kind)

        return pa.table(
            [
                batch.column(role["key"]).cast(pa.string()),
                images,
                batch.column(role["caption"]).cast(pa.string()),
                pa.array(width, pa.int32()) if isinstance(width, list) else width,
                pa.array(height, pa.int32()) if isinstance(height, list) else height,
                pa.array(sha, pa.string()) if isinstance(sha, list) else sha,
                column("url", pa.string()),
                *(column(name, kind) for name, kind in PASSED_THROUGH.items()),
            ],
            schema=SHARD_SCHEMA,
        )


def _to_jpeg(data: bytes, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality)
    return out.getvalue()


# --- read -------------------------------------------------------------------------------------
def shard_files(shard_dir: str | Path, split: str) -> list[Path]:
    """The shard files of ``split`` in order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(shard_dir) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such split directory (is {shard_dir} a shard stage?)")
    return sorted(folder.glob("part-*.parquet"))


def iter_shard_batches(
    shard_dir: str | Path, split: str, batch_size: int = 256, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream ``split`` as record batches of exactly ``batch_size`` rows (the last may be
    shorter), reading one row group at a time; memory stays ~ one row group + one batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for path in shard_files(shard_dir, split):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= batch_size:
                table = pa.Table.from_batches(pending)
                out = table.slice(0, batch_size).combine_chunks().to_batches()[0]
                rest = table.slice(batch_size)
                pending = rest.to_batches() if rest.num_rows else []
                pending_rows = rest.num_rows
                yield out
    if pending_rows:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def read_shard_table(
    shard_dir: str | Path, split: str, columns: list[str] | None = None
) -> pa.Table:
    """All of ``split`` as one table (small data and tests; training should stream)."""
    files = shard_files(shard_dir, split)
    if not files:
        return SHARD_SCHEMA.empty_table() if columns is None else SHARD_SCHEMA.empty_table().select(columns)
    return pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
