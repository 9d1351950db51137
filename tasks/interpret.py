"""Prefect tasks of the interpretation stage: train the image generator, draw the prompt grid.

Both are cached stages (``tasks.stage``). ``train_generator_task`` (stage ``generator``,
identity = shard manifest + normalised config + code) writes ``generator.safetensors``,
``generator.json``, ``train_log.jsonl`` and the manifest. ``prompt_grid_task`` (stage
``grid``, identity = model identity + generator manifest + prompts + normalised config +
code) runs Algorithm 1 (and Algorithm 2 when a generator is given) for a list of prompts and
writes ``prompt_grid.png`` + ``prompt_grid.json``; its child run carries both under
``interpretation/`` (and ``run_id``, when given, gets them too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl.report import print_table  # noqa: E402
from brivl.sources import generated_rows, sources_paths, write_sources  # noqa: E402
from tasks.stage import Stage, StageOutput, StageRun, input_identity, normalised  # noqa: E402

GENERATOR_STAGE = "generator"
GENERATOR_CODE = ("brivl.interpret.vqgan", "brivl.interpret.data", "brivl.interpret.common")
GRID_STAGE = "grid"
GRID_CODE = ("brivl.interpret", "brivl.inference", "brivl.model", "brivl.sources")
GRID_KEYS = ("visualize", "generate", "cell")
GRID_ARTIFACT_DIR = "interpretation"
GRID_ARTIFACT = f"{GRID_ARTIFACT_DIR}/prompt_grid.png"


def _generator_config(params: dict[str, Any]) -> dict[str, Any]:
    from brivl.interpret.vqgan import VQGeneratorConfig

    return normalised(VQGeneratorConfig, params.get("config"))


GENERATOR = Stage(GENERATOR_STAGE, GENERATOR_CODE, _generator_config,
                  inputs=lambda p: [input_identity(p["shard_dir"])])


@task(**GENERATOR.task_options())
def train_generator_task(shard_dir: str, config: dict, out_dir: str | None = None) -> str:
    """Train the VQ generator on a shard directory's training images; return its directory."""

    def produce(run: StageRun) -> StageOutput:
        from brivl.interpret.data import ReadStats, iter_shard_images
        from brivl.interpret.vqgan import VQGeneratorConfig, save_generator, train_generator

        cfg = VQGeneratorConfig.from_dict(run.config)
        stats, log = ReadStats(), []
        images = iter_shard_images(shard_dir, "train", limit=cfg.max_images, stats=stats)
        model = train_generator(images, cfg, report=lambda step, m: log.append({"step": step, **m}))
        save_generator(model, run.out_dir)
        (run.out_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        summary = {"images": stats.images, "skipped": stats.skipped, "l1_first": log[0]["l1"],
                   "l1_last": log[-1]["l1"], "codes_used_last": log[-1]["codes_used"]}
        print_table("generator", summary)
        return StageOutput({"images": stats.images, "skipped": stats.skipped},
                           {**summary, "skipped_examples": stats.examples})

    params = {"shard_dir": shard_dir, "config": config, "out_dir": out_dir}
    return str(GENERATOR.run(produce, params).out_dir)


def grid_config(params: dict[str, Any]) -> dict[str, Any]:
    """The grid's normalised config: the prompts, both algorithms' configs, the cell size."""
    from brivl.interpret.generate import TextToImageConfig
    from brivl.interpret.visualize import VisualizeConfig

    config = dict(params.get("config") or {})
    unknown = sorted(set(config) - set(GRID_KEYS))
    if unknown:
        raise ValueError(
            f"prompt grid config: unknown keys {unknown}; accepted: {', '.join(GRID_KEYS)}"
        )
    return {
        "prompts": [str(p) for p in params.get("prompts") or []],
        "visualize": normalised(VisualizeConfig, config.get("visualize")),
        "generate": normalised(TextToImageConfig, config.get("generate")),
        "cell": int(config.get("cell", 128)),
    }


def _grid_inputs(params: dict[str, Any]) -> list[str]:
    from tasks.index import model_identity

    generator = params.get("generator_dir")
    return [model_identity(params["checkpoint_dir"]),
            input_identity(generator) if generator else "no generator"]


def _grid_report(run: StageRun, params: dict[str, Any]) -> None:
    """The grid's PNG and JSON under ``interpretation/``; mean final similarity per method."""
    import mlflow

    from tasks import tracking

    paths = [run.out_dir / "prompt_grid.png", run.out_dir / "prompt_grid.json",
             *sources_paths(run.out_dir / "prompt_grid.png")]
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=GRID_ARTIFACT_DIR)
    if params.get("run_id"):
        client = mlflow.MlflowClient()
        for path in paths:
            client.log_artifact(params["run_id"], str(path), artifact_path=GRID_ARTIFACT_DIR)
    summary = json.loads(paths[1].read_text())
    finals = {m: [r[m]["final"] for r in summary["results"]] for m in summary["methods"]}
    tracking.log_metrics({f"{m}.final_mean": sum(v) / len(v) for m, v in finals.items() if v})
    from brivl.interpret.grid import grid_scores

    tracking.log_metrics(grid_scores(summary))


GRID = Stage(GRID_STAGE, GRID_CODE, grid_config, _grid_inputs, report=_grid_report)


@task(**GRID.task_options())
def prompt_grid_task(
    checkpoint_dir: str,
    generator_dir: str | None,
    prompts: list[str],
    config: dict | None = None,
    out_dir: str | None = None,
    run_id: str | None = None,
) -> str:
    """Visualise (and generate) every prompt; write the PNG grid, log it to MLflow; return its path.

    ``config``: ``{"visualize": {...VisualizeConfig}, "generate": {...TextToImageConfig},
    "cell": pixels per grid cell}``. ``checkpoint_dir`` may also be a model URI.
    """

    def produce(run: StageRun) -> StageOutput:
        summary = _render(checkpoint_dir, generator_dir, run.config, run.out_dir)
        return StageOutput({"prompts": len(summary["results"]),
                            "methods": len(summary["methods"])},
                           {"checkpoint": str(checkpoint_dir), "generator": generator_dir})

    params = {"checkpoint_dir": checkpoint_dir, "generator_dir": generator_dir,
              "prompts": prompts, "config": config, "out_dir": out_dir, "run_id": run_id}
    return str(GRID.run(produce, params).out_dir / "prompt_grid.png")


def _render(checkpoint: str, generator_dir: str | None, config: dict, out: Path) -> dict:
    """Draw the grid into ``out`` (``prompt_grid.png``, ``prompt_grid.json``); its summary."""
    from brivl.interpret.generate import TextToImageConfig
    from brivl.interpret.grid import render_prompt_grid
    from brivl.interpret.loading import load_model
    from brivl.interpret.visualize import VisualizeConfig
    from brivl.interpret.vqgan import load_generator

    grid, summary = render_prompt_grid(
        load_model(checkpoint),
        load_generator(generator_dir) if generator_dir else None,
        config["prompts"],
        VisualizeConfig.from_dict(config["visualize"]),
        TextToImageConfig.from_dict(config["generate"]),
        cell=config["cell"],
    )
    grid.save(out / "prompt_grid.png")
    write_sources(out / "prompt_grid.png", generated_rows(
        [(f"prompt {i + 1}, {m}", r["prompt"]) for i, r in enumerate(summary["results"])
         for m in summary["methods"]], str(checkpoint), generator_dir),
        "prompt grid", "Every image is generated from its prompt; none comes from the web.")
    summary.update(checkpoint=str(checkpoint), generator=generator_dir, config=config)
    (out / "prompt_grid.json").write_text(json.dumps(summary, indent=2))
    return summary
