"""``brivl pretrain``: train a BriVL model on a shard directory (cached, resumable stage)."""

from __future__ import annotations

import argparse
import json

HELP = "pretrain a BriVL model on the shards (local process or Ray Train workers; resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="shard stage directory (train/, val/)")
    parser.add_argument("--config", default="brivl-tiny",
                        help="model name from the registry (brivl-tiny, brivl-lite, ...)")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per worker per step")
    parser.add_argument("--workers", type=int, default=0,
                        help="Ray Train workers (0: train in this process without Ray)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker, nccl, bf16")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--queue-size", type=int, help="override the model's queue size")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="any other TrainConfig field, e.g. --set warmup_steps=50")
    parser.add_argument("--out", help="output directory (default: $BRIVL_HOME/data/pretrain/<key>)")


def build_config(args: argparse.Namespace) -> dict:
    """The stage config dict from the command-line arguments."""
    from brivl.train import PretrainConfig

    values: dict = {"model": args.config, "steps": args.steps, "batch_size": args.batch_size,
                    "workers": args.workers, "use_gpu": args.gpu}
    if args.lr is not None:
        values["lr"] = args.lr
    if args.checkpoint_every is not None:
        values["checkpoint_every"] = args.checkpoint_every
    if args.queue_size is not None:
        values["model_overrides"] = {"queue_size": args.queue_size}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=JSON, e.g. warmup_steps=50")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return PretrainConfig.from_dict(values).to_dict()


def run(args: argparse.Namespace) -> int:
    from tasks.pretrain import pretrain_task, print_summary

    try:
        config = build_config(args)
    except ValueError as exc:
        raise SystemExit(f"brivl pretrain: {exc}") from exc
    result = pretrain_task(args.shards, config, args.out)
    print_summary(result)
    print(result["checkpoint"])
    return 0
