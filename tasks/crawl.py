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
from tasks.stage import Stage, StageRun, config_param  # noqa: E402

STAGE = "crawl"
CRAWL_CODE = ("brivl.crawl",)


def crawl_inputs(
    seeds: list[str] | None, warc_files: list[str] | None = None, refresh: str = ""
) -> list[str]:
    """What identifies a crawl's input: the seed URLs, each WARC file's checksum, ``refresh``."""
    inputs = list(seeds or [])
    inputs += [f"warc:{file_sha256(p)}" for p in warc_files or []]
    return inputs + ([f"refresh:{refresh}"] if refresh else [])


def _inputs(params: dict[str, Any]) -> list[str]:
    return crawl_inputs(params.get("seeds"), params.get("warc_files"), params.get("refresh") or "")


CRAWL = Stage(STAGE, CRAWL_CODE, config_param(CrawlConfig), _inputs)


def resolve_crawl(
    seeds: list[str],
    config: dict | None = None,
    out_dir: str | None = None,
    warc_files: list[str] | None = None,
    refresh: str = "",
) -> StageRun:
    """Where a crawl with these parameters writes (and whether it is done)."""
    return CRAWL.resolve({"seeds": seeds, "config": config, "out_dir": out_dir,
                          "warc_files": warc_files, "refresh": refresh})


@task(name="crawl", **CRAWL.task_options())
def crawl_task(
    seeds: list[str],
    config: dict | None = None,
    out_dir: str | None = None,
    warc_files: list[str] | None = None,
    refresh: str = "",
) -> str:
    """Crawl seed URLs (and/or WARC files) into a candidates stage directory; return it."""

    def produce(run: StageRun) -> None:  # run_crawl writes the manifest (a library call too)
        with progress("crawl pages", None) as advance:
            run_crawl(
                seeds,
                CrawlConfig.from_dict(run.config),
                run.out_dir,
                warc_files=[str(Path(p)) for p in warc_files or []],
                inputs=run.inputs,
                code_version=run.code_version,
                on_page=lambda _record: advance(),
            )

    params = {"seeds": seeds, "config": config, "out_dir": out_dir, "warc_files": warc_files,
              "refresh": refresh}
    return str(CRAWL.run(produce, params).out_dir)
