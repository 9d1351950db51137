"""Retry a finished download's transient failures, keeping everything else.

img2dataset users rerun a download to pick up what failed for a passing reason (its issues
#62, #331, #452). :func:`retry_transient` does that for a finished download directory:
the rows whose failure :func:`brivl.download.reasons.retryable` calls passing (timeout,
connection error, 429, 5xx) are downloaded again - only those, robots.txt asked again -
into a scratch folder, and their answers replace the old rows in the shard files holding
them (same position, same img2dataset key). Successes and final failures (404, robots,
opt-outs, bad images) are neither fetched nor changed; shard files without a retried row
are not touched. The manifest is rewritten (same stage key; ``extra.retried`` names the
manifest it supersedes, what was retried and what it gave). Parquet output only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brivl import manifest
from brivl.crawl import candidates as cand
from brivl.download import reasons
from brivl.download.config import DownloadConfig
from brivl.download.guarded import HOST_STATS_GLOB
from brivl.download.politeness import merge_stats
from brivl.download.stage import (
    INPUT_FILE,
    REJECTED_DIR,
    STAGE,
    _rejected,
    aggregate_stats,
    guard_settings,
    precheck,
    run_img2dataset,
    shard_files,
    write_rejected,
)
from brivl.errors import InputError

RETRY_DIR = ".retry"  # hidden scratch: the retried rows' own img2dataset output


def retryable_rows(out_dir: Path) -> dict[str, Path]:
    """Candidate id -> shard file, for every row whose failure is worth another try."""
    found: dict[str, Path] = {}
    for path in shard_files(out_dir):
        table = pq.read_table(path, columns=["candidate_id", "status", "error_message"])
        for cid, status, message in zip(*(table[c].to_pylist() for c in table.column_names),
                                        strict=True):
            if status != "success" and reasons.retryable(reasons.reason_of(message)):
                found[cid] = path
    return found


def retry_transient(out_dir: str | Path, candidates_dir: str | Path, config: DownloadConfig
                    ) -> dict[str, Any] | None:
    """Retry the transient failures of the finished download in ``out_dir``; return its new
    manifest, or ``None`` when no row is worth retrying (nothing changes)."""
    out_dir = Path(out_dir)
    old = manifest.read_manifest(out_dir)
    if old["stage"] != STAGE:
        raise InputError(f"{out_dir}: a {old['stage']!r} stage directory, not a download")
    if config.output_format != "parquet":
        raise InputError(f"download.output_format {config.output_format!r}: retrying rows "
                         "needs output_format 'parquet'")
    targets = retryable_rows(out_dir)
    if not targets:
        return None
    table = cand.read_candidates(candidates_dir)
    subset = table.filter(pc.is_in(table["candidate_id"], value_set=pa.array(sorted(targets))))
    to_download, _, robots_seen = precheck(subset, config)  # rows robots now forbid: kept as were
    work = out_dir / RETRY_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        new_rows = _download(to_download, work, config, robots_seen)
        replaced = _merge(new_rows, targets)
        hosts = merge_stats(work.glob(HOST_STATS_GLOB))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _rewrite_manifest(out_dir, old, new_rows, replaced, hosts)


def _download(to_download: pa.Table, work: Path, config: DownloadConfig,
              robots_seen: dict[str, tuple[int, str]]) -> pa.Table:
    if not to_download.num_rows:
        return pa.table({"candidate_id": pa.array([], pa.string())})
    pq.write_table(to_download, work / INPUT_FILE)
    run_img2dataset(work / INPUT_FILE, work, config, guard_settings(config, robots_seen, work))
    parts = [pq.read_table(p) for p in shard_files(work)]
    return pa.concat_tables(parts, promote_options="permissive") if parts else pa.table(
        {"candidate_id": pa.array([], pa.string())})


def _merge(new_rows: pa.Table, targets: dict[str, Path]) -> int:
    """Put each retried row's answer where its old row was; returns rows replaced."""
    index = {cid: i for i, cid in enumerate(new_rows["candidate_id"].to_pylist())}
    replaced = 0
    for path in sorted(set(targets.values())):
        old = pq.read_table(path)
        ids = old["candidate_id"].to_pylist()
        positions = [i for i, cid in enumerate(ids) if targets.get(cid) == path and cid in index]
        if not positions:
            continue
        fresh = new_rows.take([index[ids[i]] for i in positions])
        both = pa.concat_tables([old, fresh.select([c for c in old.column_names
                                                    if c in fresh.column_names])],
                                promote_options="permissive")
        order = list(range(len(ids)))
        for j, i in enumerate(positions):
            order[i] = len(ids) + j
        merged = both.take(order)
        if "key" in merged.column_names:  # img2dataset's key is the row's place in its shard
            merged = merged.set_column(merged.schema.get_field_index("key"), "key", old["key"])
        tmp = path.with_name(f".{path.name}.retry")
        pq.write_table(merged, tmp)
        os.replace(tmp, path)
        _rewrite_stats(path, merged)
        replaced += len(positions)
    return replaced


def _rewrite_stats(shard: Path, table: pa.Table) -> None:
    """The shard's ``_stats.json`` counts, recounted from its rows (other fields kept)."""
    stats_path = shard.with_name(f"{shard.stem}_stats.json")
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    status = table["status"].to_pylist()
    messages = table["error_message"].to_pylist()
    stats.update({
        "count": len(status),
        "successes": status.count("success"),
        "failed_to_download": status.count("failed_to_download"),
        "failed_to_resize": status.count("failed_to_resize"),
        "status_dict": dict(Counter("success" if s == "success" else m
                                    for s, m in zip(status, messages, strict=True))),
    })
    stats_path.write_text(json.dumps(stats, indent=4))


def _rewrite_manifest(out_dir: Path, old: dict[str, Any], new_rows: pa.Table, replaced: int,
                      hosts: dict[str, Any]) -> dict[str, Any]:
    retried = set(new_rows["candidate_id"].to_pylist())
    earlier = pq.read_table(out_dir / REJECTED_DIR / "part-00000.parquet").to_pylist()
    rejected = [r for r in earlier if r["candidate_id"] not in retried]
    recovered, still = 0, Counter()
    for row in new_rows.to_pylist():
        if row.get("status") == "success":
            recovered += 1
        else:
            reason = reasons.reason_of(row.get("error_message"))
            still[reason] += 1
            rejected.append(_rejected(row, reason, row.get("error_message")))
    write_rejected(rejected, out_dir)
    by_reason = Counter(r["reason"] for r in rejected)
    counts = {k: v for k, v in old["row_counts"].items() if not k.startswith("rejected")}
    counts.update({"downloaded": old["row_counts"]["downloaded"] + recovered,
                   "rejected": len(rejected),
                   **{f"rejected:{k}": v for k, v in sorted(by_reason.items())}})
    if counts["candidates"] != counts["downloaded"] + counts["rejected"]:
        raise RuntimeError(f"{out_dir}: download accounting does not add up after the retry: "
                           f"{counts}")
    extra = dict(old.get("extra", {}))
    extra.update({
        "img2dataset": aggregate_stats(out_dir),
        "rejected_by_reason": dict(by_reason),
        "transient_rejections": {k: v for k, v in sorted(by_reason.items())
                                 if k in reasons.TRANSIENT},
        "retried": {"supersedes": old["hash"], "rows": len(retried), "replaced": replaced,
                    "recovered": recovered, "still_failing": dict(still), "hosts": hosts,
                    "earlier": extra.get("retried")},
    })
    return manifest.write_manifest(
        out_dir, stage=old["stage"], config=old.get("config"), inputs=old.get("inputs", []),
        code_version=old.get("code_version", ""), row_counts=counts, extra=extra)
