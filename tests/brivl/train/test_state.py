from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from brivl.model import load_checkpoint
from brivl.train import TrainConfig, latest_checkpoint, list_checkpoints, make_optimizer
from brivl.train.state import (
    load_training_checkpoint,
    optimizer_from_safetensors,
    optimizer_to_safetensors,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> float:
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return float(loss.detach())


def test_optimizer_state_round_trips_without_pickle() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    x = torch.randn(16, 4)
    for _ in range(3):
        _step(model, opt, x)
    tensors, meta = optimizer_to_safetensors(opt)
    json.dumps(meta)  # JSON, no pickle
    assert all(torch.is_tensor(t) for t in tensors.values()) and "state.0.exp_avg" in tensors
    clone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(clone.parameters(), lr=0.5)
    optimizer_from_safetensors(opt2, tensors, meta)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95) and opt2.param_groups[0]["lr"] == 0.01
    assert _step(model, opt, x) == _step(clone, opt2, x)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rng_state_round_trips_for_torch_numpy_and_python() -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    tensors, scalars = rng_state()
    json.dumps(scalars)
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    set_rng_state(tensors, scalars)
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]


def test_checkpoints_are_whole_model_checkpoints_and_only_the_last_k_are_kept(
        tmp_path: Path, tiny_model) -> None:
    opt = make_optimizer(tiny_model, TrainConfig())
    root = tmp_path / "ckpt"
    (root / ".tmp-step-00000009").mkdir(parents=True)  # debris of a killed writer
    (root / "step-00000007").mkdir()  # a directory without its trainer.json: incomplete
    for step in (1, 2, 3):
        save_training_checkpoint(root, step, tiny_model, opt, {"batches_consumed": step}, keep=2)
    assert [p.name for p in list_checkpoints(root)] == ["step-00000002", "step-00000003"]
    assert latest_checkpoint(root).name == "step-00000003"
    reloaded = load_checkpoint(latest_checkpoint(root))  # the model loader reads it as-is
    for (k, a), b in zip(tiny_model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    model, opt2, state = load_training_checkpoint(latest_checkpoint(root),
                                                  lambda m: make_optimizer(m, TrainConfig()))
    assert state["step"] == 3 and state["batches_consumed"] == 3 and opt2 is not None
    assert not any(p.suffix == ".pkl" or p.suffix == ".pt" for p in root.rglob("*"))
