"""The filter stage, streaming over input shards with bounded memory.

1. **scan** each input shard in batches: per-row rules (:data:`ROW_RULES`, in order); the
   survivors (with their repaired caption) go to a scratch Parquet, their small dedup
   features stay in memory and their 32x32 thumbnails go to a raw scratch file. Shards are
   independent, so this runs in ``workers`` processes.
2. **dedup** the survivors of all shards, visited sorted by (candidate id, source file, row):
   the first of a group of copies is kept whatever order the shards were scanned in. With
   ``model_score`` set, the dedup survivors are then scored with that model
   (:mod:`brivl.filter.model_score`) and cut by threshold or top fraction.
3. **write** per input shard, streaming its scratch file, ``kept/part-NNNNN.parquet`` and
   ``rejected/part-NNNNN.parquet`` (every rejected row with the first rule it failed and
   why), then ``filter_report.json``.

Input: img2dataset Parquet output (only ``status == "success"`` rows are filter input; the
others were accounted for by the download stage), or any Parquet with an id (``candidate_id``
or ``key``), ``caption`` and image bytes (``jpg`` or ``image``); ``url`` and ``page_url`` are
optional.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from brivl.crawl.candidates import SOURCE_COLUMNS
from brivl.errors import SchemaError
from brivl.filter import model_score as scoring
from brivl.filter import text as textrules
from brivl.filter.config import RULES, FilterConfig
from brivl.filter.decontam import EvalImages, EvalOverlap
from brivl.filter.dedup import Candidate, Deduplicator, NearGraph
from brivl.filter.faces import FaceDetector, blur_boxes, boxes_json
from brivl.filter.image import THUMB_SIDE, ImageError, decode_small, phashes
from brivl.parquet_input import (
    BINARY,
    INTEGER,
    READ_ERRORS,
    STRING,
    Column,
    bad_file,
    bad_files_rows,
    open_inputs,
    resolve_columns,
)
from brivl.report import progress
from brivl.shard import eager_arrow_release

REPORT_NAME = "filter_report.json"
WORK_DIR = ".work"  # hidden: not a data file of the stage, removed when done
BATCH_ROWS = 256
ROW_GROUP_ROWS = 256
IMAGE_COLUMNS = ("jpg", "image")
ID_COLUMNS = ("candidate_id", "key")
THUMB_BYTES = THUMB_SIDE * THUMB_SIDE * 3

KEPT_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("jpg", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),  # of the stored bytes (after any face blur)
        ("page_url", pa.string()),
        ("source_sha256", pa.string()),  # of the downloaded bytes
        ("face_count", pa.int32()),  # faces found (null: face_policy "off")
        ("face_boxes", pa.string()),  # JSON [[x, y, w, h], ...] in the stored image's pixels
        ("licence", pa.string()),  # what the page declared (brivl.crawl.licence), as crawled
        ("licence_source", pa.string()),
        ("copyright", pa.string()),
        ("brivl_score", pa.float32()),  # image-caption cosine under filter.model_score (or null)
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("rule", pa.string()),
        ("detail", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
    ]
)
_SCRATCH_SCHEMA = KEPT_SCHEMA.append(pa.field("_row", pa.int64()))


@dataclass
class FilterResult:
    """Counts of one filter run (the same numbers as ``filter_report.json``)."""

    report: dict[str, Any]

    @property
    def row_counts(self) -> dict[str, int]:
        r = self.report
        return {
            "input": r["input_rows"],
            "kept": r["kept"],
            "rejected": r["rejected"],
            "not_success": r["not_success_rows"],
            "bad_input_files": len(r.get("bad_input_files", [])),
        }


def find_input_files(input_dir: str | Path) -> list[Path]:
    """The Parquet files the filter reads: ``input_dir/*.parquet`` sorted, or one file."""
    path = Path(input_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"filter input {path} does not exist")
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(
            f"{path}: no *.parquet files. The filter reads img2dataset output written with "
            "output_format='parquet', or Parquet files with columns (candidate_id or key, "
            "url, caption, jpg)"
        )
    return files


# the roles the filter reads, with the column types it accepts (checked before any row)
INPUT_COLUMNS = {
    "image": Column(IMAGE_COLUMNS, (BINARY,)),
    "caption": Column(("caption",)),
    "candidate_id": Column(("candidate_id",), (STRING, INTEGER), required=False),
    "key": Column(("key",), (STRING, INTEGER), required=False),
    "url": Column(("url",), required=False),
    "status": Column(("status",), required=False),
    "original_width": Column(("original_width",), (INTEGER,), required=False),
    "original_height": Column(("original_height",), (INTEGER,), required=False),
    "page_url": Column(("page_url",), required=False),
    **{name: Column((name,), required=False) for name in SOURCE_COLUMNS},
}


def input_columns(path: Path, schema: pa.Schema) -> dict[str, str | None]:
    """Which input column plays which role; a SchemaError naming the file and the column
    when a required one is missing or a column has a type the filter cannot read."""
    if not set(schema.names) & set(ID_COLUMNS):
        raise SchemaError(
            f"{path}: missing column(s) ['candidate_id or key']; found {sorted(schema.names)}. "
            "The filter reads img2dataset Parquet output or a Parquet of (candidate_id or key, "
            "url, caption, jpg)"
        )
    return resolve_columns(path, schema, INPUT_COLUMNS, "the filter")


def count_input_rows(handles: list[tuple[Path, pq.ParquetFile]]) -> int:
    return sum(handle.metadata.num_rows for _, handle in handles)


# --- 1. scan ---------------------------------------------------------------------------------
def _image_verdict(data: bytes | None, width: int | None, height: int | None, cfg: FilterConfig
                   ) -> tuple[str, str] | tuple[None, tuple[int, int, np.ndarray]]:
    """First failing image rule as ``(rule, detail)``, or ``(None, (width, height, small))``
    (``width``/``height`` the decoded size; the input's original size, when given, is what
    the size rules judge)."""
    try:
        decoded_w, decoded_h, small = decode_small(data, cfg.max_image_pixels)
    except ImageError as exc:
        return "undecodable", str(exc)
    width, height = width or decoded_w, height or decoded_h
    short, long_ = min(width, height), max(width, height)
    if short and long_ / short > cfg.max_aspect_ratio:
        return "aspect_ratio", f"{width}x{height}: aspect {long_ / short:.2f} > {cfg.max_aspect_ratio}"
    if short < cfg.min_image_side:
        return "image_too_small", f"{width}x{height}: shorter side {short} < {cfg.min_image_side}"
    return None, (decoded_w, decoded_h, small)


def _ident(value: Any, key: Any, source: str, index: int) -> str:
    for candidate in (value, key):
        if candidate not in (None, ""):
            return str(candidate)
    return f"{source}:{index}"


def scan_shard(
    path: str, shard: int, config: dict, work_dir: str, on_rows: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Apply the per-row rules to one input shard; write its scratch files; return its counts
    and the dedup candidates (small), or ``{"shard", "rows", "bad": BadFile}`` when the file
    cannot be read to its end (a corrupt page: the file is set aside, the others go on)."""
    try:
        return _scan_shard(path, shard, config, work_dir, on_rows)
    except READ_ERRORS as exc:
        return {"shard": shard, "rows": 0, "bad": bad_file(Path(path), exc)}


def _scan_shard(path: str, shard: int, config: dict, work_dir: str,
                on_rows: Callable[[int], None] | None) -> dict[str, Any]:
    cfg = FilterConfig.from_dict(config)
    eager_arrow_release()  # also in worker processes
    source = Path(path).name
    handle = pq.ParquetFile(path)
    roles = input_columns(Path(path), handle.schema_arrow)
    wanted = sorted({c for c in roles.values() if c})
    work = Path(work_dir)
    survivors = pq.ParquetWriter(work / f"pass-{shard:05d}.parquet", _SCRATCH_SCHEMA,
                                 **_parquet_options(_SCRATCH_SCHEMA.names, ("jpg",)))
    thumbs = open(work / f"thumbs-{shard:05d}.bin", "wb")  # 32x32x3 per survivor; closed below
    rejects: dict[str, list] = {name: [] for name in REJECTED_SCHEMA.names}
    by_rule = dict.fromkeys(RULES, 0)
    candidates: list[Candidate] = []
    hashes: list[np.ndarray] = []
    counts = {"input": 0, "not_success": 0}
    faces = _FaceStep(cfg)
    row_index = 0
    for batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=wanted, use_threads=False):
        n = batch.num_rows
        column = {role: (batch.column(name).to_pylist() if name else [None] * n)
                  for role, name in roles.items() if role not in _PASSED_THROUGH}
        keep = np.zeros(n, dtype=bool)
        kept: dict[str, list] = {name: [] for name in _COMPUTED}
        smalls: list[np.ndarray] = []
        for i, (status, image, caption, cid, key, url) in enumerate(zip(
                column["status"], column["image"], column["caption"], column["candidate_id"],
                column["key"], column["url"], strict=True)):
            index = row_index + i
            if status not in (None, "success"):
                counts["not_success"] += 1
                continue
            counts["input"] += 1
            ident = _ident(cid, key, source, index)
            rule, result = _image_verdict(image, column["original_width"][i],
                                          column["original_height"][i], cfg)
            if rule is None:
                width, height, small = result
                rule, result = textrules.verdict(caption, cfg)
            if rule is not None:
                by_rule[rule] += 1
                for name, value in zip(REJECTED_SCHEMA.names,
                                       (ident, key, url, rule, result, source, index), strict=True):
                    rejects[name].append(value)
                continue
            caption, caption_key = result
            boxes, stored, detail = faces.apply(image, width, height)
            if detail is not None:  # dropped for its faces, or it could not be searched
                by_rule["face"] += 1
                for name, value in zip(REJECTED_SCHEMA.names,
                                       (ident, key, url, "face", detail, source, index), strict=True):
                    rejects[name].append(value)
                continue
            digest = hashlib.sha256(image).digest()
            keep[i] = True
            for name, value in zip(_COMPUTED, (
                    ident, caption, width, height,
                    digest.hex() if stored is image else hashlib.sha256(stored).hexdigest(),
                    digest.hex(), faces.count(boxes), faces.boxes_column(boxes), stored, index),
                    strict=True):
                kept[name].append(value)
            candidates.append(Candidate((ident, source, index), ident, digest, _norm_url(url),
                                        caption_key))
            smalls.append(small)
        if smalls:
            stacked = np.stack(smalls)
            hashes.append(phashes(stacked))
            thumbs.write(stacked.tobytes())
        survivors.write_table(_survivor_table(batch, roles, keep, kept, faces.take_blurred()))
        row_index += n
        if on_rows:
            on_rows(n)
    survivors.close()
    pq.write_table(pa.table(rejects, schema=REJECTED_SCHEMA), work / f"rej-{shard:05d}.parquet")
    thumbs.close()
    return {"shard": shard, "source": source, "rows": row_index, **counts, "by_rule": by_rule,
            "faces": faces.counts, "candidates": candidates,
            "phashes": np.concatenate(hashes) if hashes else np.zeros((0, 3), np.uint64)}


class _FaceStep:
    """The face rule of one scan: detect (unless ``face_policy`` is "off"), blur, count."""

    def __init__(self, cfg: FilterConfig) -> None:
        self.policy = cfg.face_policy
        self.quality = cfg.face_blur_quality
        self.detector = None if self.policy == "off" else FaceDetector(
            cfg.face_detect_side, cfg.face_min_size, cfg.face_min_neighbors)
        self.counts = dict.fromkeys(FACE_COUNTS, 0)
        self._blurred = False

    def apply(self, image: bytes, width: int, height: int
              ) -> tuple[list, bytes, str | None]:
        """``(boxes, bytes to store, None)``, or a reject detail: faces under the "drop"
        policy, or an image the detector or the blur could not process (it is not kept
        unchecked)."""
        try:
            boxes = self.find(image, width, height)
            if boxes and self.policy == "drop":
                self.counts["dropped"] += 1
                return boxes, image, f"{len(boxes)} face(s) at {boxes_json(boxes)}"
            return boxes, self.blur(image, boxes), None
        except Exception as exc:  # noqa: BLE001 - a bad image is a row, not a failed run
            self.counts["unsearchable"] += 1
            return [], image, f"could not be searched for faces: {type(exc).__name__}: {exc}"

    def find(self, image: bytes, width: int, height: int) -> list:
        if self.detector is None:
            return []
        self.counts["searched"] += 1
        boxes = self.detector.boxes(image, width, height)
        if boxes:
            self.counts["images_with_faces"] += 1
            self.counts["faces"] += len(boxes)
        return boxes

    def blur(self, image: bytes, boxes: list) -> bytes:
        """The bytes to store: ``image`` itself, or a copy with the boxes blurred."""
        if not boxes or self.policy != "blur":
            return image
        blurred = blur_boxes(image, boxes, self.quality)
        self._blurred = True
        self.counts["blurred"] += 1
        return blurred

    def count(self, boxes: list) -> int | None:
        return None if self.detector is None else len(boxes)

    def boxes_column(self, boxes: list) -> str | None:
        return None if self.detector is None else boxes_json(boxes)

    def take_blurred(self) -> bool:
        """Whether a stored image of the batch since the last call was blurred."""
        blurred, self._blurred = self._blurred, False
        return blurred


# what the face rule counted: images searched, those with faces, faces, and per policy
FACE_COUNTS = ("searched", "images_with_faces", "faces", "blurred", "dropped", "unsearchable")
# kept columns computed per row, and those copied from the input batch as they are
_COMPUTED = ("candidate_id", "caption", "width", "height", "sha256", "source_sha256",
             "face_count", "face_boxes", "jpg", "_row")
_PASSED_THROUGH = ("page_url", *SOURCE_COLUMNS)


def _survivor_table(batch: pa.RecordBatch, roles: dict[str, str | None], keep: np.ndarray,
                    kept: dict[str, list], blurred: bool = False) -> pa.Table:
    """The scratch table of one batch's survivors: computed columns plus input columns
    filtered by ``keep`` (the image bytes are converted back from Python only when a face
    was blurred in the batch)."""
    mask = pa.array(keep)
    columns = {}
    for field in _SCRATCH_SCHEMA:
        name = {"jpg": "image"}.get(field.name, field.name)
        if field.name == "jpg" and not blurred:
            columns[field.name] = batch.column(roles["image"]).filter(mask).cast(field.type)
        elif field.name in kept:
            columns[field.name] = pa.array(kept[field.name], field.type)
        elif roles.get(name):
            columns[field.name] = batch.column(roles[name]).filter(mask).cast(field.type)
        else:
            columns[field.name] = pa.nulls(int(keep.sum()), field.type)
    return pa.table(columns, schema=_SCRATCH_SCHEMA)


def _norm_url(url: str | None) -> str | None:
    if not url:
        return None
    url = url.strip()
    return url.split("#", 1)[0] or None


# --- 2. dedup --------------------------------------------------------------------------------
def dedup(scans: list[dict], cfg: FilterConfig, work: Path, eval_images: EvalImages | None = None
          ) -> tuple[dict[int, dict[int, tuple]], dict[str, Any]]:
    """Dedup verdicts ``{shard: {local candidate index: (rule, detail)}}`` and what the
    evaluation-overlap check found (``eval_images`` are searched with the corpus)."""
    # thumbnails are read one at a time (only near-duplicate candidates need them): a memory
    # map would fault in its neighbours too, and RSS would grow with the corpus
    files = [os.open(work / f"thumbs-{s['shard']:05d}.bin", os.O_RDONLY) for s in scans]
    order = sorted(
        ((c.order, s, i) for s, scan in enumerate(scans) for i, c in enumerate(scan["candidates"])),
        key=lambda item: item[0],
    )
    where = [(s, i) for _, s, i in order]
    eval_images = eval_images if eval_images is not None and len(eval_images) else None
    graph = None
    if (cfg.near_dup_max_distance >= 0 or eval_images is not None) and where:
        hashes = np.stack([scans[s]["phashes"][i] for s, i in where])
        if eval_images is not None:  # searched together; eval rows are never fed or kept
            hashes = np.concatenate([hashes, eval_images.hashes])
        graph = NearGraph(hashes, max(cfg.near_dup_max_distance, 0))

    def thumb_of(pos: int) -> bytes:
        s, i = where[pos]
        return os.pread(files[s], THUMB_BYTES, i * THUMB_BYTES)

    overlap = (EvalOverlap(graph, len(where), eval_images, thumb_of, cfg.near_dup_max_pixel_diff)
               if eval_images is not None and graph is not None else None)
    near = graph if cfg.near_dup_max_distance >= 0 else None
    judge = Deduplicator(cfg, thumb_of, near, overlap.check if overlap else None)
    verdicts: dict[int, dict[int, tuple]] = {s: {} for s in range(len(scans))}
    try:
        for s, i in where:
            verdict = judge.feed(scans[s]["candidates"][i])
            if verdict is not None:
                verdicts[s][i] = verdict
    finally:
        for fd in files:
            os.close(fd)
    found = overlap.summary() if overlap else {
        "eval_images": len(eval_images) if eval_images is not None else 0,
        "per_set": dict(eval_images.per_set) if eval_images is not None else {},
        "found": 0, "found_per_set": {}}
    return verdicts, found


# --- 3. write --------------------------------------------------------------------------------
def write_outputs(scan: dict, verdicts: dict[int, tuple], work: Path, out: Path,
                  scores: np.ndarray | None = None) -> dict[str, int]:
    """Write one input shard's kept and rejected parts; return per-rule dedup counts.

    The scratch file of survivors is streamed one row group at a time (bounded memory);
    ``scores`` (one per survivor) fill the ``brivl_score`` column."""
    shard = scan["shard"]
    scratch = pq.ParquetFile(work / f"pass-{shard:05d}.parquet")
    rejected_mask = np.zeros(scratch.metadata.num_rows, dtype=bool)
    if verdicts:
        rejected_mask[list(verdicts)] = True
    kept_path = out / "kept" / f"part-{shard:05d}.parquet"
    kept_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = kept_path.with_name(f".{kept_path.name}.tmp")
    small_columns = ["candidate_id", "key", "url", "_row"]
    dropped_parts = []
    with pq.ParquetWriter(tmp, KEPT_SCHEMA, **_parquet_options(KEPT_SCHEMA.names, ("jpg",))) as kept:
        pending, offset = [], 0
        for batch in scratch.iter_batches(ROW_GROUP_ROWS, use_threads=False):
            drop = rejected_mask[offset:offset + batch.num_rows]
            table = pa.Table.from_batches([batch])
            if scores is not None:
                column = table.schema.get_field_index("brivl_score")
                table = table.set_column(column, "brivl_score", pa.array(
                    scores[offset:offset + batch.num_rows], pa.float32(), from_pandas=True))
            offset += batch.num_rows
            pending.append(table.filter(pa.array(~drop)))
            dropped_parts.append(table.select(small_columns).filter(pa.array(drop)))
            pending = _flush_full_groups(kept, pending)
        if pending:
            kept.write_table(pa.concat_tables(pending).drop_columns(["_row"]))
    tmp.replace(kept_path)
    dropped = (pa.concat_tables(dropped_parts) if dropped_parts
               else _SCRATCH_SCHEMA.empty_table().select(small_columns))
    locals_ = np.flatnonzero(rejected_mask)
    extra = pa.table(
        {
            "candidate_id": dropped.column("candidate_id"),
            "key": dropped.column("key"),
            "url": dropped.column("url"),
            "rule": pa.array([verdicts[i][0] for i in locals_], pa.string()),
            "detail": pa.array([verdicts[i][1] for i in locals_], pa.string()),
            "source": pa.array([scan["source"]] * len(locals_), pa.string()),
            "row": dropped.column("_row"),
        },
        schema=REJECTED_SCHEMA,
    )
    earlier = pq.read_table(work / f"rej-{shard:05d}.parquet", use_threads=False)
    rejected = pa.concat_tables([earlier, extra]).sort_by("row")
    _write(rejected, out / "rejected" / f"part-{shard:05d}.parquet")
    counts: dict[str, int] = {}
    for rule, _ in verdicts.values():
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def _flush_full_groups(writer: pq.ParquetWriter, pending: list[pa.Table]) -> list[pa.Table]:
    """Write whole ROW_GROUP_ROWS row groups out of ``pending``; return what is left."""
    rows = sum(t.num_rows for t in pending)
    if rows < ROW_GROUP_ROWS:
        return pending
    table = pa.concat_tables(pending)
    full = rows - rows % ROW_GROUP_ROWS
    writer.write_table(table.slice(0, full).drop_columns(["_row"]), row_group_size=ROW_GROUP_ROWS)
    return [table.slice(full)] if full < rows else []


def _write(table: pa.Table, path: Path, binary: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS,
                   **_parquet_options(table.column_names, binary))
    tmp.replace(path)


def _parquet_options(names: list[str], binary: tuple[str, ...]) -> dict[str, Any]:
    """Writer options: image bytes (already compressed) stored plain - no compression,
    dictionary or statistics - and everything else snappy with dictionaries."""
    other = [c for c in names if c not in binary]
    return {"compression": {c: ("none" if c in binary else "snappy") for c in names},
            "use_dictionary": other, "write_statistics": other}


# --- the stage -------------------------------------------------------------------------------
def run_filter(
    input_dir: str | Path,
    out_dir: str | Path,
    config: FilterConfig | dict | None = None,
    *,
    workers: int = 1,
    eval_images: EvalImages | None = None,
    scorer: Any = None,
) -> FilterResult:
    """Filter ``input_dir`` into ``out_dir`` (``kept/``, ``rejected/``, ``filter_report.json``).

    ``eval_images`` (:func:`brivl.filter.decontam.load_eval_images`): rows showing one of
    them are rejected as ``eval_overlap``. ``scorer``: the encoder of ``config.model_score``
    when the caller loaded it already (else it is loaded here, when set).

    Does not write ``_manifest.json`` (the stage task does, last). Rerunning on the same
    ``out_dir`` starts over and gives byte-identical files; ``workers`` only changes speed.
    """
    cfg = config if isinstance(config, FilterConfig) else FilterConfig.from_dict(config)
    eager_arrow_release()
    handles, bad = open_inputs(find_input_files(input_dir))  # unreadable files: set aside
    for path, handle in handles:  # fail fast, before any work, on a file of the wrong shape
        input_columns(path, handle.schema_arrow)
    out = Path(out_dir)
    work = _fresh_output(out)
    scans = _scan_all([p for p, _ in handles], cfg, work, workers, count_input_rows(handles))
    bad += [s["bad"] for s in scans if "bad" in s]  # a file that broke while being read
    scans = [s for s in scans if "bad" not in s]
    verdicts, overlap = dedup(scans, cfg, work, eval_images)
    scores, scored = score_survivors(scans, verdicts, cfg, work, scorer)
    by_rule = dict.fromkeys(RULES, 0)
    for scan in scans:
        for rule, n in scan["by_rule"].items():
            by_rule[rule] += n
    for scan in sorted(scans, key=lambda s: s["shard"]):
        for rule, n in write_outputs(scan, verdicts[scan["shard"]], work, out,
                                     scores.get(scan["shard"])).items():
            by_rule[rule] += n
    shutil.rmtree(work)
    report = _report(scans, verdicts, by_rule, cfg)
    report["bad_input_files"] = bad_files_rows(bad)
    report["eval_overlap"] = overlap
    report["model_score"] = scored
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True))
    return FilterResult(report)


def score_survivors(scans: list[dict], verdicts: dict[int, dict[int, tuple]], cfg: FilterConfig,
                    work: Path, scorer: Any = None) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """With ``cfg.model_score``: score every dedup survivor, add ``model_score`` verdicts
    for those under the cut; ``({shard: scores per scratch row}, report)``."""
    if not cfg.model_score:
        return {}, {"model": ""}
    encoder = scorer if scorer is not None else scoring.load_scorer(cfg.model_score)
    timer = scoring.Timer()
    scores = []
    total = sum(len(s["candidates"]) for s in scans)
    with progress("filter: model score", total) as advance, timer:
        for scan in scans:
            scores.append(scoring.score_scratch(work / f"pass-{scan['shard']:05d}.parquet",
                                                set(verdicts[scan["shard"]]), encoder,
                                                cfg.model_score_batch, advance))
    top = cfg.model_score_top_fraction
    rejected, cut = scoring.choose(scores, cfg.model_score_threshold, top)
    why = f"below the top {top:g} cut" if top is not None else "below the threshold"
    for scan, part, bad in zip(scans, scores, rejected, strict=True):
        for i in np.flatnonzero(bad):
            verdicts[scan["shard"]][int(i)] = (scoring.RULE,
                                               f"score {part[i]:.4f} {why} {cut:.4f}")
    small = {}

    def describe(f: int, i: int) -> dict[str, Any]:
        if f not in small:
            small[f] = pq.read_table(work / f"pass-{scans[f]['shard']:05d}.parquet",
                                     columns=["candidate_id", "url", "caption"]).to_pylist()
        return small[f][i]

    examples = scoring.near_cut(scores, rejected, cut, describe)
    mode = "top_fraction" if top is not None else "threshold"
    report = scoring.summary(cfg.model_score, str(getattr(encoder, "source", "")), scores,
                             rejected, cut, examples, timer.seconds, mode)
    return {scan["shard"]: part for scan, part in zip(scans, scores, strict=True)}, report


def _fresh_output(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "_manifest.json").unlink(missing_ok=True)
    (out / REPORT_NAME).unlink(missing_ok=True)
    for sub in ("kept", "rejected", WORK_DIR):
        shutil.rmtree(out / sub, ignore_errors=True)
    work = out / WORK_DIR
    work.mkdir()
    return work


def _scan_all(files: list[Path], cfg: FilterConfig, work: Path, workers: int, total: int
              ) -> list[dict]:
    config = cfg.to_dict()
    with progress("filter: per-row rules", total) as advance:
        if workers <= 1 or len(files) == 1:
            return [scan_shard(str(p), i, config, str(work), advance) for i, p in enumerate(files)]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(files)), context) as pool:
            futures = {
                pool.submit(scan_shard, str(p), i, config, str(work)): i
                for i, p in enumerate(files)
            }
            scans = []
            for future in concurrent.futures.as_completed(futures):
                scan = future.result()
                advance(scan["rows"])
                scans.append(scan)
    return sorted(scans, key=lambda s: s["shard"])


def _report(scans: list[dict], verdicts: dict, by_rule: dict[str, int], cfg: FilterConfig
            ) -> dict[str, Any]:
    per_file = []
    for scan in scans:
        rejected = sum(scan["by_rule"].values()) + len(verdicts[scan["shard"]])
        per_file.append({"source": scan["source"], "input": scan["input"],
                         "kept": scan["input"] - rejected, "rejected": rejected,
                         "not_success": scan["not_success"]})
    input_rows = sum(s["input"] for s in scans)
    rejected = sum(by_rule.values())
    faces = {name: sum(s["faces"][name] for s in scans) for name in FACE_COUNTS}
    return {
        "faces": {"policy": cfg.face_policy, **faces},  # rows searched, with faces, ...
        "input_files": len(scans),
        "input_rows": input_rows,
        "not_success_rows": sum(s["not_success"] for s in scans),
        "kept": input_rows - rejected,
        "rejected": rejected,
        "rules": list(RULES),
        "by_rule": by_rule,
        "files": per_file,
    }


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the closing table: input, one row per rule (in rule order), kept."""
    total = report["input_rows"] or 1
    rows = [{"outcome": "input rows", "rows": report["input_rows"], "share": 1.0}]
    for rule in report["rules"]:
        n = report["by_rule"].get(rule, 0)
        rows.append({"outcome": f"rejected: {rule}", "rows": n, "share": n / total})
    rows.append({"outcome": "kept", "rows": report["kept"], "share": report["kept"] / total})
    if report.get("not_success_rows"):
        rows.append({"outcome": "(not downloaded, not input)", "rows": report["not_success_rows"],
                     "share": ""})
    return rows

