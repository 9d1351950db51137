"""The download stage as a Prefect task: a candidates directory → img2dataset shards.

Identity = (candidates manifest hash, normalised download config, download code version).
A killed download resumes: the rerun writes into the same directory and img2dataset's
incremental mode skips the finished shards. Retried once (resuming is idempotent).
:func:`retry_download` retries a finished download's transient failures only.
"""

from __future__ import annotations

import contextlib

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl.download import DownloadConfig, run_download  # noqa: E402
from brivl.download.retry import retry_transient  # noqa: E402
from brivl.report import progress  # noqa: E402
from tasks.locking import file_lock  # noqa: E402
from tasks.stage import Stage, StageRun, config_param, input_identity  # noqa: E402

STAGE = "download"
DOWNLOAD_CODE = ("brivl.download", "brivl.crawl")

DOWNLOAD = Stage(STAGE, DOWNLOAD_CODE, config_param(DownloadConfig),
                 inputs=lambda p: [input_identity(p["candidates_dir"])])


def resolve_download(
    candidates_dir: str, config: dict | None = None, out_dir: str | None = None
) -> StageRun:
    """Where a download of ``candidates_dir`` with ``config`` writes (and whether it is done)."""
    return DOWNLOAD.resolve({"candidates_dir": candidates_dir, "config": config,
                             "out_dir": out_dir})


@task(name="download", retries=1, retry_delay_seconds=5, **DOWNLOAD.task_options())
def download_task(
    candidates_dir: str, config: dict | None = None, out_dir: str | None = None
) -> str:
    """Download a crawl's allowed candidates with img2dataset; return the output directory."""

    def produce(run: StageRun) -> None:  # run_download writes the manifest (a library call too)
        settings = DownloadConfig.from_dict(run.config)
        distributor = contextlib.nullcontext()
        if settings.distributor == "ray":
            from tasks.ray_download import use_ray_distributor
            from tasks.ray_runtime import ensure_ray

            ensure_ray()  # joins $RAY_ADDRESS, else starts a local Ray
            distributor = use_ray_distributor()  # img2dataset's, plus the shard retries it lacks
        with distributor, progress("download shards", None) as advance:
            run_download(candidates_dir, settings, run.out_dir, inputs=run.inputs,
                         code_version=run.code_version, on_shard=advance)

    params = {"candidates_dir": candidates_dir, "config": config, "out_dir": out_dir}
    return str(DOWNLOAD.run(produce, params).out_dir)


def retry_download(candidates_dir: str, config: dict | None = None, out_dir: str | None = None
                   ) -> dict | None:
    """Under the stage's lock, retry the transient failures (timeout, connection error, 429,
    5xx) of the finished download these parameters name; its new manifest, or ``None`` when
    no row was worth retrying."""
    run = resolve_download(candidates_dir, config, out_dir)
    with file_lock(run.lock_path, f"the download output {run.out_dir}"):
        if not run.done:
            raise FileNotFoundError(f"{run.out_dir}: no finished download of {candidates_dir} "
                                    "with this config; run the download first")
        return retry_transient(run.out_dir, candidates_dir, DownloadConfig.from_dict(run.config))
