"""The index stage: embed the shards with a model checkpoint and build the retrieval index.

Its identity is (checkpoint identity, shard manifest hash, config, code version), so it
reruns only when the model or the shards (or the index settings or code) change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import task  # noqa: E402

from brivl.retrieval.build import IndexConfig, build_retrieval_index, checkpoint_identity  # noqa: E402
from tasks.stage import Stage, StageOutput, StageRun, config_param, input_identity  # noqa: E402

STAGE = "index"
INDEX_CODE = ("brivl.retrieval", "brivl.inference", "brivl.model")


def _registry_version(uri: str) -> Any | None:
    """The MLflow model version a ``models:/name@alias`` or ``models:/name/3`` URI names now."""
    if not uri.startswith("models:/"):
        return None
    from mlflow import MlflowClient

    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        return MlflowClient().get_model_version_by_alias(*rest.split("@", 1))
    if "/" in rest and rest.split("/", 1)[1].isdigit():
        return MlflowClient().get_model_version(*rest.split("/", 1))
    return None


def model_identity(checkpoint: str) -> str:
    """Identity of the model an index is built with.

    A local checkpoint: :func:`checkpoint_identity` (its manifest hash, or a hash of the
    encoder's files). A registry URI (``models:/name@alias`` or ``models:/name/3``): the
    ``brivl.checkpoint_id`` lineage tag ``tasks.register`` puts on the version, i.e. the
    identity of the checkpoint directory it was registered from, so moving an alias to
    another version rebuilds, and the same weights by path or by URI share one index.
    """
    checkpoint = str(checkpoint)
    version = _registry_version(checkpoint)
    if version is None:
        return checkpoint_identity(checkpoint)
    return version.tags.get("brivl.checkpoint_id") or f"models:/{version.name}/{version.version}"


def pinned_checkpoint(checkpoint: str) -> str:
    """What the index manifest records as its model: an absolute local path, or for a
    registry URI the version it names now (an alias may move on; the index must not)."""
    version = _registry_version(str(checkpoint))
    if version is not None:
        return f"models:/{version.name}/{version.version}"
    path = Path(checkpoint).expanduser()
    return str(path.resolve()) if path.exists() else str(checkpoint)


INDEX = Stage(
    STAGE, INDEX_CODE, config_param(IndexConfig),
    inputs=lambda p: [model_identity(p["checkpoint"]), input_identity(p["shard_dir"])],
)


@task(**INDEX.task_options())
def index_task(checkpoint: str, shard_dir: str, config: dict, out_dir: str | None = None) -> str:
    """Embed the shards with the checkpoint, build clip-retrieval's index; return its directory."""

    def produce(run: StageRun) -> StageOutput:
        from brivl.inference import load
        from brivl.model.trunk_store import default_root

        settings = IndexConfig.from_dict(run.config)
        pinned = pinned_checkpoint(checkpoint)
        encoder = load(pinned, trunk_store=default_root())  # frozen layers: shared records
        summary = build_retrieval_index(encoder, shard_dir, run.out_dir, settings)
        return StageOutput(
            {"indexed": summary["rows"], "rejected": summary["rejected"]},
            {
                "checkpoint": pinned,
                "checkpoint_id": run.inputs[0],
                "shard_dir": str(Path(shard_dir).resolve()),
                "dim": summary["dim"],
                "index_keys": summary["index_keys"],
                "index_name": settings.index_name,
            },
        )

    params = {"checkpoint": checkpoint, "shard_dir": shard_dir, "config": config,
              "out_dir": out_dir}
    return str(INDEX.run(produce, params).out_dir)
