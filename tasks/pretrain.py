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
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task

from brivl import manifest
from brivl.report import print_table, progress
from tasks.stage import Stage, StageOutput, StageRun, input_identity, normalised

PRETRAIN_CODE = ("brivl.train", "brivl.model", "tasks.pretrain")
FINAL_METRICS = ("step", "loss", "acc_i2t", "acc_t2i", "lr", "momentum", "queue_fill",
                 "samples_per_s", "data_wait_frac", "samples_seen", "elapsed_s")


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    """The full :class:`PretrainConfig` dict (defaults filled in), its queue capped at what
    the shards can fill (``brivl.train.baselines.cap_queue``): the config the run trains."""
    from brivl.train import PretrainConfig
    from brivl.train.baselines import cap_queue

    shard_dir = params["shard_dir"]
    manifest.read_manifest(shard_dir)  # a clear error when the shards are incomplete
    cfg = PretrainConfig.from_dict(params.get("config")).to_dict()
    capped, _note = cap_queue(cfg, _train_rows(shard_dir), max(1, cfg["workers"]))
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

    cfg = PretrainConfig.from_dict(run.config)
    _capped, note = cap_queue(PretrainConfig.from_dict(raw_config).to_dict(),
                              _train_rows(shard_dir), max(1, cfg.workers))
    if note:
        _say(note)
    work = run.out_dir / "run"
    checkpoints = work / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    init = _initial_checkpoint(cfg, shard_dir, work / "init")
    resumed_from_step = _latest_step(checkpoints)
    with _Monitor(checkpoints, cfg.steps, follow=cfg.workers > 0) as monitor:
        if cfg.workers == 0:
            summary = _train_local(cfg, shard_dir, checkpoints, init, monitor.on_metrics)
        else:
            summary = _train_ray(cfg, shard_dir, checkpoints, init, work)
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


def _latest_step(checkpoints: Path) -> int:
    from brivl.train import latest_checkpoint, read_trainer_state

    latest = latest_checkpoint(checkpoints)
    return int(read_trainer_state(latest)["step"]) if latest else 0


def _train_rows(shard_dir: str) -> int:
    import pyarrow.parquet as pq

    from brivl.train import shard_files

    return sum(pq.read_metadata(p).num_rows for p in shard_files(shard_dir, "train"))


# -- local (in-process) ----------------------------------------------------------------------------
def _train_local(cfg: Any, shard_dir: str, checkpoints: Path, init: Path,
                 on_metrics: Callable[[dict], None]) -> dict[str, Any]:
    from brivl.model import build_config
    from brivl.train import ShardBatches, train

    image_size = build_config(cfg.model, cfg.model_overrides).image_size
    batches = ShardBatches(shard_dir, "train", batch_size=cfg.batch_size, image_size=image_size,
                           augment=cfg.augment, seed=cfg.seed, shuffle=cfg.shuffle,
                           raw=cfg.trunk_cache)
    result = train(cfg.train_config(), batches, on_metrics, checkpoints, resume=True,
                   init_checkpoint=init)
    result.pop("model", None)
    return result


# -- Ray Train -------------------------------------------------------------------------------------
def _train_ray(cfg: Any, shard_dir: str, checkpoints: Path, init: Path, work: Path) -> dict[str, Any]:
    import ray.data
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from brivl.env import project_home
    from brivl.model import build_config
    from brivl.train import decode_augment_batch, latest_checkpoint, read_trainer_state, shard_files
    from tasks.ray_runtime import ensure_ray

    ensure_ray()
    image_size = build_config(cfg.model, cfg.model_overrides).image_size
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # decoded blocks of a few batches: a decode task hands its first rows on at once instead
    # of after its whole input file, so workers do not stall when a new file starts
    context.target_max_block_size = max(1 << 20, 4 * cfg.batch_size * 3 * image_size**2)
    files = [str(p) for p in shard_files(shard_dir, "train")]
    dataset = _epochs_dataset(
        files, cfg, _train_rows(shard_dir),
        lambda some: ray.data.read_parquet(some, columns=["key", "image", "caption"],
                                           num_cpus=cfg.data_cpus),
    ).map_batches(
        decode_augment_batch, batch_format="numpy", batch_size=cfg.batch_size,
        num_cpus=cfg.data_cpus,
        fn_kwargs={"image_size": image_size, "augment": cfg.augment if cfg.augment.enabled else None},
    )
    fit_id = uuid.uuid4().hex
    loop_config = {"config": cfg.to_dict(), "checkpoint_dir": str(checkpoints),
                   "init_checkpoint": str(init), "samples_per_epoch": _train_rows(shard_dir),
                   "fit_id": fit_id}
    trainer = TorchTrainer(
        _ray_train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": _cpus_per_worker(cfg)},
                                     placement_strategy=cfg.placement_strategy),
        datasets={"train": dataset},
        run_config=RunConfig(
            name=f"{work.parent.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(project_home() / "ray_results"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    last = latest_checkpoint(checkpoints)
    if last is None:
        raise RuntimeError(f"Ray Train finished without writing a checkpoint under {checkpoints}")
    state = read_trainer_state(last)
    starts = [w for w in _worker_starts(checkpoints) if w["fit_id"] == fit_id]
    first_rank = [w for w in starts if w["rank"] == 0]
    return {"step": state["step"], "checkpoint": str(last), "metrics": state.get("metrics", {}),
            "samples_seen": state.get("samples_seen"),
            "resumed_from_step": first_rank[-1]["start_step"] if first_rank else 0,
            "worker_group_starts": len(first_rank),
            "ray_nodes": len({w["node_id"] for w in starts})}


WORKERS_LOG = "ray_workers.jsonl"  # one line per Ray Train worker start: rank, node, pid, step


def _worker_starts(checkpoints: Path) -> list[dict[str, Any]]:
    log = checkpoints / WORKERS_LOG
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _record_worker_start(loop_config: dict) -> None:
    """Append where this worker runs and the step it resumes from (for operators and tests)."""
    import ray
    import ray.train

    context = ray.train.get_context()
    record = {"fit_id": loop_config["fit_id"], "rank": context.get_world_rank(),
              "world_size": context.get_world_size(), "node_id": ray.get_runtime_context().get_node_id(),
              "pid": os.getpid(), "start_step": _latest_step(Path(loop_config["checkpoint_dir"])),
              "time": time.time()}
    with open(Path(loop_config["checkpoint_dir"]) / WORKERS_LOG, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _epochs_dataset(files: list[str], cfg: Any, n_train: int, read: Callable[[list[str]], Any]) -> Any:
    """Every epoch the run needs as one dataset (a union; file order reshuffled per epoch).

    One long stream: workers never wait for a new epoch's pipeline to start. (Listing the
    same file twice in one read does not work: the reader drops the repeat.)
    """
    import numpy as np

    total = cfg.total_steps(n_train, cfg.workers) * cfg.batch_size * cfg.workers
    epochs = total // max(1, n_train) + 2  # + the partial epoch and batches dropped at the end
    parts = []
    for epoch in range(epochs):
        order = (np.random.default_rng([cfg.seed, epoch]).permutation(len(files)) if cfg.shuffle
                 else range(len(files)))
        parts.append(read([files[i] for i in order]))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _cpus_per_worker(cfg: Any) -> float:
    """Requested CPUs per worker; by default what leaves ``data_cpus`` free (at most 1).

    Ray Data's read/decode tasks each need ``data_cpus`` free CPUs: workers holding every CPU
    would starve the data pipeline and the run would wait forever.
    """
    import ray

    if cfg.cpus_per_worker is not None:
        return float(cfg.cpus_per_worker)
    total = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.1, min(1.0, (total - cfg.data_cpus) / cfg.workers))


def _ray_train_loop(loop_config: dict) -> None:
    """Body of each Ray Train worker: this worker's dataset split through :func:`brivl.train.train`."""
    import ray.train
    import torch

    from brivl.train import PretrainConfig, train

    cfg = PretrainConfig.from_dict(loop_config["config"])
    if cfg.use_gpu:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    shard = ray.train.get_dataset_shard("train")
    _record_worker_start(loop_config)

    def batches(skip: int):
        # the dataset already holds every epoch the run needs (see _epochs_dataset); another
        # pass only happens if a restart consumed more than planned
        rounds = 0
        while True:
            for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy",
                                            drop_last=True, prefetch_batches=2,
                                            local_shuffle_buffer_size=(4 * cfg.batch_size
                                                                       if cfg.shuffle else None),
                                            local_shuffle_seed=cfg.seed + rounds):
                if skip > 0:  # already trained on before a restart
                    skip -= 1
                    continue
                yield batch
            rounds += 1

    train(cfg.train_config(), batches, ray.train.report, loop_config["checkpoint_dir"],
          resume=True, init_checkpoint=loop_config["init_checkpoint"],
          samples_per_epoch=loop_config["samples_per_epoch"], prefetch_batches=0)


# -- finish ----------------------------------------------------------------------------------------
def _finish(run: StageRun, cfg: Any, shard_dir: str, checkpoints: Path,
            summary: dict[str, Any]) -> StageOutput:
    from brivl.model import load_checkpoint
    from brivl.train import latest_checkpoint, read_metrics_log, retrieval_metrics

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


# -- progress + MLflow -----------------------------------------------------------------------------
class _Monitor:
    """Shows a progress bar and logs each reported step to MLflow (when a run is active).

    Local training calls :meth:`on_metrics` directly; with ``follow`` (Ray Train) a thread
    reads the ``metrics.jsonl`` that rank 0 appends to.
    """

    def __init__(self, checkpoints: Path, total: int | None, follow: bool) -> None:
        self.log = checkpoints / "metrics.jsonl"
        self.total, self.follow = total, follow
        self.done_step = 0
        self.run_id = _mlflow_run_id()
        self.stop = threading.Event()
        self.offset = self.log.stat().st_size if self.log.is_file() else 0

    def __enter__(self) -> _Monitor:
        self.bar = progress("pretrain", self.total)
        self.advance = self.bar.__enter__()
        self.thread = threading.Thread(target=self._follow, daemon=True, name="pretrain-monitor")
        if self.follow:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.follow:
            self.stop.set()
            self.thread.join(timeout=5)
            self._read_new()
        self.bar.__exit__(*exc)

    def on_metrics(self, metrics: dict[str, Any]) -> None:
        """One reported step: advance the bar, log to MLflow (each step once)."""
        step = int(metrics["step"])
        if step <= self.done_step:
            return  # a resumed run repeats steps the killed one had reported
        label = "pretrain"
        if isinstance(metrics.get("loss"), (int, float)):
            label += f": loss {metrics['loss']:.3f}"
        if isinstance(metrics.get("samples_per_s"), (int, float)):
            label += f", {metrics['samples_per_s']:.0f} samples/s"
        self.advance(step - self.done_step, description=label)
        self.done_step = step
        if self.run_id is not None:
            import mlflow

            values = {f"train/{k}": float(v) for k, v in metrics.items()
                      if k != "step" and isinstance(v, (int, float))}
            mlflow.log_metrics(values, step=step, run_id=self.run_id)

    def _follow(self) -> None:
        while not self.stop.wait(1.0):
            self._read_new()

    def _read_new(self) -> None:
        if not self.log.is_file():
            return
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a half-written last line waits
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            if line.strip():
                self.on_metrics(json.loads(line))


def _mlflow_run_id() -> str | None:
    try:
        import mlflow
    except ImportError:  # pragma: no cover - project dependency
        return None
    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


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
