"""The filter stage as a Prefect task: download shards -> kept pairs + rejected rows + report.

Identity = (input identity, the evaluation sets' identity when given, the scoring model's
identity when ``model_score`` is set, normalised filter config, filter code version). The
input is a
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
from brivl.filter.decontam import load_eval_images  # noqa: E402
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


def score_model_identity(spec: str) -> str:
    """Identity of ``filter.model_score``: a checkpoint's or a ``models:/`` URI's (the
    version's checkpoint id, so a moved alias is another filter run), or for a model
    config name at step 0 the name and the model code's version."""
    if Path(spec).expanduser().exists() or "://" in spec or spec.startswith("models:/"):
        from tasks.index import model_identity

        return model_identity(spec)
    from brivl.fingerprint import code_version

    return f"{spec}@step0:{code_version('brivl.model')}"


def _pinned(spec: str) -> str:
    """The model the filter loads: a ``models:/`` alias pinned to the version it names now."""
    if spec.startswith("models:/"):
        from tasks.index import pinned_checkpoint

        return pinned_checkpoint(spec)
    return spec


def _inputs(params: dict) -> list[str]:
    """The input's identity, then the evaluation sets' (when decontaminating against them),
    then the scoring model's (when ``model_score`` is set)."""
    ids = [input_id(params["input_dir"])]
    if params.get("eval_sets"):
        from tasks.evaluate import eval_sets_identity

        ids.append(eval_sets_identity(params["eval_sets"]))
    spec = FilterConfig.from_dict(params.get("config")).model_score
    if spec:
        ids.append(score_model_identity(spec))
    return ids


def _report(run: StageRun, params: dict) -> None:
    """Inside the child run: evaluation images checked and training rows found overlapping."""
    from tasks import tracking

    overlap = manifest.read_manifest(run.out_dir).get("extra", {}).get("report", {}).get(
        "eval_overlap") or {}
    tracking.log_metrics({"eval_overlap.eval_images": overlap.get("eval_images", 0),
                          "eval_overlap.found": overlap.get("found", 0)})
    _log_model_score(manifest.read_manifest(run.out_dir).get("extra", {}))


def _log_model_score(extra: dict) -> None:
    """The model-score rule's histogram (a metric per bin, step = bin), cut, pairs/s, the
    examples on both sides of the cut, and which model filtered the data."""
    from tasks import tracking

    scored = extra.get("report", {}).get("model_score") or {}
    if not scored.get("model"):
        return
    hist = scored["histogram"]
    for step, count in enumerate(hist["counts"]):
        tracking.log_metrics({"model_score.histogram": count}, step=step)
    tracking.log_metrics({f"model_score.{k}": scored[k] for k in (
        "cut", "scored", "kept", "rejected", "pairs_per_s", "mean") if scored.get(k) is not None})
    tracking.log_table("model_score_histogram", [
        {"from": lo, "to": hi, "pairs": n}
        for lo, hi, n in zip(hist["edges"], hist["edges"][1:], hist["counts"], strict=False)])
    if scored.get("near_cut"):
        tracking.log_table("model_score_near_cut", scored["near_cut"])
    tracking._mlflow().set_tags({f"brivl.model_score.{k}": str(v)
                                 for k, v in (extra.get("model_score") or {}).items()})


FILTER = Stage(STAGE, FILTER_CODE, config_param(FilterConfig), inputs=_inputs, report=_report)


def resolve_filter(
    input_dir: str, config: dict | None = None, out_dir: str | None = None,
    eval_sets: str | dict[str, str] | None = None,
) -> StageRun:
    """Where this stage writes for ``input_dir`` and ``config`` (and whether it is done)."""
    return FILTER.resolve({"input_dir": input_dir, "config": config, "out_dir": out_dir,
                           "eval_sets": eval_sets})


@task(name="filter", **FILTER.task_options())
def filter_task(
    input_dir: str, config: dict | None = None, out_dir: str | None = None, workers: int = 1,
    eval_sets: str | dict[str, str] | None = None,
) -> str:
    """Filter downloaded pairs (per-row rules, then dedup; pairs showing an image of
    ``eval_sets`` are rejected as ``eval_overlap``); return the output directory."""

    def produce(run: StageRun) -> StageOutput:
        images = load_eval_images(eval_sets) if eval_sets else None
        cfg = FilterConfig.from_dict(run.config)
        lineage, scorer = {}, None
        if cfg.model_score:  # which model filtered the data: in the inputs and here
            from brivl.filter.model_score import load_scorer

            pinned = _pinned(cfg.model_score)
            scorer = load_scorer(pinned)
            lineage = {"model": cfg.model_score, "pinned": pinned, "model_id": run.inputs[-1]}
        result = run_filter(input_dir, run.out_dir, cfg, workers=workers, eval_images=images,
                            scorer=scorer)
        return StageOutput(result.row_counts,
                           {"report": result.report, "input_dir": str(input_dir),
                            "eval_sets": str(eval_sets or ""), "model_score": lineage})

    params = {"input_dir": input_dir, "config": config, "out_dir": out_dir,
              "eval_sets": eval_sets or None}
    return str(FILTER.run(produce, params).out_dir)
