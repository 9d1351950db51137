"""Pretrain on Ray Train: the driver (dataset of every epoch, trainer, fit) and the worker loop.

The stage task (``tasks/pretrain.py``) calls :func:`train_ray` when ``workers >= 1``; each Ray
Train worker runs :func:`ray_train_loop`, which feeds its dataset split to
:func:`brivl.train.train` and records where it started (``ray_workers.jsonl``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.pretrain import latest_step, train_rows


# -- driver -------------------------------------------------------------------------------------
def train_ray(cfg: Any, shard_dir: str, checkpoints: Path, init: Path, work: Path) -> dict[str, Any]:
    """Fit ``cfg.workers`` Ray Train workers on the shards; the summary of the last checkpoint."""
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
        files, cfg, train_rows(shard_dir),
        lambda some: ray.data.read_parquet(some, columns=["key", "image", "caption"],
                                           num_cpus=cfg.data_cpus),
    ).map_batches(
        decode_augment_batch, batch_format="numpy", batch_size=cfg.batch_size,
        num_cpus=cfg.data_cpus,
        fn_kwargs={"image_size": image_size, "augment": cfg.augment if cfg.augment.enabled else None},
    )
    fit_id = uuid.uuid4().hex
    loop_config = {"config": cfg.to_dict(), "checkpoint_dir": str(checkpoints),
                   "init_checkpoint": str(init), "samples_per_epoch": train_rows(shard_dir),
                   "fit_id": fit_id}
    trainer = TorchTrainer(
        ray_train_loop,
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
              "pid": os.getpid(), "start_step": latest_step(Path(loop_config["checkpoint_dir"])),
              "time": time.time()}
    with open(Path(loop_config["checkpoint_dir"]) / WORKERS_LOG, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _epochs_dataset(files: list[str], cfg: Any, n_train: int, read: Callable[[list[str]], Any]) -> Any:
    """Every epoch the run needs as one dataset (a union; file order reshuffled per epoch).

    One long stream: workers never wait for a new epoch's pipeline to start. (Listing the
    same file twice in one read does not work: the reader drops the repeat.)
    """
    import numpy as np

    total = cfg.total_steps(n_train, cfg.workers) * cfg.global_batch(cfg.workers)
    epochs = total // max(1, n_train) + 2  # + the partial epoch and batches dropped at the end
    parts = []
    for epoch in range(epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        if cfg.resampled:  # files drawn with replacement (OpenCLIP's --dataset-resampled)
            parts += [read(group) for group in _without_repeats(
                [files[i] for i in rng.integers(0, len(files), size=len(files))])]
            continue
        order = rng.permutation(len(files)) if cfg.shuffle else range(len(files))
        parts.append(read([files[i] for i in order]))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _without_repeats(draws: list[str]) -> list[list[str]]:
    """``draws`` cut into consecutive groups without a repeated file (one read each)."""
    groups: list[list[str]] = [[]]
    for name in draws:
        if name in groups[-1]:
            groups.append([])
        groups[-1].append(name)
    return groups


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


def ray_train_loop(loop_config: dict) -> None:
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


