"""The whole DAG: data (crawl → download → filter → shard) → retrain (pretrain → evaluate →
register) → index (clip-retrieval) → interpret (generator + prompt grid).

One MLflow parent run per pipeline run; each stage is a child run. Every stage is a cached
Prefect task, so a rerun with nothing changed does no stage work.
"""

from __future__ import annotations

import copy
from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import flow  # noqa: E402

from flows.data import data_flow  # noqa: E402
from flows.retrain import DEFAULT_PRIMARY_METRIC, retrain_flow  # noqa: E402
from flows.runs import log_stage, pipeline_run  # noqa: E402
from tasks.index import index_task  # noqa: E402
from tasks.interpret import prompt_grid_task, train_generator_task  # noqa: E402

DEFAULT_PROMPTS = [
    "a red circle",
    "two blue squares on a striped background",
    "a green star on the left",
    "a yellow heart",
]

DEFAULT_CONFIG: dict[str, Any] = {
    "crawl": {},
    "download": {},
    "filter": {},
    "shard": {},
    # brivl-tiny learns little in fewer steps (demo web, 200 steps: validation R@1 at chance;
    # 600 steps: ~3x chance, R@10 ~2x) and 600 take ~100 s on 2 cores
    "train": {"model": "brivl-tiny", "steps": 600},
    "eval_sets": "",  # a directory of eval Parquet sets, or {name: path}
    "eval": {},
    "index": {},
    "generator": {"steps": 200},  # CPU-sized; raise on a GPU
    "grid": {"visualize": {"steps": 128}, "generate": {"steps": 128}},
    "prompts": DEFAULT_PROMPTS,
    "model_name": "brivl",
    "primary_metric": DEFAULT_PRIMARY_METRIC,
    "stages": ["data", "retrain", "index", "interpret"],
}


def merged_config(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_CONFIG with ``overrides`` merged in one level deep (per stage section)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in (overrides or {}).items():
        if key not in config:
            raise ValueError(f"unknown pipeline config section {key!r}; known: {sorted(config)}")
        if isinstance(config[key], dict) and isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


@flow(name="brivl-pipeline")
def pipeline_flow(seeds: list[str], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the whole DAG from seed URLs; returns stage outputs, counts, metrics, model URI."""
    cfg = merged_config(config)
    out: dict[str, Any] = {"seeds": seeds}
    with pipeline_run("pipeline", {"seeds": " ".join(seeds)}) as run_id:
        out["mlflow_run_id"] = run_id
        data = data_flow(seeds, cfg["crawl"], cfg["download"], cfg["filter"], cfg["shard"])
        for stage in ("crawl", "download", "filter", "shard"):
            log_stage(stage, data[f"{stage}_dir"], cfg[stage])
        out["data"] = data
        if "retrain" not in cfg["stages"]:
            return out
        model = retrain_flow(
            data["shard_dir"], cfg["train"], cfg["eval_sets"], cfg["eval"],
            cfg["model_name"], cfg["primary_metric"],
        )
        out["model"] = model
        if "index" in cfg["stages"]:
            out["index_dir"] = index_task(model["checkpoint"], data["shard_dir"], cfg["index"])
        if "interpret" in cfg["stages"]:
            generator = train_generator_task(data["shard_dir"], cfg["generator"])
            out["generator_dir"] = generator
            out["prompt_grid"] = prompt_grid_task(
                model["checkpoint"], generator, cfg["prompts"], cfg["grid"]
            )
    return out
