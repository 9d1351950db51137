"""The ``pretrain`` stage: shards in, a trained checkpoint out, on one process or Ray Train.

Cached by (shard manifest hash, config, code version). The output directory
(``$BRIVL_HOME/data/pretrain/<key>``) ends up as::

    init_checkpoint/   the model at step 0 (pretrained towers, new layers untrained): a baseline
    checkpoint/        the final training checkpoint (loadable by brivl.model.load_checkpoint;
                       also holds optimizer, step and RNG state to train further)
    metrics.jsonl      every reported step (loss, lr, momentum, queue fill, samples/s, data wait)
    metrics.json       final training metrics + validation retrieval R@k (with Ray Train also
                       ray_nodes, worker_group_starts and the step the last group resumed from)
    ray_workers.jsonl  Ray Train only: one line per worker start (rank, node id, pid, step)
    _manifest.json     written last

While it runs, ``run/`` holds the initial model, the periodic checkpoints and Ray's storage;
a killed run rerun with the same inputs resumes from ``run/checkpoints``'s newest checkpoint.

This module is the stage task; the Ray Train driver and worker loop are ``tasks/pretrain_ray.py``,
the progress bar and MLflow curves ``tasks/pretrain_monitor.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task

from brivl import manifest
from brivl.report import print_table
from tasks.stage import Stage, StageOutput, StageRun, input_identity, normalised

PRETRAIN_CODE = ("brivl.train", "brivl.model", "tasks.pretrain", "tasks.pretrain_ray",
                 "tasks.pretrain_monitor")
FINAL_METRICS = ("step", "loss", "acc_i2t", "acc_t2i", "lr", "momentum", "queue_fill",
                 "samples_per_s", "data_wait_frac", "samples_seen", "elapsed_s", "trunk_fill_s",
                 "train_s")


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    """The full :class:`PretrainConfig` dict (defaults filled in), its queue capped at what
    the shards can fill (``brivl.train.baselines.cap_queue``): the config the run trains."""
    from brivl.train import PretrainConfig
    from brivl.train.baselines import cap_queue

    shard_dir = params["shard_dir"]
    manifest.read_manifest(shard_dir)  # a clear error when the shards are incomplete
    cfg = PretrainConfig.from_dict(params.get("config")).to_dict()
    capped, _note = cap_queue(cfg, train_rows(shard_dir), max(1, cfg["workers"]))
    return normalised(PretrainConfig, capped)


def _report(run: StageRun, params: dict[str, Any]) -> None:
    """The run's final metrics (``final/*``) on its child run, fresh or cached."""
    from tasks import tracking

    metrics = manifest.read_manifest(run.out_dir).get("extra", {}).get("metrics", {})
    tracking.log_metrics(metrics, step=int(metrics.get("step", 0)), prefix="final/")
    tracking.log_dataset_input(params["shard_dir"])  # the run table's Dataset column


PRETRAIN = Stage("pretrain", PRETRAIN_CODE, _normalise,
                 inputs=lambda p: [input_identity(p["shard_dir"])], report=_report)


@task(**PRETRAIN.task_options())
def pretrain_task(
    shard_dir: str, config: dict, out_dir: str | None = None, label: str = "pretrain"
) -> dict:
    """Pretrain on a shard directory; return ``{checkpoint, out_dir, metrics}``.

    ``label`` names the MLflow child run (e.g. "pretrain frozen-towers baseline")."""
    return pretrain(shard_dir, config, out_dir, label)


def pretrain(
    shard_dir: str, config: dict, out_dir: str | None = None, label: str = "pretrain"
) -> dict[str, Any]:
    """The body of :func:`pretrain_task` (callable without Prefect)."""
    params = {"shard_dir": shard_dir, "config": config, "out_dir": out_dir, "label": label}
    run = PRETRAIN.run(lambda run: _train(run, shard_dir, config), params)
    return _result(run.out_dir)


def _train(run: StageRun, shard_dir: str, raw_config: dict) -> StageOutput:
    """Train into ``run.out_dir`` (resuming from ``run/checkpoints``); the manifest's counts."""
    from brivl.train import PretrainConfig
    from brivl.train.baselines import cap_queue
    from tasks.pretrain_monitor import Monitor
    from tasks.pretrain_ray import train_ray

    cfg = PretrainConfig.from_dict(run.config)
    _capped, note = cap_queue(PretrainConfig.from_dict(raw_config).to_dict(),
                              train_rows(shard_dir), max(1, cfg.workers))
    if note:
        _say(note)
    work = run.out_dir / "run"
    checkpoints = work / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    init = _initial_checkpoint(cfg, shard_dir, work / "init")
    resumed_from_step = latest_step(checkpoints)
    with Monitor(checkpoints, cfg.steps, follow=cfg.workers > 0) as monitor:
        if cfg.workers == 0:
            summary = _train_local(cfg, shard_dir, checkpoints, init, monitor.on_metrics)
        else:
            summary = train_ray(cfg, shard_dir, checkpoints, init, work)
    summary.setdefault("resumed_from_step", resumed_from_step)  # Ray: its last group's start
    return _finish(run, cfg, shard_dir, checkpoints, summary)


# -- setup -----------------------------------------------------------------------------------------
def _initial_checkpoint(cfg: Any, shard_dir: str, path: Path) -> Path:
    """The starting model, built once (tokenizer trained on the shard captions if needed)."""
    from brivl.model import is_checkpoint
    from brivl.train import prepare_initial_checkpoint, read_captions

    if not is_checkpoint(path):
        prepare_initial_checkpoint(cfg.train_config(), read_captions(shard_dir, "train"), path)
    return path


def latest_step(checkpoints: Path) -> int:
    """The step of the newest checkpoint under ``checkpoints`` (0: none yet)."""
    from brivl.train import latest_checkpoint, read_trainer_state

    latest = latest_checkpoint(checkpoints)
    return int(read_trainer_state(latest)["step"]) if latest else 0


def train_rows(shard_dir: str) -> int:
    """Rows of the shard directory's training split."""
    import pyarrow.parquet as pq

    from brivl.train import shard_files

    return sum(pq.read_metadata(p).num_rows for p in shard_files(shard_dir, "train"))


# -- local (in-process) ----------------------------------------------------------------------------
def _train_local(cfg: Any, shard_dir: str, checkpoints: Path, init: Path,
                 on_metrics: Callable[[dict], None]) -> dict[str, Any]:
    from brivl.model import build_config
    from brivl.model.trunk_store import default_root
    from brivl.train import ShardBatches, train

    image_size = build_config(cfg.model, cfg.model_overrides).image_size
    batches = ShardBatches(shard_dir, "train", batch_size=cfg.batch_size, image_size=image_size,
                           augment=cfg.augment, seed=cfg.seed, shuffle=cfg.shuffle,
                           raw=cfg.trunk_cache, resampled=cfg.resampled)
    result = train(cfg.train_config(), batches, on_metrics, checkpoints, resume=True,
                   init_checkpoint=init, trunk_store=default_root())
    result.pop("model", None)
    return result


# -- finish ----------------------------------------------------------------------------------------
def _finish(run: StageRun, cfg: Any, shard_dir: str, checkpoints: Path,
            summary: dict[str, Any]) -> StageOutput:
    from brivl.model import load_checkpoint
    from brivl.train import latest_checkpoint, read_metrics_log, retrieval_metrics
    from tasks.pretrain_ray import WORKERS_LOG

    last = latest_checkpoint(checkpoints)
    if last is None:
        raise RuntimeError(f"training wrote no checkpoint under {checkpoints}")
    final = run.out_dir / "checkpoint"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(last, final)
    history = read_metrics_log(checkpoints)
    (run.out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    metrics = {k: summary.get("metrics", {}).get(k) for k in FINAL_METRICS}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    metrics["step"] = summary["step"]
    metrics["resumed_from_step"] = summary.get("resumed_from_step", 0)
    for key in ("worker_group_starts", "ray_nodes"):
        if key in summary:
            metrics[key] = summary[key]
    if (checkpoints / WORKERS_LOG).is_file():
        shutil.copyfile(checkpoints / WORKERS_LOG, run.out_dir / WORKERS_LOG)
    if cfg.val_limit > 0 and any((Path(shard_dir) / "val").glob("*.parquet")):
        val = retrieval_metrics(load_checkpoint(final), shard_dir, "val", limit=cfg.val_limit)
        metrics.update({f"val_{k}": v for k, v in val.items()})
    (run.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    init = run.out_dir / "init_checkpoint"  # the step-0 model, the baseline it is compared with
    shutil.rmtree(init, ignore_errors=True)
    shutil.move(str(run.out_dir / "run" / "init"), init)
    shutil.rmtree(run.out_dir / "run", ignore_errors=True)
    return StageOutput(
        {"steps": int(metrics["step"]), "samples_seen": int(metrics.get("samples_seen", 0))},
        {"metrics": metrics, "shard_dir": str(shard_dir)},  # lineage the evaluate stage reads
    )


def _result(out_dir: Path) -> dict[str, Any]:
    body = manifest.read_manifest(out_dir)
    return {"checkpoint": str(out_dir / "checkpoint"), "out_dir": str(out_dir),
            "init_checkpoint": str(out_dir / "init_checkpoint"),
            "manifest": body["hash"], "metrics": body.get("extra", {}).get("metrics", {})}


def print_summary(result: dict[str, Any]) -> None:
    """A closing table of the run's final metrics."""
    rows = {k: v for k, v in result["metrics"].items()}
    rows["checkpoint"] = result["checkpoint"]
    print_table("pretrain", rows)


def _say(message: str) -> None:
    """One line to the terminal and, inside a Prefect run, to its log."""
    print(f"pretrain: {message}", flush=True)
    try:
        from prefect import get_run_logger

        get_run_logger().info(message)
    except Exception:  # not inside a flow or task run: the terminal line is enough
        pass
