"""The retrain flow: pretrain on a shard set → evaluate → register with the champion gate.

This is what ML ops trigger (``prefect deployment run brivl-retrain/retrain`` or
``brivl retrain``); the full pipeline calls it after the data flow.
"""

from __future__ import annotations

from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import flow  # noqa: E402

from flows.runs import pipeline_run  # noqa: E402
from tasks.evaluate import evaluate_task  # noqa: E402
from tasks.pretrain import pretrain_task  # noqa: E402
from tasks.register import register_task  # noqa: E402

DEFAULT_PRIMARY_METRIC = "retrieval/mean_recall"


@flow(name="brivl-retrain")
def retrain_flow(
    shard_dir: str,
    train_config: dict | None = None,
    eval_sets: str | dict[str, str] | None = None,
    eval_config: dict | None = None,
    model_name: str = "brivl",
    primary_metric: str = DEFAULT_PRIMARY_METRIC,
) -> dict[str, Any]:
    """Pretrain → evaluate → register. Returns checkpoint, metrics and the registry decision."""
    with pipeline_run("retrain", {"shard_dir": shard_dir}):
        trained = pretrain_task(shard_dir, train_config or {})
        metrics = _prefixed(trained.get("metrics", {}), "train/")
        if eval_sets:
            metrics.update(evaluate_task(trained["checkpoint"], eval_sets, eval_config or {}))
        registered = register_task(
            trained["checkpoint"], metrics, primary_metric, shards_dir=shard_dir, model_name=model_name
        )
    return {"checkpoint": trained["checkpoint"], "metrics": metrics, "registered": registered}


def _prefixed(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))
    }
