"""Prefect tasks of the interpretation stage: train the image generator, draw the prompt grid.

``train_generator_task`` is a cached stage (identity = shard manifest + config + code):
its directory holds ``generator.safetensors``, ``generator.json``, ``train_log.jsonl`` and
the manifest. ``prompt_grid_task`` runs Algorithm 1 (and Algorithm 2 when a generator is
given) for a list of prompts, writes ``prompt_grid.png`` + ``prompt_grid.json`` and logs
both to MLflow under ``interpretation/`` when a run is active (or ``run_id`` names one).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from brivl.env import apply_defaults, project_home

apply_defaults()

from prefect import task  # noqa: E402

from brivl.fingerprint import stable_hash  # noqa: E402
from brivl.manifest import write_manifest  # noqa: E402
from brivl.report import print_table  # noqa: E402
from tasks.stage import resolve_stage, stage_cache_key  # noqa: E402

GENERATOR_STAGE = "generator"
GENERATOR_CODE = ["brivl.interpret.vqgan", "brivl.interpret.data", "brivl.interpret.common"]
GRID_ARTIFACT_DIR = "interpretation"
GRID_ARTIFACT = f"{GRID_ARTIFACT_DIR}/prompt_grid.png"


@task(
    cache_key_fn=stage_cache_key(GENERATOR_STAGE, GENERATOR_CODE, ["shard_dir"]),
    persist_result=True,
)
def train_generator_task(shard_dir: str, config: dict, out_dir: str | None = None) -> str:
    """Train the VQ generator on a shard directory's training images; return its directory."""
    from brivl.interpret.data import ReadStats, iter_shard_images
    from brivl.interpret.vqgan import GeneratorConfig, save_generator, train_generator

    run = resolve_stage(GENERATOR_STAGE, GENERATOR_CODE, [shard_dir], config, out_dir)
    if run.done:
        return str(run.out_dir)
    cfg = GeneratorConfig.from_dict(config)
    stats, log = ReadStats(), []
    images = iter_shard_images(shard_dir, "train", limit=cfg.max_images, stats=stats)
    model = train_generator(images, cfg, report=lambda step, m: log.append({"step": step, **m}))
    run.out_dir.mkdir(parents=True, exist_ok=True)
    save_generator(model, run.out_dir)
    (run.out_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    summary = {
        "images": stats.images,
        "skipped": stats.skipped,
        "l1_first": log[0]["l1"],
        "l1_last": log[-1]["l1"],
        "codes_used_last": log[-1]["codes_used"],
    }
    write_manifest(
        run.out_dir,
        stage=GENERATOR_STAGE,
        config=asdict(cfg),
        inputs=run.inputs,
        code_version=run.code_version,
        row_counts={"images": stats.images, "skipped": stats.skipped},
        extra={**summary, "skipped_examples": stats.examples},
    )
    print_table("generator", summary)
    return str(run.out_dir)


@task
def prompt_grid_task(
    checkpoint_dir: str,
    generator_dir: str | None,
    prompts: list[str],
    config: dict | None = None,
    out_dir: str | None = None,
    run_id: str | None = None,
) -> str:
    """Visualise (and generate) every prompt; write the PNG grid, log it to MLflow; return its path.

    ``config``: ``{"visualize": {...VisualizeConfig}, "generate": {...GenerateConfig},
    "cell": pixels per grid cell}``. ``checkpoint_dir`` may also be a model URI.
    """
    from brivl.interpret.generate import GenerateConfig
    from brivl.interpret.grid import render_prompt_grid
    from brivl.interpret.loading import load_model
    from brivl.interpret.visualize import VisualizeConfig
    from brivl.interpret.vqgan import load_generator

    config = dict(config or {})
    unknown = sorted(set(config) - {"visualize", "generate", "cell"})
    if unknown:
        raise ValueError(
            f"prompt grid config: unknown keys {unknown}; accepted: visualize, generate, cell"
        )
    target = Path(out_dir) if out_dir else _grid_dir(checkpoint_dir, generator_dir, prompts, config)
    target.mkdir(parents=True, exist_ok=True)
    model = load_model(checkpoint_dir)
    generator = load_generator(generator_dir) if generator_dir else None
    grid, summary = render_prompt_grid(
        model,
        generator,
        prompts,
        VisualizeConfig.from_dict(config.get("visualize")),
        GenerateConfig.from_dict(config.get("generate")),
        cell=int(config.get("cell", 128)),
    )
    png, report = target / "prompt_grid.png", target / "prompt_grid.json"
    grid.save(png)
    summary.update(checkpoint=str(checkpoint_dir), generator=generator_dir, config=config)
    report.write_text(json.dumps(summary, indent=2))
    _log_to_mlflow([png, report], run_id)
    print_table(
        "prompt grid",
        [
            {"prompt": r["prompt"], **{m: r[m]["final"] for m in summary["methods"]}}
            for r in summary["results"]
        ],
    )
    return str(png)


def _grid_dir(checkpoint: str, generator: str | None, prompts: list[str], config: dict) -> Path:
    ident = stable_hash(
        {
            "checkpoint": str(Path(checkpoint).resolve())
            if Path(checkpoint).exists()
            else checkpoint,
            "generator": str(Path(generator).resolve()) if generator else None,
            "prompts": prompts,
            "config": config,
        },
        24,
    )
    return project_home() / "data" / "interpret" / ident


def _log_to_mlflow(paths: list[Path], run_id: str | None) -> None:
    """Log files under ``interpretation/`` to ``run_id``, else to the active run, else nowhere."""
    import mlflow

    if run_id:
        client = mlflow.MlflowClient()
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path=GRID_ARTIFACT_DIR)
    elif mlflow.active_run() is not None:
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path=GRID_ARTIFACT_DIR)
