"""The crawl stage as a Prefect task: seeds (or WARC files) → candidates directory.

Identity = (seeds, WARC file checksums, ``refresh``, normalised crawl config, crawl code
version): a rerun with the same identity is a Prefect cache hit and sends no request.
Pass a new ``refresh`` (e.g. today's date) to re-crawl an unchanged seed list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl.crawl import CrawlConfig, run_crawl  # noqa: E402
from brivl.fingerprint import file_sha256  # noqa: E402
from brivl.report import progress  # noqa: E402
from tasks.stage import StageRun, resolve_stage, stage_cache_key  # noqa: E402

STAGE = "crawl"
CRAWL_CODE = ["brivl.crawl"]


def crawl_inputs(
    seeds: list[str] | None, warc_files: list[str] | None = None, refresh: str = ""
) -> list[str]:
    """What identifies a crawl's input: the seed URLs, each WARC file's checksum, ``refresh``."""
    inputs = list(seeds or [])
    inputs += [f"warc:{file_sha256(p)}" for p in warc_files or []]
    return inputs + ([f"refresh:{refresh}"] if refresh else [])


def _resolved(parameters: dict[str, Any]) -> dict[str, Any]:
    return dict(
        parameters,
        config=CrawlConfig.from_dict(parameters.get("config")).to_dict(),
        inputs=crawl_inputs(
            parameters.get("seeds"), parameters.get("warc_files"), parameters.get("refresh", "")
        ),
    )


def _crawl_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return stage_cache_key(STAGE, CRAWL_CODE, ["inputs"])(context, _resolved(parameters))


def resolve_crawl(
    seeds: list[str],
    config: dict | None = None,
    out_dir: str | None = None,
    warc_files: list[str] | None = None,
    refresh: str = "",
) -> StageRun:
    """Where a crawl with these parameters writes (and whether it is done)."""
    params = _resolved(
        {"seeds": seeds, "config": config, "warc_files": warc_files, "refresh": refresh}
    )
    return resolve_stage(STAGE, CRAWL_CODE, [params["inputs"]], params["config"], out_dir)


@task(name="crawl", cache_key_fn=_crawl_cache_key, persist_result=True)
def crawl_task(
    seeds: list[str],
    config: dict | None = None,
    out_dir: str | None = None,
    warc_files: list[str] | None = None,
    refresh: str = "",
) -> str:
    """Crawl seed URLs (and/or WARC files) into a candidates stage directory; return it."""
    settings = CrawlConfig.from_dict(config)
    run = resolve_crawl(seeds, config, out_dir, warc_files, refresh)
    if run.done:
        return str(run.out_dir)
    with progress("crawl pages", None) as advance:
        run_crawl(
            seeds,
            settings,
            run.out_dir,
            warc_files=[str(Path(p)) for p in warc_files or []],
            inputs=crawl_inputs(seeds, warc_files, refresh),
            code_version=run.code_version,
            on_page=lambda _record: advance(),
        )
    return str(run.out_dir)
