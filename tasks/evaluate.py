"""The evaluate stage as a Prefect task: checkpoint + eval sets + config -> metrics.

Cached like every stage (``tasks.stage``): its identity is the checkpoint's identity, the
eval files' checksums, the config and the evaluation code. The stage directory holds
``metrics.json``, per-set tables, the skipped rows, a retrieval image grid (with its sources
table), ``decontamination.json`` (how many training pairs the filter dropped as copies of
these eval sets' images) and the manifest; each run (cached or not) logs them to its MLflow child run (named by ``label``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task

from brivl.fingerprint import file_sha256, stable_hash
from brivl.sources import sources_paths, write_sources
from tasks import tracking
from tasks.register import checkpoint_identity
from tasks.stage import Stage, StageOutput, StageRun, normalised

EVAL_CODE = ("brivl.evaluate", "brivl.inference", "brivl.model", "tasks.evaluate")
GRID_IMAGES = 48  # retrieval-grid gallery size (first rows of the retrieval set)
DECONTAMINATION = "decontamination.json"  # eval-set images the filter found in training data


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


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def run_evaluation(checkpoint_dir: str, eval_sets: str | dict[str, str], config: dict, out: Path):
    """Evaluate into ``out``: metrics.json, tables/, skipped.json, retrieval_grid.png."""
    from brivl.evaluate import EvalConfig, evaluate_sets, read_eval_set, retrieval_grid
    from brivl.evaluate.runner import resolve_sets
    from brivl.inference import load
    from brivl.model.trunk_store import default_root

    cfg = EvalConfig.from_dict(config)
    encoder = load(checkpoint_dir, trunk_store=default_root())
    report = evaluate_sets(encoder, eval_sets, cfg)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in report.tables.items():
        _write_json(out / "tables" / f"{name}.json", rows)
    _write_json(out / "skipped.json", report.skipped)
    for name, path in resolve_sets(eval_sets).items():
        es = read_eval_set(path, name=name, max_rows=GRID_IMAGES)
        if es.kind == "retrieval" and len(es):
            shown: list[dict] = []
            grid = retrieval_grid(encoder, es.images, es.captions, k=4, batch_size=cfg.batch_size,
                                  shown=shown)
            grid.save(out / "retrieval_grid.png")
            write_sources(out / "retrieval_grid.png", grid_sources(es, shown),
                          f"retrieval grid of eval set {name!r}",
                          f"Images from {path.name}; one row per cell (query row, rank).")
            break
    _write_json(out / "metrics.json", report.metrics)
    _write_json(out / DECONTAMINATION, decontamination(checkpoint_dir, eval_sets))
    return report


def _manifest_or_none(path: Any) -> dict[str, Any] | None:
    from brivl.manifest import ManifestError, read_manifest

    try:
        return read_manifest(path) if path else None
    except (ManifestError, OSError):
        return None


def decontamination(checkpoint_dir: str, eval_sets: str | dict[str, str]) -> dict[str, Any]:
    """What the filter found of these eval sets in the checkpoint's training data.

    Followed through the manifests: the pretrain stage that wrote the checkpoint, its shards,
    their filter. ``found`` is None when that lineage cannot be followed (a checkpoint from
    elsewhere); ``same_eval_sets`` says whether the filter checked these very sets."""
    out: dict[str, Any] = {"found": None, "eval_images": None, "same_eval_sets": False,
                           "filter_dir": None}
    ckpt = Path(checkpoint_dir)
    pretrain = next((b for b in map(_manifest_or_none, (ckpt, ckpt.parent))
                     if b and b["stage"] == "pretrain"), None)
    shards = _manifest_or_none(pretrain and pretrain.get("extra", {}).get("shard_dir"))
    filter_dir = shards and shards.get("extra", {}).get("input_dir")
    body = _manifest_or_none(filter_dir)
    if not body or body["stage"] != "filter":
        return out
    overlap = body.get("extra", {}).get("report", {}).get("eval_overlap") or {}
    out.update(found=overlap.get("found", 0), eval_images=overlap.get("eval_images", 0),
               found_per_set=overlap.get("found_per_set", {}), filter_dir=str(filter_dir),
               same_eval_sets=eval_sets_identity(eval_sets) in body.get("inputs", []))
    return out


def grid_sources(es: Any, shown: list[dict]) -> list[dict[str, Any]]:
    """The retrieval grid's sources table rows: what the eval set says of each image shown."""
    rows = []
    for cell in shown:
        source = es.sources[cell["image"]] if es.sources else {}
        rows.append({"position": f"query {cell['row']}, rank {cell['rank']}",
                     "shows": es.captions[cell["image"]][0], "page_url": source.get("page_url"),
                     "image_url": source.get("image_url"), "sha256": source.get("sha256"),
                     "licence": source.get("licence"),
                     "origin": f"eval set {es.name} ({es.path.name}) row {source.get('row', '?')}"})
    return rows


def _report(run: StageRun, params: dict[str, Any]) -> None:
    """Inside the child run: what was evaluated, the metrics, tables, skipped rows, grid."""
    out = run.out_dir
    tracking.log_flat_params({"checkpoint": str(params["checkpoint_dir"]),
                              "eval_sets": params["eval_sets"]})
    metrics = json.loads((out / "metrics.json").read_text())
    tracking.log_metrics(metrics)
    tracking.log_table("metrics", [{"metric": k, "value": v} for k, v in sorted(metrics.items())])
    for table in sorted((out / "tables").glob("*.json")):
        rows = json.loads(table.read_text())
        if rows:
            tracking.log_table(table.stem, rows)
    tracking.log_json(json.loads((out / "skipped.json").read_text()), "skipped_rows.json")
    decon = out / DECONTAMINATION
    if decon.is_file():
        found = json.loads(decon.read_text())
        tracking.log_json(found, DECONTAMINATION)
        if found["found"] is not None:
            tracking.log_metrics({"decontamination.found": found["found"],
                                  "decontamination.eval_images": found["eval_images"],
                                  "decontamination.same_eval_sets": float(found["same_eval_sets"])})
    grid = out / "retrieval_grid.png"
    if grid.is_file():
        from PIL import Image

        with Image.open(grid) as img:
            tracking.log_image(img.copy(), "retrieval_grid")
        for table in sources_paths(grid):
            if table.is_file():
                tracking.log_file(table, "images")  # beside images/retrieval_grid.png


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    from brivl.evaluate import EvalConfig

    return normalised(EvalConfig, params.get("config"))


EVALUATE = Stage(
    "evaluate", EVAL_CODE, _normalise,
    inputs=lambda p: stage_inputs(p["checkpoint_dir"], p["eval_sets"]), report=_report,
)


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """The Prefect cache key (:meth:`Stage.cache_key` of :data:`EVALUATE`)."""
    return EVALUATE.cache_key(context, parameters)


@task(name="evaluate", **EVALUATE.task_options())
def evaluate_task(
    checkpoint_dir: str,
    eval_sets: str | dict[str, str],
    config: dict | None = None,
    out_dir: str | None = None,
    label: str = "evaluate",
) -> dict[str, float]:
    """Evaluate a checkpoint on every eval set present; return ``{"<set>/<metric>": value}``.

    ``label`` names the MLflow child run (e.g. "evaluate frozen-towers baseline")."""

    def produce(run: StageRun) -> StageOutput:
        report = run_evaluation(checkpoint_dir, eval_sets, run.config, run.out_dir)
        counts = {k.split("/")[0]: int(v) for k, v in report.metrics.items() if k.endswith("/n")}
        return StageOutput(counts, {"checkpoint": str(Path(checkpoint_dir).resolve()),
                                    "eval_sets": str(eval_sets)})

    params = {"checkpoint_dir": checkpoint_dir, "eval_sets": eval_sets, "config": config,
              "out_dir": out_dir, "label": label}
    run = EVALUATE.run(produce, params)
    return json.loads((run.out_dir / "metrics.json").read_text())
