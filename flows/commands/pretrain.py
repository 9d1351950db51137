"""``brivl pretrain``: train a BriVL model on a shard directory (cached, resumable stage)."""

from __future__ import annotations

import argparse
import json

from brivl.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_STEPS
from flows.commands import checked

ORCHESTRATED = "served"  # a Prefect task only with a server configured (tasks.standalone)
HELP = "pretrain a BriVL model on the shards (local process or Ray Train workers; resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="shard stage directory (train/, val/)")
    parser.add_argument("--model", "--model-config", dest="model",
                        help=f"model name from the registry (default {DEFAULT_MODEL}; also "
                        "brivl-lite, brivl-paper) or a model config JSON file")
    parser.add_argument("--config", metavar="JSON",
                        help="JSON file of PretrainConfig fields (the flags override it)")
    parser.add_argument("--steps", type=int, help=f"optimiser steps (default {DEFAULT_STEPS})")
    parser.add_argument("--batch-size", type=int,
                        help=f"pairs per worker per step (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--workers", type=int,
                        help="Ray Train workers (default 0: train in this process without Ray)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker, nccl, bf16")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--queue-size", type=int, help="override the model's queue size")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="any other PretrainConfig field, e.g. --set warmup_steps=50")
    parser.add_argument("--out", help="output directory (default: $BRIVL_HOME/data/pretrain/<key>)")


def build_config(args: argparse.Namespace) -> dict:
    """The stage config dict: ``--config``, then the flags given, then ``--set``; checked."""
    from brivl.config_parse import ConfigError, read_json_config
    from brivl.train import PretrainConfig

    values: dict = read_json_config(_config_file(args.config)) if args.config else {}
    flags = {"model": args.model, "steps": args.steps, "batch_size": args.batch_size,
             "workers": args.workers, "lr": args.lr, "checkpoint_every": args.checkpoint_every}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.gpu:
        values["use_gpu"] = True
    if args.queue_size is not None:
        values["model_overrides"] = {**values.get("model_overrides", {}),
                                     "queue_size": args.queue_size}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=JSON, e.g. warmup_steps=50")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return PretrainConfig.from_dict(values).to_dict()


def _config_file(value: str) -> str:
    """``--config`` names an overrides file; a model name there gets a pointer to ``--model``."""
    from pathlib import Path

    from brivl.config_parse import ConfigError
    from brivl.model.config import list_models

    if not Path(value).exists() and value in list_models():
        raise ConfigError(f"--config {value}: --config names a JSON file of PretrainConfig "
                          f"fields; for the model give --model {value}")
    return value


def check(args: argparse.Namespace) -> dict:
    """The normalised pretrain config, model and overrides included (before any setup)."""
    return build_config(args)


def run(args: argparse.Namespace) -> int:
    from tasks.pretrain import pretrain_task, print_summary
    from tasks.standalone import call_stage

    config = checked(args, check)
    result = call_stage(pretrain_task, args.shards, config, args.out)
    print_summary(result)
    print(result["checkpoint"])
    return 0
