"""Training checkpoints: the model's own format plus optimizer, step and RNG state, no pickle.

A training checkpoint is a directory ``<root>/step-00000100`` that is a complete model
checkpoint (:func:`brivl.model.save_checkpoint`, so ``load_checkpoint`` reads it) and also
holds:

    optimizer.safetensors   every optimizer state tensor, keyed ``state.<param>.<name>``
    optimizer.json          param groups and non-tensor state (JSON)
    rng-rank<r>.safetensors torch / numpy / python / CUDA RNG state of worker r (uint8/int64)
    trainer.json            step, batches consumed, samples seen, config, RNG scalars (last)

It is written into ``<root>/.tmp-step-...`` and renamed into place, so a killed run leaves
either a whole checkpoint or none; only the newest ``keep`` are kept. The learning-rate and
momentum schedules are pure functions of the step, so the step is the scheduler state.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from brivl.model import is_checkpoint, load_checkpoint, save_checkpoint

TRAINER_STATE = "trainer.json"
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete training checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and _STEP_DIR.match(p.name) and (p / TRAINER_STATE).is_file()
        and is_checkpoint(p)
    ]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: str | Path | None) -> Path | None:
    """The newest complete training checkpoint under ``root`` (None when there is none)."""
    if root is None:
        return None
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``trainer.json`` of a training checkpoint."""
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text())


# -- optimizer state without pickle ------------------------------------------------------------
def optimizer_to_safetensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, values in sd["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, json.loads(json.dumps(meta))


def optimizer_from_safetensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                               meta: dict) -> None:
    """Load what :func:`optimizer_to_safetensors` wrote into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- RNG state without pickle --------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch, CUDA, numpy and Python RNG state as tensors plus JSON scalars."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    tensors["python.state"] = torch.tensor(internal, dtype=torch.int64)
    scalars = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "gauss_next": gauss_next},
    }
    return tensors, scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k].to(torch.uint8) for k in cuda])
    np_s = scalars["numpy"]
    np.random.set_state((np_s["kind"], tensors["numpy.keys"].numpy().astype(np.uint32), np_s["pos"],
                         np_s["has_gauss"], np_s["cached"]))
    py = scalars["python"]
    random.setstate((py["version"], tuple(int(v) for v in tensors["python.state"].tolist()),
                     py["gauss_next"]))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# -- whole checkpoints ---------------------------------------------------------------------------
def save_training_checkpoint(root: str | Path, step: int, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any],
                             keep: int = 2) -> Path:
    """Write a training checkpoint atomically (every worker calls this; rank 0 writes the model).

    With a process group, every worker writes its RNG state into the shared directory and
    rank 0 renames it into place; ``root`` must therefore be visible to all workers.
    """
    root = Path(root)
    rank, world = _rank_world()
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{final.name}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier(world)
    rng_tensors, rng_scalars = rng_state()
    save_file(rng_tensors, str(tmp / f"rng-rank{rank}.safetensors"))
    (tmp / f"rng-rank{rank}.json").write_text(json.dumps(rng_scalars))
    if rank == 0:
        save_checkpoint(model, tmp)
        opt_tensors, opt_meta = optimizer_to_safetensors(optimizer)
        save_file(opt_tensors, str(tmp / OPTIMIZER_TENSORS))
        (tmp / OPTIMIZER_JSON).write_text(json.dumps(opt_meta))
    _barrier(world)
    if rank == 0:
        body = dict(trainer_state, step=step, world_size=world)
        (tmp / TRAINER_STATE).write_text(json.dumps(body, indent=2, sort_keys=True, default=str))
        if final.exists():  # a rerun reached the same step again: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(world)
    return final


def load_training_checkpoint(checkpoint: str | Path, optimizer_factory: Any | None = None,
                             map_location: str | torch.device = "cpu",
                             restore_rng: bool = True) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Rebuild ``(model, optimizer, trainer_state)`` and restore this worker's RNG state.

    ``optimizer_factory(model) -> optimizer`` builds the optimizer before its state is loaded.
    A worker whose rank has no saved RNG state (the worker count changed) keeps its RNGs.
    """
    checkpoint = Path(checkpoint)
    model = load_checkpoint(checkpoint, map_location=map_location)
    optimizer = None
    if optimizer_factory is not None:
        optimizer = optimizer_factory(model)
        optimizer_from_safetensors(
            optimizer, load_file(str(checkpoint / OPTIMIZER_TENSORS), device=str(map_location)),
            json.loads((checkpoint / OPTIMIZER_JSON).read_text()),
        )
    state = read_trainer_state(checkpoint)
    rank, _ = _rank_world()
    rng_file = checkpoint / f"rng-rank{rank}.safetensors"
    if restore_rng and rng_file.is_file():
        set_rng_state(load_file(str(rng_file)),
                      json.loads((checkpoint / f"rng-rank{rank}.json").read_text()))
    return model, optimizer, state


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
