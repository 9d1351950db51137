"""The evaluate stage as a Prefect task: checkpoint + eval sets + config -> metrics.

Cached like every stage (``tasks.stage``): its identity is the checkpoint's identity, the
eval files' checksums, the config and the evaluation code. The stage directory holds
``metrics.json``, per-set tables, the skipped rows, a retrieval image grid and the
manifest; each run (cached or not) logs them to an ``evaluate`` MLflow child run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task

from brivl import manifest
from brivl.fingerprint import file_sha256, stable_hash
from tasks import tracking
from tasks.register import checkpoint_identity
from tasks.stage import resolve_stage, stage_cache_key

EVAL_CODE = ["brivl.evaluate", "brivl.inference", "brivl.model", "tasks.evaluate"]
GRID_IMAGES = 48  # retrieval-grid gallery size (first rows of the retrieval set)


def eval_sets_identity(eval_sets: str | dict[str, str]) -> str:
    """Checksums of the eval files (and class-list sidecars), by set name."""
    from brivl.evaluate.runner import resolve_sets

    files: dict[str, str] = {}
    for name, path in sorted(resolve_sets(eval_sets).items()):
        files[name] = file_sha256(path) if path.is_file() else f"missing:{path}"
        for side in (path.with_name(f"{path.stem}.classes.json"), path.with_name("classes.json")):
            if side.is_file():
                files[f"{name}:{side.name}"] = file_sha256(side)
    return stable_hash(files)


def stage_inputs(checkpoint_dir: str, eval_sets: str | dict[str, str]) -> list[str]:
    """The stage's input identities: checkpoint, then eval sets."""
    return [checkpoint_identity(checkpoint_dir), eval_sets_identity(eval_sets)]


_base_key = stage_cache_key("evaluate", EVAL_CODE, ["_checkpoint_id", "_eval_sets_id"])


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    ckpt, sets = stage_inputs(parameters["checkpoint_dir"], parameters["eval_sets"])
    config = dict(parameters.get("config") or {})  # as the task body sees it
    return _base_key(
        context, {**parameters, "config": config, "_checkpoint_id": ckpt, "_eval_sets_id": sets}
    )


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def run_evaluation(checkpoint_dir: str, eval_sets: str | dict[str, str], config: dict, out: Path):
    """Evaluate into ``out``: metrics.json, tables/, skipped.json, retrieval_grid.png."""
    from brivl.evaluate import EvalConfig, evaluate_sets, read_eval_set, retrieval_grid
    from brivl.evaluate.runner import resolve_sets
    from brivl.inference import load

    cfg = EvalConfig.from_dict(config)
    encoder = load(checkpoint_dir)
    report = evaluate_sets(encoder, eval_sets, cfg)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in report.tables.items():
        _write_json(out / "tables" / f"{name}.json", rows)
    _write_json(out / "skipped.json", report.skipped)
    for name, path in resolve_sets(eval_sets).items():
        es = read_eval_set(path, name=name, max_rows=GRID_IMAGES)
        if es.kind == "retrieval" and len(es):
            grid = retrieval_grid(encoder, es.images, es.captions, k=4, batch_size=cfg.batch_size)
            grid.save(out / "retrieval_grid.png")
            break
    _write_json(out / "metrics.json", report.metrics)
    return report


@task(name="evaluate", cache_key_fn=_cache_key, persist_result=True)
def evaluate_task(
    checkpoint_dir: str,
    eval_sets: str | dict[str, str],
    config: dict | None = None,
    out_dir: str | None = None,
    label: str = "evaluate",
) -> dict[str, float]:
    """Evaluate a checkpoint on every eval set present; return ``{"<set>/<metric>": value}``.

    ``label`` names the MLflow child run (e.g. "evaluate frozen-towers baseline")."""
    config = dict(config or {})
    run = resolve_stage(
        "evaluate", EVAL_CODE, stage_inputs(checkpoint_dir, eval_sets), config, out_dir
    )
    cached = run.done
    if not cached:
        report = run_evaluation(checkpoint_dir, eval_sets, config, run.out_dir)
        manifest.write_manifest(
            run.out_dir,
            stage="evaluate",
            config=config,
            inputs=run.inputs,
            code_version=run.code_version,
            row_counts={
                k.split("/")[0]: int(v) for k, v in report.metrics.items() if k.endswith("/n")
            },
            extra={"checkpoint": str(Path(checkpoint_dir).resolve()), "eval_sets": str(eval_sets)},
        )
    metrics = json.loads((run.out_dir / "metrics.json").read_text())
    log_evaluation(run.out_dir, checkpoint_dir, eval_sets, config, metrics, cached, label)
    return metrics


def log_evaluation(
    out: Path, checkpoint_dir: str, eval_sets: Any, config: dict, metrics: dict, cached: bool,
    label: str = "evaluate",
) -> None:
    """The evaluate child run (named ``label``): config params, metrics, tables, grid, manifest."""
    with tracking.stage_run(label, tags={"brivl.cached": cached}):
        tracking.log_flat_params(
            {"config": config, "checkpoint": str(checkpoint_dir), "eval_sets": eval_sets}
        )
        tracking.log_metrics(metrics)
        tracking.log_table(
            "metrics", [{"metric": k, "value": v} for k, v in sorted(metrics.items())]
        )
        for table in sorted((out / "tables").glob("*.json")):
            rows = json.loads(table.read_text())
            if rows:
                tracking.log_table(table.stem, rows)
        skipped = json.loads((out / "skipped.json").read_text())
        tracking.log_json(skipped, "skipped_rows.json")
        grid = out / "retrieval_grid.png"
        if grid.is_file():
            from PIL import Image

            with Image.open(grid) as img:
                tracking.log_image(img.copy(), "retrieval_grid")
        tracking.log_manifest(out, "evaluate")
