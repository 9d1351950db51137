"""The data flow: crawl → download → filter → shard, each stage a cached Prefect task."""

from __future__ import annotations

from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import flow  # noqa: E402

from brivl.crawl.seeds import check_seeds  # noqa: E402
from brivl.manifest import read_manifest  # noqa: E402
from flows.checks import check_data_configs  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from tasks.filter import filter_task  # noqa: E402
from tasks.shard import shard_task  # noqa: E402

STAGES = ("crawl", "download", "filter", "shard")


@flow(name="brivl-data")
def data_flow(
    seeds: list[str],
    crawl_config: dict | None = None,
    download_config: dict | None = None,
    filter_config: dict | None = None,
    shard_config: dict | None = None,
    refresh: str = "",
    eval_sets: str | dict[str, str] | None = None,
) -> dict[str, Any]:
    """Seeds → training shards. Returns each stage's output directory and row counts.

    The seeds and all four configs are checked before the crawl starts. Pairs showing an
    image of ``eval_sets`` (the evaluation sets) are kept out of the shards."""
    check_seeds(seeds)
    check_data_configs(crawl_config, download_config, filter_config, shard_config)
    ingest = ingest_flow(seeds, crawl_config, download_config, refresh)
    filter_dir = filter_task(ingest["download_dir"], filter_config or {},
                             eval_sets=eval_sets or None)
    shard_dir = shard_task(filter_dir, shard_config or {})

    dirs = {
        "crawl_dir": ingest["candidates_dir"],
        "download_dir": ingest["download_dir"],
        "filter_dir": filter_dir,
        "shard_dir": shard_dir,
    }
    counts = {stage: read_manifest(dirs[f"{stage}_dir"])["row_counts"] for stage in STAGES}
    return {**dirs, "counts": counts}
