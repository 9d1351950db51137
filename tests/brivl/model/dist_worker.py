"""One worker of the 2-process equivalence test (run by test_distributed.py, not by pytest).

Loads the checkpoint, takes its slice of the global batch, runs one training step, averages
loss and gradients over workers as DDP would, and (rank 0) writes what it saw.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from brivl.model import load_checkpoint


def step(args: argparse.Namespace, in_batch: bool) -> dict[str, torch.Tensor]:
    model = load_checkpoint(args.ckpt)
    model.config.in_batch_negatives = in_batch
    data = load_file(args.data)
    n = data["pixels"].shape[0] // args.world
    part = slice(args.rank * n, (args.rank + 1) * n)
    out = model(
        data["pixels"][part], data["input_ids"][part], data["attention_mask"][part], momentum=0.9
    )
    out["loss"].backward()
    result = {}
    for key in ("loss", "loss_i2t", "loss_t2i"):
        value = out[key].detach().clone()
        dist.all_reduce(value)
        result[key] = value / args.world
    for name, p in model.named_parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            result[f"grad.{name}"] = p.grad / args.world
    for key, value in model.state_dict().items():
        if "queue" in key or "_m." in key:
            result[f"state.{key}"] = value.clone()
    return {f"{'inbatch' if in_batch else 'plain'}.{k}": v for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("rank", "world", "port"):
        parser.add_argument(f"--{name}", type=int, required=True)
    for name in ("ckpt", "data", "out"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank, world_size=args.world
    )
    try:
        result = {**step(args, in_batch=False), **step(args, in_batch=True)}
        if args.rank == 0:
            save_file({k: v.contiguous() for k, v in result.items()}, args.out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
