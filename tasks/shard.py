"""The shard stage as a Prefect task: filter output -> train/val Parquet shards.

Identity = (filter manifest hash, normalised shard config, shard code version). A killed run
resumes: the rerun writes into the same directory and skips the shards that are complete,
ending with exactly the rows of an uninterrupted run. Retried once (resuming is idempotent).
"""

from __future__ import annotations

import json

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl.datasheet import JSON_NAME, MD_NAME, build_datasheet, write_datasheet  # noqa: E402
from brivl.shard import ShardConfig, write_shards  # noqa: E402
from tasks.filter import input_id  # noqa: E402
from tasks.stage import Stage, StageOutput, StageRun, config_param  # noqa: E402

STAGE = "shard"
SHARD_CODE = ("brivl.shard", "brivl.datasheet")

def _report(run: StageRun, params: dict) -> None:
    """Inside the child run: the datasheet (Markdown + JSON) and its headline numbers."""
    from tasks import tracking

    for name in (JSON_NAME, MD_NAME):
        if (run.out_dir / name).is_file():
            tracking.log_file(run.out_dir / name, "datasheet")
    sheet = json.loads((run.out_dir / JSON_NAME).read_text()) if (
        run.out_dir / JSON_NAME).is_file() else {}
    if sheet:
        tracking.log_metrics({"datasheet.domains": len(sheet["domains"]),
                              "datasheet.rows_with_faces": sheet["faces"]["rows_with_faces"],
                              "datasheet.licences": len(sheet["licences"])})


SHARD = Stage(STAGE, SHARD_CODE, config_param(ShardConfig),
              inputs=lambda p: [input_id(p["input_dir"])], report=_report)


def resolve_shard(
    input_dir: str, config: dict | None = None, out_dir: str | None = None
) -> StageRun:
    """Where this stage writes for ``input_dir`` and ``config`` (and whether it is done)."""
    return SHARD.resolve({"input_dir": input_dir, "config": config, "out_dir": out_dir})


@task(name="shard", retries=1, retry_delay_seconds=2, **SHARD.task_options())
def shard_task(input_dir: str, config: dict | None = None, out_dir: str | None = None) -> str:
    """Write fixed-row train/val Parquet shards; return the output directory."""

    def produce(run: StageRun) -> StageOutput:
        result = write_shards(input_dir, run.out_dir, ShardConfig.from_dict(run.config))
        write_datasheet(run.out_dir, build_datasheet(run.out_dir, input_dir))
        return StageOutput(result.row_counts, {
            "shards": result.shards, "skipped_shards": result.skipped,
            "reencoded": result.reencoded, "input_dir": str(input_dir)})

    params = {"input_dir": input_dir, "config": config, "out_dir": out_dir}
    return str(SHARD.run(produce, params).out_dir)
