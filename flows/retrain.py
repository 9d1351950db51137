"""The retrain flow: pretrain on a shard set → evaluate → baselines → register with the gate.

Baselines, evaluated on the same held-out sets: the same towers at step 0, and the
frozen-towers (LiT-style) model: only two linear projections trained, on the same shards,
for the trained model's training wall time (``brivl.train.baselines``).

ML ops trigger it through its deployment (``prefect deployment run brivl-retrain/retrain``,
registered by ``flows/deployments.py``); the full pipeline (``brivl pipeline``) calls it
after the data flow.
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
    baselines: dict | None = None,
) -> dict[str, Any]:
    """Pretrain → evaluate → baselines → register. Returns checkpoint, metrics, baseline
    metrics and the registry decision.

    ``baselines``: ``{"step0": bool, "frozen_towers": bool | {config overrides}}``; both on
    when eval sets are given, unless switched off.
    """
    with pipeline_run("retrain", {"shard_dir": shard_dir}):
        trained = pretrain_task(shard_dir, train_config or {})
        metrics = _prefixed(trained.get("metrics", {}), "train/")
        compared: dict[str, dict[str, float]] = {}
        if eval_sets:
            metrics.update(evaluate_task(trained["checkpoint"], eval_sets, eval_config or {}))
            compared = _baselines(shard_dir, trained, train_config or {}, eval_sets,
                                  eval_config or {}, baselines or {})
        for name, values in compared.items():
            metrics.update(_prefixed(values, f"baseline/{name}/"))
        registered = register_task(
            trained["checkpoint"], metrics, primary_metric, shards_dir=shard_dir, model_name=model_name
        )
    return {"checkpoint": trained["checkpoint"], "metrics": metrics, "baselines": compared,
            "registered": registered}


def _baselines(shard_dir: str, trained: dict[str, Any], train_config: dict, eval_sets: Any,
               eval_config: dict, wanted: dict) -> dict[str, dict[str, float]]:
    """Held-out metrics of the step-0 model and of the frozen-towers baseline."""
    from brivl.train.baselines import frozen_towers_config

    out: dict[str, dict[str, float]] = {}
    if wanted.get("step0", True) and trained.get("init_checkpoint"):
        out["step0"] = evaluate_task(trained["init_checkpoint"], eval_sets, eval_config,
                                     label="evaluate step-0 model")
    frozen = wanted.get("frozen_towers", True)
    if frozen:
        done = trained.get("metrics", {})  # its training time, the trunk-cache fill not counted
        seconds = float(done.get("train_s") or done.get("elapsed_s") or 60.0)
        overrides = frozen if isinstance(frozen, dict) else {}
        config = frozen_towers_config(train_config, seconds, overrides)
        label = "pretrain frozen-towers baseline"
        lit = pretrain_task.with_options(name=label)(shard_dir, config, label=label)
        out["frozen_towers"] = evaluate_task(lit["checkpoint"], eval_sets, eval_config,
                                             label="evaluate frozen-towers baseline")
    return out


def _prefixed(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))
    }
