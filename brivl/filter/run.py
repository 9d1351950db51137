"""The filter stage, streaming over input shards with bounded memory.

1. **scan** each input shard in batches: per-row rules (:data:`ROW_RULES`, in order); the
   survivors (with their repaired caption) go to a scratch Parquet, their small dedup
   features stay in memory and their 32x32 thumbnails go to a scratch ``.npy``. Shards are
   independent, so this runs in ``workers`` processes.
2. **dedup** the survivors of all shards, visited sorted by (candidate id, source file, row):
   the first of a group of copies is kept whatever order the shards were scanned in.
3. **write** per input shard ``kept/part-NNNNN.parquet`` and ``rejected/part-NNNNN.parquet``
   (every rejected row with the first rule it failed and why), then ``filter_report.json``.

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
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from brivl.filter import text as textrules
from brivl.filter.config import RULES, FilterConfig
from brivl.filter.dedup import Candidate, Deduplicator
from brivl.filter.image import THUMB_SIDE, ImageError, inspect
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
        ("sha256", pa.string()),
        ("page_url", pa.string()),
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


def input_columns(path: Path, schema: pa.Schema) -> dict[str, str | None]:
    """Which input column plays which role; a clear error when required ones are missing."""
    names = set(schema.names)
    image = next((c for c in IMAGE_COLUMNS if c in names), None)
    missing = []
    if image is None:
        missing.append("jpg (or image): encoded image bytes")
    if "caption" not in names:
        missing.append("caption")
    if not names & set(ID_COLUMNS):
        missing.append("candidate_id or key")
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found {sorted(names)}. The filter reads "
            "img2dataset Parquet output or a Parquet of (candidate_id or key, url, caption, jpg)"
        )
    optional = ("candidate_id", "key", "url", "status", "original_width", "original_height",
                "page_url")
    roles: dict[str, str | None] = {c: (c if c in names else None) for c in optional}
    roles["image"] = image
    roles["caption"] = "caption"
    return roles


def count_input_rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# --- 1. scan ---------------------------------------------------------------------------------
def _row_verdict(row: dict, cfg: FilterConfig) -> tuple[str, str] | tuple[None, Any]:
    """First failing per-row rule as ``(rule, detail)``, or ``(None, (features, caption))``."""
    try:
        feats = inspect(row["image"], cfg.max_image_pixels)
    except ImageError as exc:
        return "undecodable", str(exc)
    width = row.get("original_width") or feats.width
    height = row.get("original_height") or feats.height
    short, long_ = min(width, height), max(width, height)
    if short and long_ / short > cfg.max_aspect_ratio:
        return "aspect_ratio", f"{width}x{height}: aspect {long_ / short:.2f} > {cfg.max_aspect_ratio}"
    if short < cfg.min_image_side:
        return "image_too_small", f"{width}x{height}: shorter side {short} < {cfg.min_image_side}"
    caption = textrules.repair(row["caption"], cfg.repair_text)
    tokens = textrules.words(caption)
    if len(caption) < cfg.min_caption_chars or len(tokens) < cfg.min_caption_words:
        return "caption_too_short", (
            f"{len(caption)} chars, {len(tokens)} words; need >= {cfg.min_caption_chars} chars "
            f"and >= {cfg.min_caption_words} words"
        )
    if len(caption) > cfg.max_caption_chars or len(tokens) > cfg.max_caption_words:
        return "caption_too_long", (
            f"{len(caption)} chars, {len(tokens)} words; allowed <= {cfg.max_caption_chars} "
            f"chars and <= {cfg.max_caption_words} words"
        )
    blocked = textrules.blocklist_pattern(tuple(cfg.blocklist))
    if blocked is not None and (match := blocked.search(caption)):
        return "blocklist", f"blocklisted {match.group(0).lower()!r}"
    spam = textrules.spam_reason(caption, tokens, cfg)
    if spam:
        return "spam", spam
    if cfg.languages:
        lang = textrules.detect_language(caption)
        if lang not in cfg.languages and not (lang == "und" and cfg.allow_undetermined_language):
            return "language", f"detected {lang!r}; allowed {cfg.languages}"
    return None, (feats, caption)


def _ident(row: dict, source: str, index: int) -> str:
    for column in ID_COLUMNS:
        value = row.get(column)
        if value not in (None, ""):
            return str(value)
    return f"{source}:{index}"


def scan_shard(
    path: str, shard: int, config: dict, work_dir: str, on_rows: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Apply the per-row rules to one input shard; write its scratch files; return its counts
    and the dedup candidates (small)."""
    cfg = FilterConfig.from_dict(config)
    eager_arrow_release()  # also in worker processes
    source = Path(path).name
    handle = pq.ParquetFile(path)
    roles = input_columns(Path(path), handle.schema_arrow)
    wanted = sorted({c for c in roles.values() if c})
    work = Path(work_dir)
    survivors = pq.ParquetWriter(work / f"pass-{shard:05d}.parquet", _SCRATCH_SCHEMA)
    rejects: dict[str, list] = {name: [] for name in REJECTED_SCHEMA.names}
    by_rule = dict.fromkeys(RULES, 0)
    candidates: list[Candidate] = []
    thumbs: list[bytes] = []
    counts = {"input": 0, "not_success": 0}
    row_index = 0
    for batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
        columns = {role: batch.column(name).to_pylist() for role, name in roles.items() if name}
        kept: dict[str, list] = {name: [] for name in _SCRATCH_SCHEMA.names}
        for i in range(batch.num_rows):
            row = {role: values[i] for role, values in columns.items()}
            index = row_index + i
            if row.get("status") not in (None, "success"):
                counts["not_success"] += 1
                continue
            counts["input"] += 1
            ident = _ident(row, source, index)
            rule, result = _row_verdict(row, cfg)
            if rule is not None:
                by_rule[rule] += 1
                for name, value in (("candidate_id", ident), ("key", row.get("key")),
                                    ("url", row.get("url")), ("rule", rule), ("detail", result),
                                    ("source", source), ("row", index)):
                    rejects[name].append(value)
                continue
            feats, caption = result
            digest = hashlib.sha256(row["image"]).digest()
            for name, value in (("candidate_id", ident), ("key", row.get("key")),
                                ("url", row.get("url")), ("caption", caption),
                                ("jpg", row["image"]), ("width", feats.width),
                                ("height", feats.height), ("sha256", digest.hex()),
                                ("page_url", row.get("page_url")), ("_row", index)):
                kept[name].append(value)
            candidates.append(
                Candidate(
                    order=(ident, source, index),
                    ident=ident,
                    sha256=digest,
                    phash=feats.phash,
                    url=_norm_url(row.get("url")),
                    caption_key=textrules.caption_key(caption),
                )
            )
            thumbs.append(feats.thumb)
        survivors.write_table(pa.table(kept, schema=_SCRATCH_SCHEMA))
        row_index += batch.num_rows
        if on_rows:
            on_rows(batch.num_rows)
    survivors.close()
    pq.write_table(pa.table(rejects, schema=REJECTED_SCHEMA), work / f"rej-{shard:05d}.parquet")
    thumb_array = np.frombuffer(b"".join(thumbs), np.uint8).reshape(len(thumbs), THUMB_BYTES)
    np.save(work / f"thumbs-{shard:05d}.npy", thumb_array)
    return {"shard": shard, "source": source, "rows": row_index, **counts, "by_rule": by_rule,
            "candidates": candidates}


def _norm_url(url: str | None) -> str | None:
    if not url:
        return None
    url = url.strip()
    return url.split("#", 1)[0] or None


# --- 2. dedup --------------------------------------------------------------------------------
def dedup(scans: list[dict], cfg: FilterConfig, work: Path) -> dict[int, dict[int, tuple]]:
    """Dedup verdicts: ``{shard: {local candidate index: (rule, detail)}}``."""
    thumbs = [np.load(work / f"thumbs-{s['shard']:05d}.npy", mmap_mode="r") for s in scans]
    order = sorted(
        ((c.order, s, i) for s, scan in enumerate(scans) for i, c in enumerate(scan["candidates"])),
        key=lambda item: item[0],
    )
    where = [(s, i) for _, s, i in order]

    def thumb_of(pos: int) -> bytes:
        s, i = where[pos]
        return thumbs[s][i].tobytes()

    judge = Deduplicator(cfg, thumb_of, expected_size=len(order))
    verdicts: dict[int, dict[int, tuple]] = {s: {} for s in range(len(scans))}
    for _, s, i in order:
        verdict = judge.feed(scans[s]["candidates"][i])
        if verdict is not None:
            verdicts[s][i] = verdict
    return verdicts


# --- 3. write --------------------------------------------------------------------------------
def write_outputs(scan: dict, verdicts: dict[int, tuple], work: Path, out: Path) -> dict[str, int]:
    """Write one input shard's kept and rejected parts; return per-rule dedup counts."""
    shard = scan["shard"]
    table = pq.read_table(work / f"pass-{shard:05d}.parquet")
    rejected_mask = np.zeros(table.num_rows, dtype=bool)
    if verdicts:
        rejected_mask[list(verdicts)] = True
    kept = table.filter(pa.array(~rejected_mask)).drop_columns(["_row"])
    _write(kept, out / "kept" / f"part-{shard:05d}.parquet", binary=("jpg",))
    dropped = table.filter(pa.array(rejected_mask))
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
    rejected = pa.concat_tables([pq.read_table(work / f"rej-{shard:05d}.parquet"), extra])
    rejected = rejected.sort_by("row")
    _write(rejected, out / "rejected" / f"part-{shard:05d}.parquet")
    counts: dict[str, int] = {}
    for rule, _ in verdicts.values():
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def _write(table: pa.Table, path: Path, binary: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    other = [c for c in table.column_names if c not in binary]
    pq.write_table(
        table,
        tmp,
        row_group_size=ROW_GROUP_ROWS,
        compression={c: ("none" if c in binary else "snappy") for c in table.column_names},
        use_dictionary=other,
        write_statistics=other,
    )
    tmp.replace(path)


# --- the stage -------------------------------------------------------------------------------
def run_filter(
    input_dir: str | Path,
    out_dir: str | Path,
    config: FilterConfig | dict | None = None,
    *,
    workers: int = 1,
) -> FilterResult:
    """Filter ``input_dir`` into ``out_dir`` (``kept/``, ``rejected/``, ``filter_report.json``).

    Does not write ``_manifest.json`` (the stage task does, last). Rerunning on the same
    ``out_dir`` starts over and gives byte-identical files; ``workers`` only changes speed.
    """
    cfg = config if isinstance(config, FilterConfig) else FilterConfig.from_dict(config)
    eager_arrow_release()
    files = find_input_files(input_dir)
    for path in files:  # fail fast, before any work, on a file of the wrong shape
        input_columns(path, pq.ParquetFile(path).schema_arrow)
    out = Path(out_dir)
    work = _fresh_output(out)
    scans = _scan_all(files, cfg, work, workers)
    verdicts = dedup(scans, cfg, work)
    by_rule = dict.fromkeys(RULES, 0)
    for scan in scans:
        for rule, n in scan["by_rule"].items():
            by_rule[rule] += n
    for scan in sorted(scans, key=lambda s: s["shard"]):
        for rule, n in write_outputs(scan, verdicts[scan["shard"]], work, out).items():
            by_rule[rule] += n
    shutil.rmtree(work)
    report = _report(scans, verdicts, by_rule)
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True))
    return FilterResult(report)


def _fresh_output(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "_manifest.json").unlink(missing_ok=True)
    (out / REPORT_NAME).unlink(missing_ok=True)
    for sub in ("kept", "rejected", WORK_DIR):
        shutil.rmtree(out / sub, ignore_errors=True)
    work = out / WORK_DIR
    work.mkdir()
    return work


def _scan_all(files: list[Path], cfg: FilterConfig, work: Path, workers: int) -> list[dict]:
    config = cfg.to_dict()
    total = count_input_rows(files)
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


def _report(scans: list[dict], verdicts: dict, by_rule: dict[str, int]) -> dict[str, Any]:
    per_file = []
    for scan in scans:
        rejected = sum(scan["by_rule"].values()) + len(verdicts[scan["shard"]])
        per_file.append({"source": scan["source"], "input": scan["input"],
                         "kept": scan["input"] - rejected, "rejected": rejected,
                         "not_success": scan["not_success"]})
    input_rows = sum(s["input"] for s in scans)
    rejected = sum(by_rule.values())
    return {
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

