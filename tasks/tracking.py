"""MLflow tracking helpers: one parent run per pipeline run, one child run per stage.

The tracking URI comes from the environment (``MLFLOW_TRACKING_URI``; ``brivl.env`` sets a
sqlite file under ``$BRIVL_HOME``). Runs go to the experiment ``$BRIVL_MLFLOW_EXPERIMENT``
(default ``brivl``), created with its artifacts under ``$MLFLOW_ARTIFACTS_DESTINATION`` when
tracking is local.

Prefect runs tasks in worker threads and MLflow's active run is thread-local, so the parent
run's id travels in the environment (``BRIVL_MLFLOW_PARENT_RUN_ID``): :func:`stage_run`
inside any task nests under the pipeline run that :func:`start_pipeline_run` opened.

    with start_pipeline_run("pipeline", tags={"seed": url}):
        ...
        # inside a task:
        with stage_run("filter"):
            log_flat_params(config); log_table("rejected_by_rule", rows)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from brivl.env import apply_defaults

PARENT_ENV = "BRIVL_MLFLOW_PARENT_RUN_ID"
EXPERIMENT_ENV = "BRIVL_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "brivl"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
_BAD_KEY = re.compile(r"[^\w.\- /:]")


def _mlflow() -> Any:
    apply_defaults()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    from tasks.stores import prepare_tracking_store

    uri = os.environ["MLFLOW_TRACKING_URI"]
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    prepare_tracking_store()  # a fresh home's schema, created once under a file lock
    return mlflow


def tracking_uri() -> str:
    """Where runs are recorded (from ``MLFLOW_TRACKING_URI``)."""
    apply_defaults()
    return os.environ["MLFLOW_TRACKING_URI"]


UI_PORT = 5000


def ui_command() -> str:
    """The shell command that opens the MLflow UI on this tracking store (without the job
    runner ``mlflow server`` would otherwise start)."""
    return ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri "
            f"'{tracking_uri()}' --host 127.0.0.1 --port {UI_PORT}")


def ui_runs_url(experiment_id: str, port: int = UI_PORT) -> str:
    """The experiment's runs table in the MLflow UI. MLflow 3.17's UI picks its GenAI or
    model-training views from a browser-wide toggle (GenAI unless changed), not from the
    experiment's kind tag: ``workflowType=machine_learning`` in the link selects training."""
    return (f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs"
            "?workflowType=machine_learning")


def _is_local(uri: str) -> bool:
    return uri.split(":", 1)[0] in ("sqlite", "file", "postgresql", "mysql") or "://" not in uri


# MLflow 3 names an experiment of this kind "Machine learning"; 3.17's UI still opens on the
# GenAI overview unless the link says workflowType=machine_learning (see ui_runs_url)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(name: str | None = None) -> str:
    """The id of experiment ``name`` (default ``$BRIVL_MLFLOW_EXPERIMENT`` or ``brivl``)."""
    mlflow = _mlflow()
    name = name or os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if _is_local(tracking_uri()) and os.environ.get("MLFLOW_ARTIFACTS_DESTINATION"):
        location = Path(os.environ["MLFLOW_ARTIFACTS_DESTINATION"]).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except mlflow.exceptions.MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


def parent_run_id() -> str | None:
    """The pipeline run that stage runs nest under, if one is open."""
    return os.environ.get(PARENT_ENV) or None


@contextlib.contextmanager
def start_pipeline_run(
    name: str, tags: Mapping[str, Any] | None = None, experiment: str | None = None
) -> Iterator[Any]:
    """Open the parent run of one pipeline run; stage runs opened meanwhile nest under it.

    Yields MLflow's ``ActiveRun``; the run ends FAILED if the block raises.
    """
    mlflow = _mlflow()
    run_tags = {"brivl.kind": "pipeline", **{k: str(v) for k, v in (tags or {}).items()}}
    active = mlflow.active_run()
    run = mlflow.start_run(
        experiment_id=active.info.experiment_id if active else ensure_experiment(experiment),
        run_name=name,
        nested=active is not None,
        tags=run_tags,
    )
    previous = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = run.info.run_id
    try:
        with run:
            yield run
    finally:
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous


@contextlib.contextmanager
def stage_run(stage_name: str, tags: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A child run for one stage: nested under the active run in this thread, else under
    the open pipeline run (any thread), else a top-level run. Yields the ``ActiveRun``."""
    mlflow = _mlflow()
    run_tags = {
        "brivl.kind": "stage",
        "brivl.stage": stage_name,
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    parent = parent_run_id()
    active = mlflow.active_run()
    if active is not None:
        run = mlflow.start_run(
            experiment_id=active.info.experiment_id,
            run_name=stage_name,
            nested=True,
            tags=run_tags,
        )
    elif parent:
        experiment_id = mlflow.MlflowClient().get_run(parent).info.experiment_id
        run = mlflow.start_run(
            experiment_id=experiment_id, run_name=stage_name, parent_run_id=parent, tags=run_tags
        )
    else:
        run = mlflow.start_run(
            experiment_id=ensure_experiment(), run_name=stage_name, tags=run_tags
        )
    with run:
        yield run


def clean_key(key: str) -> str:
    """A param/metric/tag name MLflow accepts (other characters become ``_``)."""
    return _BAD_KEY.sub("_", str(key)).strip("/") or "_"


def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts (and dataclasses) -> ``{"a.b.c": "value"}``; lists become JSON strings."""
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    out: dict[str, str] = {}
    if isinstance(config, Mapping):
        if not config and prefix:
            out[prefix] = "{}"
        for key, value in config.items():
            out.update(flatten_params(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(config, (list, tuple)):
        text = json.dumps(list(config), default=str)
    elif config is None:
        text = "None"
    else:
        text = str(config)
    out[prefix or "value"] = text[:MAX_PARAM_LENGTH]
    return out


def log_flat_params(config: Any, prefix: str = "") -> dict[str, str]:
    """Log a nested config as flattened params on the active run; returns what was logged."""
    mlflow = _mlflow()
    flat = {clean_key(k): v for k, v in flatten_params(config, prefix).items()}
    items = list(flat.items())
    for start in range(0, len(items), 100):  # MLflow's batch limit
        mlflow.log_params(dict(items[start : start + 100]))
    return flat


def log_metrics(metrics: Mapping[str, float], step: int | None = None, prefix: str = "") -> None:
    """Log numeric metrics (names cleaned; non-finite values skipped) on the active run."""
    mlflow = _mlflow()
    clean = {
        clean_key(f"{prefix}{k}"): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    }
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_table(name: str, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> str:
    """Log rows (list of dicts, or one ``{name: value}`` mapping) as ``tables/<name>.json``
    (shown by MLflow's table viewer) and ``tables/<name>.csv``; returns the JSON path."""
    import pandas as pd

    mlflow = _mlflow()
    if isinstance(rows, Mapping):
        rows = [{"name": k, "value": v} for k, v in rows.items()]
    frame = pd.DataFrame(list(rows))
    path = f"tables/{clean_key(name)}.json"
    mlflow.log_table(frame, artifact_file=path)
    mlflow.log_text(frame.to_csv(index=False), f"tables/{clean_key(name)}.csv")
    return path


def log_image(image: Any, name: str) -> str:
    """Log a PIL image as ``images/<name>.png``; returns the artifact path."""
    mlflow = _mlflow()
    path = f"images/{clean_key(name)}.png"
    mlflow.log_image(image, artifact_file=path)
    return path


def log_file(path: str | Path, artifact_dir: str = "") -> str:
    """Log a file as it is (e.g. a figure's sources table) under ``artifact_dir``."""
    _mlflow().log_artifact(str(path), artifact_path=artifact_dir or None)
    return f"{artifact_dir}/{Path(path).name}" if artifact_dir else Path(path).name


def log_figure(figure: Any, name: str) -> str:
    """Log a matplotlib figure (or a PIL image) as ``figures/<name>.png``."""
    mlflow = _mlflow()
    path = f"figures/{clean_key(name)}.png"
    if hasattr(figure, "savefig"):
        mlflow.log_figure(figure, path)
    else:
        mlflow.log_image(figure, artifact_file=path)
    return path


def log_json(obj: Any, name: str) -> str:
    """Log a JSON-able object as ``<name>.json``; returns the artifact path."""
    mlflow = _mlflow()
    path = name if name.endswith(".json") else f"{name}.json"
    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), path)
    return path


def log_manifest(stage_dir: str | Path, name: str | None = None) -> dict[str, Any]:
    """Log a stage directory's identity on the active run: its ``_manifest.json`` as an
    artifact, ``manifest_hash``/``code_version`` tags and row counts as metrics."""
    from brivl.manifest import MANIFEST_NAME, read_manifest

    mlflow = _mlflow()
    body = read_manifest(stage_dir)
    label = name or body["stage"]
    mlflow.log_artifact(str(Path(stage_dir) / MANIFEST_NAME), artifact_path=f"manifests/{label}")
    mlflow.set_tags(
        {
            f"brivl.{label}.manifest_hash": body["hash"],
            f"brivl.{label}.code_version": body.get("code_version", ""),
            f"brivl.{label}.path": str(Path(stage_dir).resolve()),
        }
    )
    log_metrics({f"{label}.rows.{k}": v for k, v in body.get("row_counts", {}).items()})
    return body


def log_dataset_input(stage_dir: str | Path, context: str = "training") -> None:
    """Name a stage directory (e.g. the shards) as an MLflow dataset input of the active run,
    so the run table's Dataset column shows it: name and digest from its manifest."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from brivl.manifest import read_manifest

    mlflow = _mlflow()
    body = read_manifest(stage_dir)
    with warnings.catch_warnings():  # a local path matches two equivalent source kinds
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(stage_dir).resolve()))
    total = body.get("row_counts", {}).get("total")
    name = f"{body['stage']} {body['hash'][:12]}" + (f" ({total} rows)" if total else "")
    mlflow.log_input(MetaDataset(source, name=name, digest=body["hash"][:36]), context=context)
