"""The shard stage as a Prefect task: filter output -> train/val Parquet shards.

Identity = (filter manifest hash, normalised shard config, shard code version). A killed run
resumes: the rerun writes into the same directory and skips the shards that are complete,
ending with exactly the rows of an uninterrupted run. Retried once (resuming is idempotent).
"""

from __future__ import annotations

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl import manifest  # noqa: E402
from brivl.shard import ShardConfig, write_shards  # noqa: E402
from tasks.filter import input_id  # noqa: E402
from tasks.stage import ConfiguredStage, StageRun  # noqa: E402

STAGE = "shard"
SHARD_CODE = ["brivl.shard"]


SHARD_STAGE = ConfiguredStage(STAGE, tuple(SHARD_CODE), ShardConfig, identify=input_id)


def resolve_shard(
    input_dir: str, config: dict | None = None, out_dir: str | None = None
) -> StageRun:
    """Where this stage writes for ``input_dir`` and ``config`` (and whether it is done)."""
    return SHARD_STAGE.resolve(input_dir, config, out_dir)


@task(
    name="shard",
    cache_key_fn=SHARD_STAGE.cache_key,
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
