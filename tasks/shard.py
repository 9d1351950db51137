"""The shard stage as a Prefect task: filter output -> train/val Parquet shards.

Identity = (filter manifest hash, normalised shard config, shard code version). A killed run
resumes: the rerun writes into the same directory and skips the shards that are complete,
ending with exactly the rows of an uninterrupted run. Retried once (resuming is idempotent).
"""

from __future__ import annotations

from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl import manifest  # noqa: E402
from brivl.shard import ShardConfig, write_shards  # noqa: E402
from tasks.filter import input_id  # noqa: E402
from tasks.stage import StageRun, resolve_stage, stage_cache_key  # noqa: E402

STAGE = "shard"
SHARD_CODE = ["brivl.shard"]


def _resolved(parameters: dict[str, Any]) -> dict[str, Any]:
    return dict(
        parameters,
        input_dir=input_id(parameters["input_dir"]),
        config=ShardConfig.from_dict(parameters.get("config")).to_dict(),
    )


def _shard_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return stage_cache_key(STAGE, SHARD_CODE, ["input_dir"])(context, _resolved(parameters))


def resolve_shard(
    input_dir: str, config: dict | None = None, out_dir: str | None = None
) -> StageRun:
    """Where sharding ``input_dir`` with ``config`` writes (and whether it is done)."""
    settings = ShardConfig.from_dict(config).to_dict()
    return resolve_stage(STAGE, SHARD_CODE, [input_id(input_dir)], settings, out_dir)


@task(
    name="shard",
    cache_key_fn=_shard_cache_key,
    persist_result=True,
    retries=1,
    retry_delay_seconds=2,
)
def shard_task(input_dir: str, config: dict | None = None, out_dir: str | None = None) -> str:
    """Write fixed-row train/val Parquet shards; return the output directory."""
    settings = ShardConfig.from_dict(config)
    run = resolve_shard(input_dir, config, out_dir)
    if run.done:
        return str(run.out_dir)
    result = write_shards(input_dir, run.out_dir, settings)
    manifest.write_manifest(
        run.out_dir,
        stage=STAGE,
        config=settings.to_dict(),
        inputs=run.inputs,
        code_version=run.code_version,
        row_counts=result.row_counts,
        extra={"shards": result.shards, "skipped_shards": result.skipped,
               "reencoded": result.reencoded, "input_dir": str(input_dir)},
    )
    return str(run.out_dir)
