"""The download stage: allowed crawl candidates → img2dataset shards + rejected rows.

Layout of the output directory::

    00000.parquet, 00000_stats.json, ...   img2dataset's shards (one row per attempted
                                           candidate; ``status == "success"`` rows hold
                                           the image) and its per-shard stats
    rejected/part-00000.parquet            every candidate not downloaded, with a reason
    _manifest.json                         written last

Every candidate is either downloaded or rejected, so ``candidates == downloaded +
rejected``. The stage resumes: rerun with the same ``out_dir`` after a kill and img2dataset
(``incremental_mode="incremental"``) skips the shards whose stats file exists.

Transient rejections (``reasons.TRANSIENT``: robots.txt could not be fetched) are counted
in the manifest's ``extra.transient_rejections``; such an output is complete but not final,
and a rerun into the same ``out_dir`` asks robots.txt again: shards holding transient rows
are redone, and when the set of candidates to download changed (a site is back), the
img2dataset output is redone as a whole (its shards are positions in that set).
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brivl import manifest
from brivl.crawl import candidates as cand
from brivl.crawl.fetch import Fetcher
from brivl.crawl.forward import active_forwards
from brivl.crawl.guard import AddressGuard
from brivl.crawl.robots import ALLOWED, UNAVAILABLE, RobotsCache
from brivl.download import reasons
from brivl.download.config import DownloadConfig
from brivl.download.guarded import HOST_STATS_GLOB, GuardSettings, guarded_img2dataset
from brivl.download.politeness import Politeness, merge_stats
from brivl.fingerprint import stable_hash
from brivl.parquet_input import BadFile, bad_files_rows

STAGE = "download"
REJECTED_DIR = "rejected"
INPUT_FILE = ".img2dataset_input.parquet"  # hidden: scratch, removed when the stage is done
IDENTITY_FILE = ".download_identity"  # hidden: which candidates + config this directory holds
PLAN_FILE = ".download_plan"  # hidden: which candidate ids (in order) img2dataset was given
REJECTED_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("image_url", pa.string()),
        ("page_url", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
ROBOTS_USER_AGENT = "brivl-crawler/0.1 (+https://github.com/brivl/brivl)"


def precheck(
    table: pa.Table, config: DownloadConfig
) -> tuple[pa.Table, list[dict[str, Any]], dict[str, tuple[int, str]]]:
    """Split candidates into (to download, rejected rows, robots.txt seen by origin).

    A candidate is downloaded only when the crawl allowed it and, at download time, its
    address passes the SSRF guard and (if ``recheck_robots``) robots.txt still allows it.
    """
    guard = AddressGuard(config.allow_cidrs)
    fetcher = Fetcher(guard, ROBOTS_USER_AGENT, timeout_s=config.timeout_s)
    robots = RobotsCache(fetcher.fetch_robots, config.robots_token)
    rows = table.to_pylist()
    keep, rejected = [], []
    for row in rows:
        reason, detail = row["decision"], "crawl decision"
        if not row["image_url"]:
            reason, detail = reasons.NO_URL, "the candidates row has no image_url"
        elif reason == cand.ALLOWED:
            if not guard.is_allowed(row["image_url"]):
                reason, detail = reasons.SSRF_BLOCKED, "address refused at download time"
            elif config.recheck_robots:
                reason, detail = _robots_reason(robots.decision(row["image_url"]))
        if reason == cand.ALLOWED:
            keep.append(row)
        else:
            rejected.append(_rejected(row, reason, detail))
    seen = {k: (v.status, v.text) for k, v in robots.snapshot().items()}
    columns = ["candidate_id", "image_url", "page_url", "caption", *cand.SOURCE_COLUMNS]
    to_download = pa.Table.from_pylist(
        [{c: r.get(c) for c in columns} for r in keep],  # an older crawl has no licence columns
        schema=pa.schema([(c, pa.string()) for c in columns]),
    )
    return to_download, rejected, seen


def _robots_reason(decision: str) -> tuple[str, str]:
    if decision == ALLOWED:
        return cand.ALLOWED, ""
    if decision == UNAVAILABLE:
        return reasons.ROBOTS_UNAVAILABLE, "robots.txt could not be fetched (a rerun asks again)"
    return reasons.ROBOTS_DISALLOWED, "robots.txt at download time"


def _rejected(row: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    return {
        "candidate_id": row["candidate_id"],
        "image_url": row.get("image_url") or row.get("url"),
        "page_url": row["page_url"],
        "reason": reason,
        "detail": (detail or "")[:500],
    }


def run_img2dataset(
    input_file: Path,
    out_dir: Path,
    config: DownloadConfig,
    settings: GuardSettings,
    on_shard: Callable[[int], None] | None = None,
) -> None:
    """Call the real ``img2dataset.download`` on ``input_file`` (guarded)."""
    import img2dataset

    watcher = _ShardWatcher(out_dir, on_shard) if on_shard else None
    with guarded_img2dataset(settings):
        try:
            if watcher:
                watcher.start()
            img2dataset.download(
                url_list=str(input_file),
                input_format="parquet",
                url_col="image_url",
                caption_col="caption",
                save_additional_columns=["candidate_id", "page_url", *cand.SOURCE_COLUMNS],
                output_folder=str(out_dir),
                output_format=config.output_format,
                image_size=config.image_size,
                resize_mode=config.resize_mode,
                resize_only_if_bigger=config.resize_only_if_bigger,
                encode_format=config.encode_format,
                encode_quality=config.encode_quality,
                timeout=config.timeout_s,
                retries=config.retries,
                processes_count=config.processes_count,
                thread_count=config.thread_count,
                number_sample_per_shard=config.number_sample_per_shard,
                distributor=config.distributor,
                incremental_mode=config.incremental_mode,
                user_agent_token=config.robots_token,
                disallowed_header_directives=list(config.disallowed_header_directives),
                min_image_size=config.min_image_size,
                max_image_area=config.max_image_pixels,  # after decoding: defence in depth
                compute_hash=config.compute_hash,
                extract_exif=False,
                enable_wandb=False,
            )
        finally:
            if watcher:
                watcher.stop()


class _ShardWatcher(threading.Thread):
    """Reports finished shards (their ``*_stats.json`` appearing) for a progress bar."""

    def __init__(self, out_dir: Path, on_shard: Callable[[int], None]) -> None:
        super().__init__(daemon=True)
        self.out_dir, self.on_shard = out_dir, on_shard
        self._stop_event = threading.Event()
        self._seen: set[str] = set()

    def poll(self) -> None:
        for path in self.out_dir.glob("*_stats.json"):
            if path.name not in self._seen:
                self._seen.add(path.name)
                self.on_shard(1)

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.poll()


def shard_files(out_dir: Path) -> list[Path]:
    """img2dataset's per-shard metadata parquet files (``00000.parquet``, ...)."""
    return sorted(p for p in out_dir.glob("[0-9]*.parquet"))


def collect_results(
    out_dir: Path, attempted: pa.Table
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """(downloaded count, rejected rows, aggregated img2dataset stats) after the download."""
    seen: set[str] = set()
    downloaded = 0
    rejected: list[dict[str, Any]] = []
    for path in shard_files(out_dir):
        table = pq.read_table(
            path, columns=["candidate_id", "url", "page_url", "status", "error_message"]
        )
        ok = pc.equal(table["status"], "success")
        downloaded += pc.sum(ok).as_py() or 0
        seen.update(table["candidate_id"].to_pylist())
        for row in table.filter(pc.invert(ok)).to_pylist():
            reason = reasons.reason_of(row["error_message"])
            rejected.append(_rejected(row, reason, row["error_message"]))
    for row in attempted.to_pylist():
        if row["candidate_id"] not in seen:
            rejected.append(_rejected(row, reasons.MISSING, "shard failed; rerun to retry"))
    return downloaded, rejected, aggregate_stats(out_dir)


def aggregate_stats(out_dir: Path) -> dict[str, Any]:
    """img2dataset's ``*_stats.json`` per shard, and their totals."""
    import json

    shards = {}
    totals: Counter[str] = Counter()
    status: Counter[str] = Counter()
    for path in sorted(out_dir.glob("*_stats.json")):
        stats = json.loads(path.read_text())
        shards[path.name.split("_")[0]] = stats
        for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[key] += int(stats.get(key, 0))
        status.update(stats.get("status_dict", {}))
    return {"shards": shards, "totals": dict(totals), "status_dict": dict(status)}


def write_rejected(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    target = out_dir / REJECTED_DIR
    target.mkdir(parents=True, exist_ok=True)
    path = target / "part-00000.parquet"
    rows = sorted(rows, key=lambda r: r["candidate_id"])
    pq.write_table(pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA), path)
    return path


def claim_out_dir(out_dir: Path, candidates_dir: str | Path, config: DownloadConfig) -> None:
    """Make ``out_dir`` this download's: new, or holding a (partial) run of the same
    candidates and config, which is then resumed. Anything else is refused: resuming
    img2dataset shards of other inputs would mix them into this output."""
    identity = stable_hash(
        {"candidates": manifest.read_manifest(candidates_dir)["hash"], "config": config.to_dict()}
    )
    marker = out_dir / IDENTITY_FILE
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not marker.is_file() or marker.read_text().strip() != identity:
            raise FileExistsError(
                f"{out_dir} is not empty and holds no download of these candidates with this "
                "config; give an empty or new directory"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(identity)
    # a manifest here is from an earlier run: img2dataset would misread it as shard stats
    (out_dir / manifest.MANIFEST_NAME).unlink(missing_ok=True)


def _shard_paths(out_dir: Path, shard: str) -> list[Path]:
    """img2dataset's files of one shard: ``00000.parquet``, ``00000_stats.json``, ..."""
    return [
        p for p in out_dir.iterdir() if p.name == shard or p.name.startswith((shard + ".", shard + "_"))
    ]


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _has_transient_rows(shard_file: Path) -> bool:
    try:
        messages = pq.read_table(shard_file, columns=["error_message"])["error_message"]
    except Exception:  # noqa: BLE001 - an unreadable shard is redone as well
        return True
    return any(reasons.reason_of(m) in reasons.TRANSIENT for m in messages.to_pylist() if m)


def prepare_shards(out_dir: Path, plan: pa.Table) -> None:
    """Keep only the img2dataset shards a resume may skip: all of them go when the plan
    (candidate ids in order) differs from the one they were made for, and a shard holding
    a transient failure goes so that it is tried again."""
    plan_id = stable_hash(plan["candidate_id"].to_pylist())
    marker = out_dir / PLAN_FILE
    if marker.is_file() and marker.read_text().strip() != plan_id:
        shards = {p.name[:5] for p in out_dir.iterdir() if p.name[:5].isdigit()}
        _remove([p for s in sorted(shards) for p in _shard_paths(out_dir, s)])
    for shard_file in shard_files(out_dir):
        if _has_transient_rows(shard_file):
            _remove(_shard_paths(out_dir, shard_file.stem))
    marker.write_text(plan_id)


def run_download(
    candidates_dir: str | Path,
    config: DownloadConfig,
    out_dir: str | Path,
    *,
    inputs: Sequence[str] | None = None,
    code_version: str = "",
    on_shard: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Download a crawl stage's candidates into ``out_dir``; return the manifest.

    ``on_plan(n_shards)`` is called once the number of shards is known, ``on_shard(1)``
    as each shard finishes (for progress bars).
    """
    out_dir = Path(out_dir)
    claim_out_dir(out_dir, candidates_dir, config)
    bad_files: list[BadFile] = []  # unreadable candidates parts: recorded, the rest goes on
    table = cand.read_candidates(candidates_dir, bad_files=bad_files)
    to_download, rejected, robots_seen = precheck(table, config)
    prepare_shards(out_dir, to_download)
    for stale in out_dir.glob(HOST_STATS_GLOB):  # per-host stats: this run's
        stale.unlink()
    if on_plan:
        on_plan(-(-to_download.num_rows // config.number_sample_per_shard))
    if to_download.num_rows:
        input_file = out_dir / INPUT_FILE
        pq.write_table(to_download, input_file)
        settings = guard_settings(config, robots_seen, out_dir)
        run_img2dataset(input_file, out_dir, config, settings, on_shard)
        downloaded, failed, stats = collect_results(out_dir, to_download)
        input_file.unlink()
    else:
        downloaded, failed, stats = 0, [], aggregate_stats(out_dir)
    rejected += failed
    by_reason = Counter(r["reason"] for r in rejected)
    write_rejected(rejected, out_dir)
    counts = {
        "candidates": table.num_rows,
        "attempted": to_download.num_rows,
        "downloaded": downloaded,
        "rejected": len(rejected),
        **{f"rejected:{k}": v for k, v in sorted(by_reason.items())},
        "bad_input_files": len(bad_files),
    }
    if counts["candidates"] != downloaded + len(rejected):
        raise RuntimeError(f"{out_dir}: download accounting does not add up: {counts}")
    transient = {k: v for k, v in sorted(by_reason.items()) if k in reasons.TRANSIENT}
    return manifest.write_manifest(
        out_dir,
        stage=STAGE,
        config=config.to_dict(),
        inputs=list(inputs if inputs is not None else [str(candidates_dir)]),
        code_version=code_version,
        row_counts=counts,
        extra={
            "img2dataset": stats,
            "rejected_by_reason": dict(by_reason),
            "transient_rejections": transient,
            "bad_input_files": bad_files_rows(bad_files),
            "hosts": merge_stats(out_dir.glob(HOST_STATS_GLOB)),
        },
    )


def guard_settings(config: DownloadConfig, robots_seen: dict[str, tuple[int, str]],
                   stats_dir: Path) -> GuardSettings:
    """What every img2dataset worker's guarded opener is given."""
    return GuardSettings(
        allow_cidrs=config.allow_cidrs,
        robots_token=config.robots_token,
        robots_user_agent=ROBOTS_USER_AGENT,
        robots=robots_seen,
        max_image_pixels=config.max_image_pixels,
        sniff_images=config.sniff_images,
        timeout_s=config.timeout_s,
        max_image_bytes=config.max_image_bytes,
        forwards=active_forwards(),  # the demo web's live port, if it is not the canonical one
        politeness=politeness_of(config),
        stats_dir=str(stats_dir),
    )


def politeness_of(config: DownloadConfig) -> Politeness:
    """Each worker process's share of the per-host caps."""
    processes = config.processes_count if config.distributor == "multiprocessing" else 1
    return Politeness(concurrency=max(1, config.per_host_concurrency // processes),
                      rate=config.per_host_rate / processes, retries=config.backoff_retries,
                      max_wait_s=config.backoff_max_s)
