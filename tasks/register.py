"""Model registration: an MLflow pyfunc of the checkpoint, lineage tags, and a champion gate.

``register_model`` logs the checkpoint as a pyfunc (input: a DataFrame with ``text`` and/or
``image`` columns; output: ``text_embedding`` / ``image_embedding`` columns), registers a
new version of ``model_name`` with lineage tags, then gates it: the new version takes the
alias ``champion`` when its primary metric is >= the current champion's (or there is no
champion), else ``challenger``. The decision is a version tag, run tags and a JSON artifact.

The gate's decision is :func:`brivl.evaluate.gate.gate` (a pure function); turning a
``models:/`` URI back into a checkpoint is ``tasks/model_uri.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from prefect import task

from brivl.evaluate.gate import CHAMPION, gate
from brivl.fingerprint import file_sha256, stable_hash
from tasks import tracking
from tasks.pyfunc_model import CHECKPOINT_ARTIFACT
from tasks.stage import Stage, StageOutput, StageRun

MODEL_NAME = "brivl"
DEFAULT_PRIMARY_METRIC = "retrieval/mean_recall"  # mean of R@1/5/10 both ways
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
TAG = "brivl."  # prefix of every tag this module writes
# what the pyfunc needs at load time; other checkpoint files (optimizer state) stay out
_CHECKPOINT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "checkpoint.json")
_LINEAGE_FILES = ("_manifest.json",)


# -- the pyfunc ---------------------------------------------------------------------------
def model_signature() -> Any:
    """Input: optional ``text`` (string), ``image`` (binary); output: float array columns."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [ColSpec("string", "text", required=False), ColSpec("binary", "image", required=False)]
        ),
        outputs=Schema(
            [
                ColSpec(Array("float"), "text_embedding", required=False),
                ColSpec(Array("float"), "image_embedding", required=False),
            ]
        ),
        params=None,
    )


def _requirements() -> list[str]:
    pins = []
    for dist in ("torch", "numpy", "pandas", "pillow", "safetensors", "tokenizers", "mlflow"):
        try:
            pins.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


# -- identities and lineage -----------------------------------------------------------------
def checkpoint_identity(checkpoint_dir: str | Path) -> str:
    """The checkpoint's manifest hash when it is a stage output, else a hash of its files."""
    from brivl.manifest import ManifestError, read_manifest

    directory = Path(checkpoint_dir)
    try:
        return read_manifest(directory)["hash"]
    except ManifestError:
        files = {
            n: file_sha256(directory / n) for n in _CHECKPOINT_FILES if (directory / n).is_file()
        }
        if not files:
            raise FileNotFoundError(f"{directory}: not a checkpoint directory") from None
        return stable_hash(files)


def git_commit() -> str:
    """The repository's HEAD commit (with ``-dirty`` when the tree has changes), or ``""``."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}-dirty" if sha and dirty else sha


def lineage_tags(
    checkpoint_dir: str | Path, shards_dir: str | Path | None = None, **extra: Any
) -> dict[str, str]:
    """Tags naming where a model came from: checkpoint identity, its manifest's inputs and
    code version, the shard manifest hash, the git commit; ``extra`` is added as is."""
    from brivl.manifest import ManifestError, read_manifest

    tags = {"checkpoint_id": checkpoint_identity(checkpoint_dir), "git_commit": git_commit()}
    try:
        body = read_manifest(checkpoint_dir)
        tags["train_code_version"] = body.get("code_version", "")
        tags["train_inputs"] = ",".join(body.get("inputs", []))
    except ManifestError:
        pass
    if shards_dir:
        body = read_manifest(shards_dir)
        tags["shards_manifest_hash"] = body["hash"]
        tags["shards_code_version"] = body.get("code_version", "")
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def _slim_copy(checkpoint_dir: Path, into: Path) -> Path:
    """The files inference needs (plus the lineage manifest), copied into ``into/checkpoint``."""
    from brivl.model import is_checkpoint

    if not is_checkpoint(checkpoint_dir):
        raise FileNotFoundError(f"{checkpoint_dir}: not a complete BriVL checkpoint directory")
    target = into / CHECKPOINT_ARTIFACT
    target.mkdir(parents=True)
    for name in _CHECKPOINT_FILES + _LINEAGE_FILES:
        if (checkpoint_dir / name).is_file():
            shutil.copy2(checkpoint_dir / name, target / name)
    return target


# -- the gate --------------------------------------------------------------------------------
def _champion(client: Any, model_name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None


def _version_metric(client: Any, version: Any, metric: str) -> float | None:
    try:
        raw = json.loads(version.tags.get(f"{TAG}metrics", "{}")).get(metric)
    except (json.JSONDecodeError, AttributeError):
        raw = None
    if raw is None and version.run_id:  # registered elsewhere: read the run's metric
        raw = client.get_run(version.run_id).data.metrics.get(tracking.clean_key(metric))
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def register_model(
    checkpoint_dir: str | Path,
    metrics: dict[str, float],
    primary_metric: str,
    lineage_tags: dict[str, Any],
    model_name: str = MODEL_NAME,
) -> dict[str, Any]:
    """Log the checkpoint as a pyfunc, register a new version, gate it; see the module doc.

    Logs into the active MLflow run, or opens a ``register`` stage run. Returns
    ``{model_name, version, alias, decision, model_uri, alias_uri, run_id}``.
    """
    checkpoint_dir = Path(checkpoint_dir)
    tracking._mlflow()
    client = mlflow.MlflowClient()
    with _run_for_registration() as run:
        tracking.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="brivl-register-") as tmp:
            artifact = _slim_copy(checkpoint_dir, Path(tmp))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*(input example|type hint).*")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_CODE),
                    artifacts={CHECKPOINT_ARTIFACT: str(artifact)},
                    signature=model_signature(),
                    pip_requirements=_requirements(),
                    metadata={"checkpoint_id": str(lineage_tags.get("checkpoint_id", ""))},
                )
        value = metrics.get(primary_metric)
        current = _champion(client, model_name)
        current_value = _version_metric(client, current, primary_metric) if current else None
        alias, reason = gate(value, current_value, current is not None)
        tags = {tracking.clean_key(f"{TAG}{k}"): str(v) for k, v in lineage_tags.items()}
        tags.update(
            {
                f"{TAG}metrics": json.dumps({k: float(v) for k, v in metrics.items()}),
                f"{TAG}primary_metric": primary_metric,
                f"{TAG}primary_value": repr(value),
                f"{TAG}source_checkpoint": str(checkpoint_dir.resolve()),
                f"{TAG}gate": alias,
                f"{TAG}gate_reason": reason,
            }
        )
        mv = mlflow.register_model(info.model_uri, model_name, tags=tags)
        version = str(mv.version)
        client.set_registered_model_alias(model_name, alias, version)
        client.update_model_version(
            model_name, version, description=f"gate: {alias} ({primary_metric}: {reason})"
        )
        decision = {
            "model_name": model_name,
            "version": int(version),
            "primary_metric": primary_metric,
            "new_value": value,
            "champion_version": int(current.version) if current else None,
            "champion_value": current_value,
            "outcome": alias,
            "reason": reason,
        }
        mlflow.set_tags(
            {
                f"{TAG}gate.outcome": alias,
                f"{TAG}gate.reason": reason,
                f"{TAG}model_version": version,
            }
        )
        tracking.log_json(decision, "gate_decision.json")
        return {
            "model_name": model_name,
            "version": int(version),
            "alias": alias,
            "decision": decision,
            "model_uri": f"models:/{model_name}/{version}",
            "alias_uri": f"models:/{model_name}@{alias}",
            "run_id": run.info.run_id,
        }


def _run_for_registration() -> Any:
    tracking._mlflow()
    if mlflow.active_run() is not None:
        return contextlib.nullcontext(mlflow.active_run())
    return tracking.stage_run("register")


def find_version(checkpoint_id: str, model_name: str = MODEL_NAME) -> Any | None:
    """The registered version carrying ``checkpoint_id`` as lineage, if any."""
    tracking._mlflow()
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except mlflow.exceptions.MlflowException:
        return None
    found = [v for v in versions if v.tags.get(f"{TAG}checkpoint_id") == checkpoint_id]
    return max(found, key=lambda v: int(v.version)) if found else None


# -- the Prefect task -------------------------------------------------------------------------
REGISTRATION_FILE = "registration.json"


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": params.get("model_name") or MODEL_NAME,
            "primary_metric": params.get("primary_metric") or DEFAULT_PRIMARY_METRIC}


def _inputs(params: dict[str, Any]) -> list[str]:
    """The checkpoint, the shards it was trained on, the metrics and tags it is registered with."""
    from brivl.manifest import read_manifest

    shards = params.get("shards_dir")
    return [checkpoint_identity(params["checkpoint_dir"]),
            read_manifest(shards)["hash"] if shards else "",
            stable_hash(params.get("metrics") or {}), stable_hash(params.get("extra_tags") or {})]


def _report(run: Any, params: dict[str, Any]) -> None:
    result = json.loads((run.out_dir / REGISTRATION_FILE).read_text())
    mlflow.set_tags({f"{TAG}model_version": result["version"], f"{TAG}model_uri": result["model_uri"]})


REGISTER = Stage("register", ("tasks.register", "tasks.pyfunc_model", "brivl.evaluate.gate"), _normalise, _inputs,
                 report=_report)


@task(name="register", **REGISTER.task_options())
def register_task(
    checkpoint_dir: str,
    metrics: dict[str, float],
    primary_metric: str = DEFAULT_PRIMARY_METRIC,
    shards_dir: str | None = None,
    model_name: str = MODEL_NAME,
    extra_tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register the checkpoint (once per checkpoint identity) and gate it; small dict back.

    A checkpoint already registered under ``model_name`` is not registered again: its
    version and current aliases are returned with ``decision.outcome == "already registered"``.
    The stage directory keeps the answer (``registration.json``), so the same call again
    returns it without asking the registry.
    """

    def produce(run: StageRun) -> StageOutput:
        config = run.config
        result = _register_once(checkpoint_dir, metrics, config["primary_metric"], shards_dir,
                                config["model_name"], extra_tags)
        (run.out_dir / REGISTRATION_FILE).write_text(json.dumps(result, indent=2, sort_keys=True))
        return StageOutput({"version": int(result["version"])},
                           {"outcome": result["decision"]["outcome"]})

    params = {"checkpoint_dir": checkpoint_dir, "metrics": metrics,
              "primary_metric": primary_metric, "shards_dir": shards_dir,
              "model_name": model_name, "extra_tags": extra_tags}
    run = REGISTER.run(produce, params)
    return json.loads((run.out_dir / REGISTRATION_FILE).read_text())


def _register_once(checkpoint_dir: str, metrics: dict[str, float], primary_metric: str,
                   shards_dir: str | None, model_name: str, extra_tags: dict[str, Any] | None,
                   ) -> dict[str, Any]:
    """Inside the register child run: the existing version of this checkpoint, else a new one."""
    tags = lineage_tags(checkpoint_dir, shards_dir, **(extra_tags or {}))
    tracking.log_flat_params({"lineage": tags})
    existing = find_version(tags["checkpoint_id"], model_name)
    if existing is None:
        result = register_model(checkpoint_dir, metrics, primary_metric, tags, model_name)
        return json.loads(json.dumps(result, default=str))
    version = int(existing.version)
    alias = (existing.aliases or [existing.tags.get(f"{TAG}gate", "")])[0]
    decision = {"outcome": "already registered", "version": version, "alias": alias}
    mlflow.set_tags({f"{TAG}gate.outcome": "already registered"})
    tracking.log_json(decision, "gate_decision.json")
    return {
        "model_name": model_name,
        "version": version,
        "alias": alias,
        "decision": decision,
        "model_uri": f"models:/{model_name}/{version}",
        "alias_uri": f"models:/{model_name}@{alias}" if alias else "",
        "run_id": existing.run_id,
    }
