"""The download stage as a Prefect task: a candidates directory → img2dataset shards.

Identity = (candidates manifest hash, normalised download config, download code version).
A killed download resumes: the rerun writes into the same directory and img2dataset's
incremental mode skips the finished shards. Retried once (resuming is idempotent).
"""

from __future__ import annotations

import contextlib
from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl.download import DownloadConfig, run_download  # noqa: E402
from brivl.report import progress  # noqa: E402
from tasks.stage import StageRun, resolve_stage, stage_cache_key  # noqa: E402

STAGE = "download"
DOWNLOAD_CODE = ["brivl.download", "brivl.crawl"]


def _resolved(parameters: dict[str, Any]) -> dict[str, Any]:
    return dict(parameters, config=DownloadConfig.from_dict(parameters.get("config")).to_dict())


def _download_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return stage_cache_key(STAGE, DOWNLOAD_CODE, ["candidates_dir"])(context, _resolved(parameters))


def resolve_download(
    candidates_dir: str, config: dict | None = None, out_dir: str | None = None
) -> StageRun:
    """Where a download of ``candidates_dir`` with ``config`` writes (and whether it is done)."""
    settings = DownloadConfig.from_dict(config).to_dict()
    return resolve_stage(STAGE, DOWNLOAD_CODE, [candidates_dir], settings, out_dir)


@task(
    name="download",
    cache_key_fn=_download_cache_key,
    persist_result=True,
    retries=1,
    retry_delay_seconds=5,
)
def download_task(
    candidates_dir: str, config: dict | None = None, out_dir: str | None = None
) -> str:
    """Download a crawl's allowed candidates with img2dataset; return the output directory."""
    settings = DownloadConfig.from_dict(config)
    run = resolve_download(candidates_dir, config, out_dir)
    if run.done:
        return str(run.out_dir)
    distributor = contextlib.nullcontext()
    if settings.distributor == "ray":
        from tasks.ray_download import use_ray_distributor
        from tasks.ray_runtime import ensure_ray

        ensure_ray()  # joins $RAY_ADDRESS, else starts a local Ray
        distributor = use_ray_distributor()  # img2dataset's, plus the shard retries it lacks
    with distributor, progress("download shards", None) as advance:
        run_download(
            candidates_dir,
            settings,
            run.out_dir,
            inputs=run.inputs,
            code_version=run.code_version,
            on_shard=advance,
        )
    return str(run.out_dir)
