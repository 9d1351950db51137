"""The ingest flow: crawl seed pages, then download the allowed images with img2dataset."""

from __future__ import annotations

from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import flow  # noqa: E402

from brivl.crawl.stage import no_candidates_message  # noqa: E402
from brivl.errors import InputError  # noqa: E402
from brivl.manifest import read_manifest  # noqa: E402
from tasks.crawl import crawl_task  # noqa: E402
from tasks.download import download_task  # noqa: E402


@flow(name="ingest")
def ingest_flow(
    seeds: list[str],
    crawl_config: dict | None = None,
    download_config: dict | None = None,
    refresh: str = "",
) -> dict[str, Any]:
    """Crawl → download. Returns both output directories and their row counts.

    The download's SSRF allow-list defaults to the crawl's (``allow_cidrs``). A crawl
    that found no image candidates stops the flow, saying so (InputError).
    """
    crawl_config = dict(crawl_config or {})
    download_config = dict(download_config or {})
    download_config.setdefault("allow_cidrs", crawl_config.get("allow_cidrs", []))

    candidates_dir = crawl_task(seeds, crawl_config, refresh=refresh)
    crawled = read_manifest(candidates_dir)
    if not crawled["row_counts"].get("candidates"):
        raise InputError(no_candidates_message(crawled, candidates_dir))
    download_dir = download_task(candidates_dir, download_config)

    return {
        "candidates_dir": candidates_dir,
        "download_dir": download_dir,
        "crawl_counts": crawled["row_counts"],
        "download_counts": read_manifest(download_dir)["row_counts"],
    }
