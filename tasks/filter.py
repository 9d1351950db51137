"""The filter stage as a Prefect task: download shards -> kept pairs + rejected rows + report.

Identity = (input identity, normalised filter config, filter code version). The input is a
stage directory (its manifest hash) or a plain folder of Parquet files (a hash of their
bytes), so users can filter their own data. Not retried: a failure here is not transient
I/O, and a rerun starts the stage over (the filter output is rebuilt, byte-identical).
"""

from __future__ import annotations

from pathlib import Path

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl import manifest  # noqa: E402
from brivl.filter import FilterConfig, run_filter  # noqa: E402
from brivl.fingerprint import file_sha256, stable_hash  # noqa: E402
from tasks.stage import Stage, StageOutput, StageRun, config_param  # noqa: E402

STAGE = "filter"
FILTER_CODE = ("brivl.filter",)


def input_id(input_dir: str | Path) -> str:
    """A stage directory's manifest hash, else a hash of the Parquet files' names and bytes."""
    path = Path(input_dir)
    if (path / manifest.MANIFEST_NAME).is_file():
        return manifest.read_manifest(path)["hash"]
    if path.is_file():
        return stable_hash({path.name: file_sha256(path)})
    if not path.is_dir():
        raise FileNotFoundError(f"stage input {path} does not exist")
    files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"{path}: no _manifest.json and no *.parquet files")
    return stable_hash({str(p.relative_to(path)): file_sha256(p) for p in files})


FILTER = Stage(STAGE, FILTER_CODE, config_param(FilterConfig),
               inputs=lambda p: [input_id(p["input_dir"])])


def resolve_filter(
    input_dir: str, config: dict | None = None, out_dir: str | None = None
) -> StageRun:
    """Where this stage writes for ``input_dir`` and ``config`` (and whether it is done)."""
    return FILTER.resolve({"input_dir": input_dir, "config": config, "out_dir": out_dir})


@task(name="filter", **FILTER.task_options())
def filter_task(
    input_dir: str, config: dict | None = None, out_dir: str | None = None, workers: int = 1
) -> str:
    """Filter downloaded pairs (per-row rules, then dedup); return the output directory."""

    def produce(run: StageRun) -> StageOutput:
        result = run_filter(input_dir, run.out_dir, FilterConfig.from_dict(run.config),
                            workers=workers)
        return StageOutput(result.row_counts,
                           {"report": result.report, "input_dir": str(input_dir)})

    params = {"input_dir": input_dir, "config": config, "out_dir": out_dir}
    return str(FILTER.run(produce, params).out_dir)
