"""``models:/`` and ``runs:/`` URIs to local checkpoint directories (MLflow download, cached).

:func:`resolve_mlflow_uri` turns ``models:/brivl@champion``, ``models:/brivl/3`` or
``runs:/<id>/model`` into a local checkpoint directory; it is registered as the
``brivl.uri_resolvers`` entry point for ``models`` and ``runs``, so
``brivl.inference.load("models:/brivl@champion")`` works without brivl importing MLflow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import mlflow

from brivl.env import project_home
from brivl.fingerprint import stable_hash
from tasks import tracking
from tasks.pyfunc_model import CHECKPOINT_ARTIFACT


def _canonical(uri: str) -> tuple[str, str]:
    """(download URI, cache identity) for a ``models:/`` or ``runs:/`` URI."""
    client = mlflow.MlflowClient()
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, version = rest.split("/", 1)
            mv = client.get_model_version(name, version) if version.isdigit() else None
            if mv is None:
                return uri, stable_hash(uri)
        else:  # a logged-model id (models:/m-...)
            return uri, stable_hash(uri)
        canon = f"models:/{mv.name}/{mv.version}"
        return canon, stable_hash([canon, mv.run_id, mv.creation_timestamp, mv.source])
    if uri.startswith("runs:/"):
        return uri, stable_hash(uri)
    raise ValueError(
        f"{uri!r}: not an MLflow model URI; accepted: models:/NAME@ALIAS, "
        "models:/NAME/VERSION, models:/MODEL_ID, runs:/RUN_ID/PATH"
    )


def _find_checkpoint(local: Path) -> Path:
    from brivl.model import is_checkpoint

    if is_checkpoint(local):
        return local
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        import yaml

        flavors = yaml.safe_load(mlmodel.read_text()).get("flavors", {})
        artifacts = flavors.get("python_function", {}).get("artifacts", {}) or {}
        rel = (artifacts.get(CHECKPOINT_ARTIFACT) or {}).get("path")
        if rel and is_checkpoint(local / rel):
            return local / rel
    found = [p.parent for p in local.rglob("checkpoint.json") if is_checkpoint(p.parent)]
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(f"{local}: no BriVL checkpoint inside the downloaded model")


def resolve_mlflow_uri(uri: str) -> str:
    """A local checkpoint directory for an MLflow model URI (downloaded once, then cached
    under ``$BRIVL_HOME/model_cache`` by the resolved version)."""
    tracking._mlflow()
    download_uri, identity = _canonical(uri)
    cache = project_home() / "model_cache" / identity[:24]
    if cache.is_dir():
        return str(_find_checkpoint(cache))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache.parent))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=str(tmp))
        _find_checkpoint(tmp)
        os.replace(tmp, cache)
    except OSError:
        if not cache.is_dir():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(_find_checkpoint(cache))
